"""AMQP 1.0 frames and the composite types they carry (performatives, termini, outcomes).

Each composite is a frozen dataclass whose fields are in wire order; `Annotated` metadata
names the AMQP type a field is sent as, so server code can write `Flow(handle=3, ...)` with plain
ints and still put a `uint` on the wire. `from_fields()` accepts lists with trailing fields
omitted (as the spec allows) and turns nested composites (a source inside an attach, an
outcome inside a disposition) into their classes.
"""

from __future__ import annotations

import dataclasses
import struct
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Any, ClassVar, TypeVar

from .codec import (
    AMQPDecodeError,
    Array,
    Described,
    Symbol,
    Timestamp,
    UByte,
    UInt,
    ULong,
    UShort,
    decode_value,
    encode_into,
)

AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
SASL_HEADER = b"AMQP\x03\x01\x00\x00"
AMQP_FRAME = 0
SASL_FRAME = 1
MIN_MAX_FRAME_SIZE = 512

_FRAME_HEADER = struct.Struct(">IBBH")


def _symbols(value: Any) -> Any:
    if value is None or isinstance(value, Array):
        return value
    if isinstance(value, str):
        return Symbol(value)
    return Array(tuple(Symbol(item) for item in value), element=Symbol)


def _symbol_keys(value: Any) -> Any:
    if value is None:
        return None
    return {Symbol(key) if isinstance(key, str) else key: item for key, item in value.items()}


# Wire types of composite fields, as `Annotated` metadata the encoder applies.
OptUByte = Annotated[int | None, UByte]
OptUShort = Annotated[int | None, UShort]
OptUInt = Annotated[int | None, UInt]
OptULong = Annotated[int | None, ULong]
OptSymbol = Annotated[str | None, Symbol]
Symbols = Annotated[Any, _symbols]  # one symbol or an array of them
Fields = Annotated[dict[str, Any] | None, _symbol_keys]  # a map keyed by symbols

C = TypeVar("C", bound="Composite")
_REGISTRY: dict[int, type[Composite]] = {}


@dataclasses.dataclass(frozen=True)
class Composite:
    """A described list with a numeric descriptor and named, typed fields."""

    CODE: ClassVar[int]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.CODE] = cls

    def to_described(self) -> Described:
        # Every field, trailing nulls included: the spec lets them be dropped, but SDKs
        # before 7.15 index the decoded list without padding it back.
        kinds = _wire_kinds(type(self))
        values = [_to_wire(getattr(self, f.name), kinds[f.name]) for f in dataclasses.fields(self)]
        return Described(ULong(self.CODE), values)

    @classmethod
    def from_fields(cls: type[C], values: list[Any]) -> C:
        names = [f.name for f in dataclasses.fields(cls)]
        given = {name: interpret(value) for name, value in zip(names, values, strict=False)}
        return cls(**{name: value for name, value in given.items() if value is not None})


_WIRE_KINDS: dict[type[Composite], dict[str, Callable[[Any], Any] | None]] = {}


def _wire_kinds(cls: type[Composite]) -> dict[str, Callable[[Any], Any] | None]:
    """Each field's `Annotated` converter; resolved once per class, on first use."""
    if cls not in _WIRE_KINDS:
        hints = typing.get_type_hints(cls, include_extras=True)
        _WIRE_KINDS[cls] = {
            f.name: getattr(hints[f.name], "__metadata__", (None,))[0]
            for f in dataclasses.fields(cls)
        }
    return _WIRE_KINDS[cls]


def _to_wire(value: Any, kind: Callable[[Any], Any] | None) -> Any:
    if value is None:
        return None
    if isinstance(value, Composite):
        return value.to_described()
    return kind(value) if kind is not None else value


def interpret(value: Any) -> Any:
    """Turn a decoded described list with a known descriptor into its composite class."""
    if isinstance(value, Described) and isinstance(value.descriptor, int):
        cls = _REGISTRY.get(value.descriptor)
        if cls is not None and isinstance(value.value, list):
            return cls.from_fields(value.value)
    return value


