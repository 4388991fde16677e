"""The Service Bus emulator's pure parts: the AMQP codec, message rewriting, the broker.

Codec: every type round-trips with its type, and the bytes agree with the SDK's own (its
internal encoder and decoder serve as an oracle, no I/O): what the emulator sends must
decode in the SDK, and what the SDK sends must decode in the emulator.

Broker: queue semantics on a hand-driven clock, so lock expiry and scheduling need no sleep.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from azure.servicebus._pyamqp import _decode as sdk_decode
from azure.servicebus._pyamqp import _encode as sdk_encode
from azure.servicebus._pyamqp import performatives as sdk_performatives
from azure.servicebus._pyamqp.message import BatchMessage as SdkBatchMessage
from azure.servicebus._pyamqp.message import Header as SdkHeader
from azure.servicebus._pyamqp.message import Message as SdkMessage
from azure.servicebus._pyamqp.message import Properties as SdkProperties

from tests.servicebus_emulator.broker import (
    Broker,
    EntityNotFound,
    LockLost,
    MessageNotFound,
    QueueConfig,
    StoredMessage,
)
from tests.servicebus_emulator.codec import (
    AMQPDecodeError,
    Array,
    Byte,
    Char,
    Described,
    Float,
    Int,
    Long,
    Short,
    Symbol,
    Timestamp,
    UByte,
    UInt,
    ULong,
    UShort,
    decode,
    decode_value,
    encode,
)
from tests.servicebus_emulator.frames import (
    Accepted,
    Attach,
    Disposition,
    Error,
    Flow,
    Modified,
    Open,
    Rejected,
    Source,
    Target,
    Transfer,
    decode_frame,
    encode_frame,
)
from tests.servicebus_emulator.message import Message, split_batch

pytestmark = pytest.mark.unit

TOKEN = uuid.UUID("6f1c7d4e-2b1a-4c3d-9e8f-0a1b2c3d4e5f")

ROUND_TRIP_VALUES: list[Any] = [
    None,
    True,
    False,
    UByte(0),
    UByte(255),
    UShort(65535),
    UInt(0),
    UInt(200),
    UInt(2**32 - 1),
    ULong(0),
    ULong(7),
    ULong(2**64 - 1),
    Byte(-128),
    Short(-32768),
    Int(-5),
    Int(2**31 - 1),
    Long(-1),
    Long(-(2**63)),
    Float(1.5),
    -2.25,
    Char("é"),
    Timestamp(1_700_000_000_123),
    Timestamp(-1),
    TOKEN,
    b"",
    b"\x00\xff" * 10,
    b"x" * 300,
    "",
    "héllo",
    "y" * 300,
    Symbol("com.microsoft:dead-letter"),
    Symbol("s" * 300),
    [],
    [UInt(1), "two", None, [Symbol("nested")]],
    list(range(300)),
    {},
    {Symbol("x-opt-sequence-number"): Long(42), "plain": {"inner": b"bytes"}},
    {f"k{i}": i for i in range(100)},
    Described(ULong(0x77), "amqp-value"),
    Described(Symbol("com.microsoft:session-filter"), None),
    Array((), element=Symbol),
    Array((Symbol("ANONYMOUS"), Symbol("PLAIN"))),
    Array((TOKEN, uuid.UUID(int=1))),
    Array((Timestamp(1), Timestamp(2))),
    Array((Long(1), Long(-2))),
    Array((UInt(1), UInt(70000))),
    Array(("a", "bé")),
    Array((b"a", b"")),
    Array((True, False)),
    Array((Float(0.5),)),
    Array((Described(Symbol("d"), "x"), Described(Symbol("d"), "y"))),
]


@pytest.mark.parametrize("value", ROUND_TRIP_VALUES, ids=repr)
def test_every_type_round_trips_with_its_type(value: Any) -> None:
    decoded = decode(encode(value))
    assert decoded == value
    assert type(decoded) is type(value)


def test_nested_values_keep_their_types() -> None:
    value = {Symbol("k"): [UInt(1), Long(1), "s", Symbol("s"), b"s"]}
    [(key, items)] = decode(encode(value)).items()
    assert type(key) is Symbol
    assert [type(item) for item in items] == [UInt, Long, str, Symbol, bytes]


def test_plain_python_values_get_sensible_amqp_types() -> None:
    assert type(decode(encode(7))) is Long
    assert type(decode(encode(1.0))) is float
    assert type(decode(encode((1, 2)))) is list
    assert decode(encode(bytearray(b"ab"))) == b"ab"


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (UInt(0), b"\x43"),
        (UInt(5), b"\x52\x05"),
        (ULong(0), b"\x44"),
        (Long(5), b"\x55\x05"),
        (Int(-1), b"\x54\xff"),
        ([], b"\x45"),
        ("ab", b"\xa1\x02ab"),
        (Symbol("ab"), b"\xa3\x02ab"),
        (True, b"\x41"),
    ],
)
def test_compact_encodings(value: Any, wire: bytes) -> None:
    assert encode(value) == wire


def test_decode_value_reports_where_the_next_value_starts() -> None:
    data = encode("first") + encode(UInt(2))
    value, offset = decode_value(data, 0)
    assert value == "first"
    assert decode_value(data, offset) == (UInt(2), len(data))


@pytest.mark.parametrize(
    "data",
    [b"", b"\xa1\x05ab", b"\xc0\x05\x02\x41", b"\x99", b"\xc1\x02\x01\x41", encode("x") + b"\x40"],
)
def test_malformed_input_raises_decode_error(data: bytes) -> None:
    with pytest.raises(AMQPDecodeError):
        decode(data)


def test_unencodable_values_raise_type_error() -> None:
    with pytest.raises(TypeError):
        encode(object())
    with pytest.raises(TypeError):
        encode(Array((object(),)))


# ------------------------------------------------------------------ agreement with the SDK


def sdk_decoded(data: bytes) -> Any:
    constructor = data[0]
    return sdk_decode._DECODE_BY_CONSTRUCTOR[constructor](memoryview(data)[1:])[1]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (UInt(70000), 70000),
        (Long(-3), -3),
        (Timestamp(1_700_000_000_123), 1_700_000_000_123),
        (TOKEN, TOKEN),
        ("text", b"text"),  # the SDK reads strings and symbols as bytes
        (Symbol("sym"), b"sym"),
        ({Symbol("expirations"): Array((Timestamp(5),))}, {b"expirations": [5]}),
        ([None, True, Float(0.5)], [None, True, 0.5]),
    ],
)
def test_the_sdk_decodes_what_the_emulator_encodes(value: Any, expected: Any) -> None:
    assert sdk_decoded(encode(value)) == expected


def test_the_emulator_decodes_sdk_frames() -> None:
    header, body = sdk_encode.encode_frame(
        sdk_performatives.FlowFrame(
            next_incoming_id=1,
            incoming_window=65536,
            next_outgoing_id=0,
            outgoing_window=65536,
            handle=2,
            delivery_count=0,
            link_credit=11,
        )
    )
    assert body is not None
    frame = decode_frame(header + b"\x00\x00" + body)
    assert frame.body == Flow(
        next_incoming_id=1,
        incoming_window=65536,
        next_outgoing_id=0,
        outgoing_window=65536,
        handle=2,
        delivery_count=0,
        link_credit=11,
    )


def test_the_sdk_decodes_emulator_performatives() -> None:
    attach = Attach(
        name="link-1",
        handle=3,
        role=False,
        snd_settle_mode=0,
        rcv_settle_mode=1,
        source=Source(address="documents"),
        target=Target(address="receiver-link"),
        initial_delivery_count=0,
        max_message_size=262144,
        properties={"com.microsoft:max-message-batch-size": Long(262144)},
    )
    frame = encode_frame(1, attach)
    code, fields = sdk_decode.decode_frame(memoryview(frame)[8:])
    assert code == 0x12
    assert fields[0] == b"link-1"
    assert fields[5][0] == b"documents"
    assert fields[9] == 0
    assert fields[13] == {b"com.microsoft:max-message-batch-size": 262144}


def test_outcomes_reach_the_sdk_in_the_shape_it_checks() -> None:
    lock_lost = Rejected(Error("com.microsoft:message-lock-lost", "gone"))
    for state, expected in [
        (Accepted(), {"accepted": []}),
        (
            Modified(delivery_failed=True, undeliverable_here=False),
            {"modified": [True, False, None]},
        ),
        (Rejected(), {"rejected": [None]}),
        (lock_lost, {"rejected": [[b"com.microsoft:message-lock-lost", b"gone", None]]}),
    ]:
        frame = encode_frame(0, Disposition(role=False, first=4, settled=True, state=state))
        _, fields = sdk_decode.decode_frame(memoryview(frame)[8:])
        assert fields[4] == expected


def test_frames_round_trip_with_payload() -> None:
    transfer = Transfer(handle=1, delivery_id=9, delivery_tag=TOKEN.bytes_le, settled=False)
    frame = decode_frame(encode_frame(2, transfer, b"payload"))
    assert (frame.channel, frame.body, frame.payload) == (2, transfer, b"payload")
    assert decode_frame(encode_frame(0, None)).body is None  # heartbeat
    opened = Open(container_id="c", max_frame_size=65536, outgoing_locales=("en-US",))
    assert decode_frame(encode_frame(0, opened)).body == Open(
        container_id="c", max_frame_size=65536, outgoing_locales=Array((Symbol("en-US"),))
    )


# ------------------------------------------------------------------ messages


def sdk_message_bytes(**fields: Any) -> bytes:
    output = bytearray()
    sdk_encode.encode_payload(output, SdkMessage(**fields))
    return bytes(output)


def test_delivery_state_rewrites_only_header_and_annotations() -> None:
    original = sdk_message_bytes(
        header=SdkHeader(durable=True),
        properties=SdkProperties(message_id="m-1", content_type="application/json"),
        application_properties={"kind": "wake-up"},
        data=[b'{"document_id": "d1"}'],
    )
    message = Message.decode(original)
    delivered = message.with_delivery_state(3, {"x-opt-sequence-number": Long(7)}).encode()
    for section in message.sections[1:]:  # properties, app properties, body: untouched bytes
        assert section.raw in delivered

    seen = sdk_decode.decode_payload(memoryview(delivered))
    assert seen.header.delivery_count == 3
    assert seen.header.durable is True
    assert seen.message_annotations == {b"x-opt-sequence-number": 7}
    assert seen.properties.message_id == b"m-1"
    assert seen.application_properties == {b"kind": b"wake-up"}
    assert seen.data == [b'{"document_id": "d1"}']


def test_dead_letter_properties_are_added_as_strings() -> None:
    message = Message.decode(sdk_message_bytes(application_properties={"a": 1}, data=[b"x"]))
    dead = message.with_application_properties({"DeadLetterReason": "r"})
    assert dead.application_properties == {"a": 1, "DeadLetterReason": "r"}
    assert type(next(iter(Message.decode(dead.encode()).application_properties))) is str


def test_batch_envelope_splits_into_its_messages() -> None:
    inner = [sdk_message_bytes(data=[f"m{i}".encode()]) for i in range(3)]
    output = bytearray()
    sdk_encode.encode_payload(output, SdkBatchMessage(data=inner))
    messages = split_batch(bytes(output))
    assert [m.body for m in messages] == [b"m0", b"m1", b"m2"]


def test_built_replies_carry_correlation_and_value() -> None:
    reply = Message.build(
        properties={"correlation_id": TOKEN},
        application_properties={"statusCode": Int(200)},
        value={"expirations": Array((Timestamp(1),))},
    )
    seen = sdk_decode.decode_payload(memoryview(reply.encode()))
    assert seen.properties.correlation_id == TOKEN
    assert seen.application_properties == {b"statusCode": 200}
    assert seen.value == {b"expirations": [1]}


# ------------------------------------------------------------------ broker semantics

BROKER_DLQ = "q/$DeadLetterQueue"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def message(body: bytes = b"x", message_id: str | None = None) -> Message:
    """A message as a sender would encode it: optional properties, one data section."""
    sections = []
    if message_id is not None:
        sections.append(Described(ULong(0x73), [message_id]))
    sections.append(Described(ULong(0x75), body))
    return Message.decode(b"".join(encode(section) for section in sections))


def lock_next(broker: Broker, address: str = "q") -> tuple[StoredMessage, uuid.UUID]:
    stored = broker.lock_next(address)
    assert stored is not None
    assert stored.lock_token is not None
    return stored, stored.lock_token


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def broker(clock: Clock) -> Broker:
    return Broker([QueueConfig("q", lock_duration=10, max_delivery_count=3)], clock=clock)


def test_queue_config_parses_the_command_line_form() -> None:
    config = QueueConfig.parse("documents:max_delivery_count=10,lock_duration=30")
    assert config == QueueConfig("documents", lock_duration=30.0, max_delivery_count=10)
    with pytest.raises(ValueError, match="unknown queue setting"):
        QueueConfig.parse("q:colour=blue")


def test_peek_lock_hides_a_message_until_its_lock_expires(broker: Broker, clock: Clock) -> None:
    broker.send("q", message(b"a"))
    locked = broker.lock_next("q")
    assert locked is not None
    assert locked.locked_until == clock.now + 10
    assert broker.lock_next("q") is None
    clock.now += 10
    again = broker.lock_next("q")
    assert again is locked
    assert again.delivery_count == 1


def test_settlement_after_expiry_is_lock_lost(broker: Broker, clock: Clock) -> None:
    broker.send("q", message())
    _, token = lock_next(broker)
    clock.now += 11
    with pytest.raises(LockLost):
        broker.complete("q", token)
    with pytest.raises(LockLost):
        broker.renew_lock("q", token)


def test_renew_lock_moves_the_expiry(broker: Broker, clock: Clock) -> None:
    broker.send("q", message())
    _, token = lock_next(broker)
    clock.now += 8
    assert broker.renew_lock("q", token) == clock.now + 10
    clock.now += 8  # past the first lock
    broker.complete("q", token)
    assert broker.counts("q")["active"] == 0


def test_release_does_not_count_a_delivery_but_abandon_does(broker: Broker) -> None:
    broker.send("q", message())
    _, first_token = lock_next(broker)
    broker.release("q", first_token)
    second, second_token = lock_next(broker)
    assert second.delivery_count == 0
    broker.abandon("q", second_token)
    assert second.delivery_count == 1


def test_max_delivery_count_dead_letters_with_reason(broker: Broker) -> None:
    broker.send("q", message(b"poison"))
    for _ in range(3):
        _, token = lock_next(broker)
        broker.abandon("q", token)
    assert broker.lock_next("q") is None
    dead = broker.lock_next(BROKER_DLQ)
    assert dead is not None
    assert dead.dead_letter_reason == "MaxDeliveryCountExceeded"
    assert dead.dead_letter_source == "q"
    rendered = dead.render()
    assert rendered.application_properties["DeadLetterReason"] == "MaxDeliveryCountExceeded"
    assert rendered.message_annotations[Symbol("x-opt-deadletter-source")] == "q"
    assert rendered.header("delivery_count") == 3


def test_explicit_dead_letter_keeps_reason_and_description(broker: Broker) -> None:
    broker.send("q", message())
    _, token = lock_next(broker)
    broker.dead_letter("q", token, "unknown_document", "no such row")
    dead = broker.take_next(BROKER_DLQ)
    assert dead is not None
    assert (dead.dead_letter_reason, dead.dead_letter_description) == (
        "unknown_document",
        "no such row",
    )
    assert broker.counts("q")["dead_letter"] == 0


def test_duplicates_are_dropped_only_within_the_window(clock: Clock) -> None:
    broker = Broker([QueueConfig("q", duplicate_detection_window=60)], clock=clock)
    assert broker.send("q", message(message_id="d1:1")) == 1
    assert broker.send("q", message(message_id="d1:1")) is None
    assert broker.send("q", message(message_id="d1:2")) == 2
    clock.now += 61
    assert broker.send("q", message(message_id="d1:1")) == 3


def test_without_a_window_every_send_is_kept(broker: Broker) -> None:
    assert broker.send("q", message(message_id="same")) == 1
    assert broker.send("q", message(message_id="same")) == 2


def test_scheduled_messages_appear_at_their_time(broker: Broker, clock: Clock) -> None:
    number = broker.schedule("q", message(b"later"), clock.now + 5)
    assert broker.lock_next("q") is None
    assert broker.next_deadline() == clock.now + 5
    assert broker.counts("q")["scheduled"] == 1
    clock.now += 5
    stored = broker.take_next("q")
    assert stored is not None
    assert stored.sequence_number == number
    annotations = stored.render().message_annotations
    assert annotations[Symbol("x-opt-scheduled-enqueue-time")] == Timestamp(1_005_000)


def test_cancelled_schedules_never_appear(broker: Broker, clock: Clock) -> None:
    number = broker.schedule("q", message(), clock.now + 5)
    broker.cancel_scheduled("q", number)
    with pytest.raises(MessageNotFound):
        broker.cancel_scheduled("q", number)
    clock.now += 6
    assert broker.take_next("q") is None


def test_peek_browses_locked_messages_without_locking(broker: Broker) -> None:
    for body in (b"a", b"b", b"c"):
        broker.send("q", message(body))
    assert broker.lock_next("q") is not None
    peeked = broker.peek("q", from_sequence_number=1, count=2)
    assert [s.message.body for s in peeked] == [b"a", b"b"]
    assert broker.counts("q")["locked"] == 1


def test_deferred_messages_come_back_only_by_sequence_number(broker: Broker) -> None:
    broker.send("q", message(b"later"))
    stored, stored_token = lock_next(broker)
    broker.defer("q", stored_token)
    assert broker.lock_next("q") is None
    [again] = broker.receive_deferred("q", [stored.sequence_number], lock=True)
    assert again.lock_token is not None
    broker.complete("q", again.lock_token)
    with pytest.raises(MessageNotFound):
        broker.receive_deferred("q", [stored.sequence_number], lock=True)


def test_forced_expiry_makes_the_service_forget_a_lock(broker: Broker) -> None:
    broker.send("q", message())
    stored, stored_token = lock_next(broker)
    assert broker.expire_locks("q") == 1
    with pytest.raises(LockLost):
        broker.complete("q", stored_token)
    assert stored.delivery_count == 1


def test_unknown_entities_are_not_found(broker: Broker) -> None:
    with pytest.raises(EntityNotFound):
        broker.send("nope", message())
    with pytest.raises(ValueError, match="exists"):
        broker.add_queue(QueueConfig("q"))