# ---------------------------------------------------------------- errors, termini, outcomes


@dataclasses.dataclass(frozen=True)
class Error(Composite):
    CODE = 0x1D
    condition: Annotated[str, Symbol] = "amqp:internal-error"
    description: str | None = None
    info: Fields = None


@dataclasses.dataclass(frozen=True)
class Source(Composite):
    CODE = 0x28
    address: str | None = None
    durable: OptUInt = None
    expiry_policy: OptSymbol = None
    timeout: OptUInt = None
    dynamic: bool | None = None
    dynamic_node_properties: Fields = None
    distribution_mode: OptSymbol = None
    filter: Fields = None
    default_outcome: Any = None
    outcomes: Symbols = None
    capabilities: Symbols = None


@dataclasses.dataclass(frozen=True)
class Target(Composite):
    CODE = 0x29
    address: str | None = None
    durable: OptUInt = None
    expiry_policy: OptSymbol = None
    timeout: OptUInt = None
    dynamic: bool | None = None
    dynamic_node_properties: Fields = None
    capabilities: Symbols = None


@dataclasses.dataclass(frozen=True)
class Received(Composite):
    CODE = 0x23
    section_number: OptUInt = None
    section_offset: OptULong = None


@dataclasses.dataclass(frozen=True)
class Accepted(Composite):
    CODE = 0x24


@dataclasses.dataclass(frozen=True)
class Rejected(Composite):
    CODE = 0x25
    error: Error | None = None


@dataclasses.dataclass(frozen=True)
class Released(Composite):
    CODE = 0x26


@dataclasses.dataclass(frozen=True)
class Modified(Composite):
    CODE = 0x27
    delivery_failed: bool | None = None
    undeliverable_here: bool | None = None
    message_annotations: Fields = None


# ------------------------------------------------------------------------- performatives


@dataclasses.dataclass(frozen=True)
class Open(Composite):
    CODE = 0x10
    container_id: str = ""
    hostname: str | None = None
    max_frame_size: OptUInt = None
    channel_max: OptUShort = None
    idle_timeout: OptUInt = None
    outgoing_locales: Symbols = None
    incoming_locales: Symbols = None
    offered_capabilities: Symbols = None
    desired_capabilities: Symbols = None
    properties: Fields = None


@dataclasses.dataclass(frozen=True)
class Begin(Composite):
    CODE = 0x11
    remote_channel: OptUShort = None
    next_outgoing_id: Annotated[int, UInt] = 0
    incoming_window: Annotated[int, UInt] = 0
    outgoing_window: Annotated[int, UInt] = 0
    handle_max: OptUInt = None
    offered_capabilities: Symbols = None
    desired_capabilities: Symbols = None
    properties: Fields = None


@dataclasses.dataclass(frozen=True)
class Attach(Composite):
    CODE = 0x12
    name: str = ""
    handle: Annotated[int, UInt] = 0
    role: bool = False  # False: sender, True: receiver
    snd_settle_mode: OptUByte = None  # 0 unsettled, 1 settled, 2 mixed
    rcv_settle_mode: OptUByte = None  # 0 first, 1 second
    source: Source | None = None
    target: Target | None = None
    unsettled: dict[Any, Any] | None = None
    incomplete_unsettled: bool | None = None
    initial_delivery_count: OptUInt = None
    max_message_size: OptULong = None
    offered_capabilities: Symbols = None
    desired_capabilities: Symbols = None
    properties: Fields = None


@dataclasses.dataclass(frozen=True)
class Flow(Composite):
    CODE = 0x13
    next_incoming_id: OptUInt = None
    incoming_window: Annotated[int, UInt] = 0
    next_outgoing_id: Annotated[int, UInt] = 0
    outgoing_window: Annotated[int, UInt] = 0
    handle: OptUInt = None
    delivery_count: OptUInt = None
    link_credit: OptUInt = None
    available: OptUInt = None
    drain: bool | None = None
    echo: bool | None = None
    properties: Fields = None


@dataclasses.dataclass(frozen=True)
class Transfer(Composite):
    CODE = 0x14
    handle: Annotated[int, UInt] = 0
    delivery_id: OptUInt = None
    delivery_tag: Annotated[bytes | None, bytes] = None
    message_format: OptUInt = None
    settled: bool | None = None
    more: bool | None = None
    rcv_settle_mode: OptUByte = None
    state: Any = None
    resume: bool | None = None
    aborted: bool | None = None
    batchable: bool | None = None


@dataclasses.dataclass(frozen=True)
class Disposition(Composite):
    CODE = 0x15
    role: bool = False
    first: Annotated[int, UInt] = 0
    last: OptUInt = None
    settled: bool | None = None
    state: Any = None
    batchable: bool | None = None


@dataclasses.dataclass(frozen=True)
class Detach(Composite):
    CODE = 0x16
    handle: Annotated[int, UInt] = 0
    closed: bool | None = None
    error: Error | None = None


@dataclasses.dataclass(frozen=True)
class End(Composite):
    CODE = 0x17
    error: Error | None = None


@dataclasses.dataclass(frozen=True)
class Close(Composite):
    CODE = 0x18
    error: Error | None = None


@dataclasses.dataclass(frozen=True)
class SaslMechanisms(Composite):
    CODE = 0x40
    sasl_server_mechanisms: Symbols = ("ANONYMOUS",)


@dataclasses.dataclass(frozen=True)
class SaslInit(Composite):
    CODE = 0x41
    mechanism: Annotated[str, Symbol] = "ANONYMOUS"
    initial_response: Annotated[bytes | None, bytes] = None
    hostname: str | None = None


@dataclasses.dataclass(frozen=True)
class SaslOutcome(Composite):
    CODE = 0x44
    code: Annotated[int, UByte] = 0
    additional_data: Annotated[bytes | None, bytes] = None


# ---------------------------------------------------------------------------- framing


@dataclasses.dataclass(frozen=True)
class Frame:
    """One frame off the wire; `body` is None for an empty (heartbeat) frame."""

    frame_type: int
    channel: int
    body: Composite | None
    payload: bytes = b""


def encode_frame(
    channel: int,
    body: Composite | None,
    payload: bytes = b"",
    frame_type: int = AMQP_FRAME,
) -> bytes:
    """A complete frame: 8-byte header, the performative, then any transfer payload."""
    out = bytearray(_FRAME_HEADER.size)
    if body is not None:
        encode_into(out, body.to_described())
    out += payload
    _FRAME_HEADER.pack_into(out, 0, len(out), 2, frame_type, channel)
    return bytes(out)


def frame_size(header: bytes) -> int:
    """The total size announced by an 8-byte frame header."""
    size, doff, _, _ = _FRAME_HEADER.unpack(header)
    if size < 8 or doff < 2:
        raise AMQPDecodeError(f"malformed frame header (size {size}, doff {doff})")
    return int(size)


def decode_frame(data: bytes) -> Frame:
    """Decode one complete frame (header included)."""
    size, doff, frame_type, channel = _FRAME_HEADER.unpack_from(data)
    offset = doff * 4
    if offset >= size:
        return Frame(frame_type, channel, None)
    described, end = decode_value(data, offset)
    body = interpret(described)
    if not isinstance(body, Composite):
        raise AMQPDecodeError(f"unknown performative {described!r}")
    return Frame(frame_type, channel, body, bytes(data[end:size]))


def timestamp_ms(seconds: float) -> Timestamp:
    """An AMQP timestamp for a POSIX time in seconds."""
    return Timestamp(round(seconds * 1000))


def outcome_name(state: Any) -> str:
    return type(state).__name__.lower() if isinstance(state, Composite) else "none"


def names(values: Iterable[Any] | None) -> list[str]:
    """Symbols from a field that may hold one symbol, an array of them, or nothing."""
    if values is None:
        return []
    if isinstance(values, str):
        return [values]
    items = values.items if isinstance(values, Array) else values
    return [str(item) for item in items]
