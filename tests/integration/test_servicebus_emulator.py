"""The unmodified azure-servicebus SDK (aio and sync) against the in-process emulator.

No mocks: every test drives the real SDK over loopback AMQP, so these tests are also the
proof that the emulator speaks what the SDK needs. Queues with short lock durations keep
the timing tests to a second or two.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
import threading
import time
from collections.abc import AsyncIterator

import pytest
from azure.servicebus import (
    AutoLockRenewer,
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus import __version__ as SDK_VERSION
from azure.servicebus.aio import AutoLockRenewer as AsyncAutoLockRenewer
from azure.servicebus.aio import ServiceBusClient as AsyncServiceBusClient
from azure.servicebus.aio import ServiceBusReceiver as AsyncServiceBusReceiver
from azure.servicebus.exceptions import (
    MessageLockLostError,
    MessagingEntityNotFoundError,
    ServiceBusError,
)

from tests.servicebus_emulator import QueueConfig, ThreadedEmulator
from tests.servicebus_fixtures import ServiceBusEmulator, servicebus_emulator  # noqa: F401

pytestmark = pytest.mark.integration

WAIT = 1.0  # max_wait_time for receives that expect a message
# azure-servicebus 7.15 began waiting for the service to confirm each settlement, and
# releasing prefetched messages when a receiver closes; earlier versions do neither.
SDK_7_15 = tuple(int(part) for part in SDK_VERSION.split(".")[:2]) >= (7, 15)


@pytest.fixture
async def client(
    servicebus_emulator: ServiceBusEmulator,  # noqa: F811
) -> AsyncIterator[AsyncServiceBusClient]:
    async with AsyncServiceBusClient.from_connection_string(
        servicebus_emulator.connection_string, retry_total=0
    ) as sb_client:
        yield sb_client


async def receive(receiver: AsyncServiceBusReceiver, count: int = 1, wait: float = WAIT) -> list:
    """Receive until `count` messages arrived or `wait` passed without one."""
    messages: list = []
    while len(messages) < count:
        batch = await receiver.receive_messages(
            max_message_count=count - len(messages), max_wait_time=wait
        )
        if not batch:
            break
        messages.extend(batch)
    return messages


async def test_round_trip_keeps_body_and_application_properties(
    client: AsyncServiceBusClient,
    servicebus_emulator: ServiceBusEmulator,  # noqa: F811
) -> None:
    queue = servicebus_emulator.queue_name
    async with client.get_queue_sender(queue) as sender:
        await sender.send_messages(
            ServiceBusMessage(
                '{"document_id": "d1"}',
                message_id="d1:1",
                content_type="application/json",
                application_properties={"kind": "wake-up", "dispatch_seq": 1},
            )
        )
    before = datetime.datetime.now(datetime.UTC)
    async with client.get_queue_receiver(queue) as receiver:
        [message] = await receive(receiver)
        assert str(message) == '{"document_id": "d1"}'
        assert message.message_id == "d1:1"
        assert message.content_type == "application/json"
        assert message.application_properties == {b"kind": b"wake-up", b"dispatch_seq": 1}
        assert message.delivery_count == 0
        assert message.sequence_number == 1
        assert message.enqueued_time_utc is not None
        assert message.locked_until_utc is not None
        assert message.locked_until_utc > before + datetime.timedelta(seconds=25)
        assert servicebus_emulator.counts(queue)["locked"] == 1
        await receiver.complete_message(message)
    assert servicebus_emulator.counts(queue) == {
        "active": 0,
        "scheduled": 0,
        "deferred": 0,
        "locked": 0,
        "dead_letter": 0,
    }


async def test_batch_send_delivers_each_message_in_order(
    client: AsyncServiceBusClient,
    servicebus_emulator: ServiceBusEmulator,  # noqa: F811
) -> None:
    queue = servicebus_emulator.queue_name
    async with client.get_queue_sender(queue) as sender:
        batch = await sender.create_message_batch()
        for index in range(3):
            batch.add_message(ServiceBusMessage(f"m{index}", message_id=f"batch-{index}"))
        await sender.send_messages(batch)
        await sender.send_messages([ServiceBusMessage("m3"), ServiceBusMessage("m4")])
        await sender.send_messages(ServiceBusMessage("L" * 200_000))  # spans several frames
    async with client.get_queue_receiver(queue, prefetch_count=10) as receiver:
        messages = await receive(receiver, count=6)
        assert [str(m) for m in messages[:5]] == ["m0", "m1", "m2", "m3", "m4"]
        assert str(messages[5]) == "L" * 200_000
        assert [m.sequence_number for m in messages] == [1, 2, 3, 4, 5, 6]
        for message in messages:
            await receiver.complete_message(message)
    assert servicebus_emulator.counts(queue)["active"] == 0


async def test_abandon_redelivers_with_delivery_count_one_and_defer_parks(
    client: AsyncServiceBusClient,
    servicebus_emulator: ServiceBusEmulator,  # noqa: F811
) -> None:
    queue = servicebus_emulator.queue_name
    async with client.get_queue_sender(queue) as sender:
        await sender.send_messages(ServiceBusMessage("again"))
    async with client.get_queue_receiver(queue) as receiver:
        [first] = await receive(receiver)
        await receiver.abandon_message(first)
        [second] = await receive(receiver)
        assert str(second) == "again"
        assert second.delivery_count == 1
        assert second.lock_token != first.lock_token
        await receiver.defer_message(second)
        assert await receive(receiver, wait=0.3) == []
        assert servicebus_emulator.counts(queue)["deferred"] == 1
        [deferred] = await receiver.receive_deferred_messages([second.sequence_number])
        assert str(deferred) == "again"
        await receiver.complete_message(deferred)  # settled through $management
    assert servicebus_emulator.counts(queue)["active"] == 0


async def test_lock_expiry_redelivers_with_delivery_count_plus_one(
    client: AsyncServiceBusClient,
    servicebus_emulator: ServiceBusEmulator,  # noqa: F811
) -> None:
    queue = servicebus_emulator.add_queue("short-lock", lock_duration=1.0)
    async with client.get_queue_sender(queue) as sender:
        await sender.send_messages(ServiceBusMessage("slow"))
    async with client.get_queue_receiver(queue) as receiver:
        [first] = await receive(receiver)
        assert first.delivery_count == 0
        await asyncio.sleep(1.2)
        with pytest.raises(MessageLockLostError):  # the SDK sees the expiry itself
            await receiver.complete_message(first)
        [second] = await receive(receiver)
        assert second.delivery_count == 1
        await receiver.complete_message(second)
    assert servicebus_emulator.counts(queue)["active"] == 0


async def test_settling_a_lock_the_service_lost_raises_lock_lost(
    client: AsyncServiceBusClient,
    servicebus_emulator: ServiceBusEmulator,  # noqa: F811
) -> None:
    # The client still believes in its 30 s lock, so only the emulator's rejection
    # (`com.microsoft:message-lock-lost` on the disposition) can make this fail.
    queue = servicebus_emulator.queue_name
    async with client.get_queue_sender(queue) as sender:
        await sender.send_messages(ServiceBusMessage("contested"))
    async with client.get_queue_receiver(queue) as receiver:
        [first] = await receive(receiver)
        assert servicebus_emulator.expire_locks(queue) == 1
        with pytest.raises(MessageLockLostError):
            await receiver.renew_message_lock(first)
        if SDK_7_15:
            with pytest.raises(MessageLockLostError):
                await receiver.complete_message(first)
        else:  # fire-and-forget settlement: the rejection goes unnoticed
            await receiver.complete_message(first)
        [second] = await receive(receiver)
        assert (str(second), second.delivery_count) == ("contested", 1)
        await receiver.complete_message(second)
    assert servicebus_emulator.counts(queue)["active"] == 0


async def test_max_delivery_count_moves_message_to_dead_letter_queue(
    client: AsyncServiceBusClient,
    servicebus_emulator: ServiceBusEmulator,  # noqa: F811
) -> None:
    queue = servicebus_emulator.add_queue("fragile", max_delivery_count=2)
    async with client.get_queue_sender(queue) as sender:
        await sender.send_messages(ServiceBusMessage("poison", message_id="p1"))
    async with client.get_queue_receiver(queue) as receiver:
        for _ in range(2):
            [message] = await receive(receiver)
            await receiver.abandon_message(message)
        assert await receive(receiver, wait=0.3) == []
    assert servicebus_emulator.counts(queue)["dead_letter"] == 1
    async with client.get_queue_receiver(
        queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER
    ) as dlq_receiver:
        [dead] = await receive(dlq_receiver)
        assert dead.message_id == "p1"
        assert dead.dead_letter_reason == "MaxDeliveryCountExceeded"
        assert dead.dead_letter_source == queue
        assert dead.delivery_count == 2
        await dlq_receiver.complete_message(dead)
    assert servicebus_emulator.counts(queue)["dead_letter"] == 0


async def test_explicit_dead_letter_keeps_reason_and_description(
    client: AsyncServiceBusClient,
    servicebus_emulator: ServiceBusEmulator,  # noqa: F811
) -> None:
    queue = servicebus_emulator.queue_name
    async with client.get_queue_sender(queue) as sender:
        await sender.send_messages(ServiceBusMessage("bad", application_properties={"a": 1}))
    async with client.get_queue_receiver(queue) as receiver:
        [message] = await receive(receiver)
        await receiver.dead_letter_message(
            message, reason="unknown_document", error_description="no row d9"
        )
    async with client.get_queue_receiver(
        queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER
    ) as dlq_receiver:
        [dead] = await receive(dlq_receiver)
        assert str(dead) == "bad"
        assert dead.dead_letter_reason == "unknown_document"
        assert dead.dead_letter_error_description == "no row d9"
        assert dead.application_properties[b"a"] == 1
        await dlq_receiver.complete_message(dead)
    assert servicebus_emulator.counts(queue)["dead_letter"] == 0


async def test_renew_message_lock_extends_the_lock_and_is_counted(
    client: AsyncServiceBusClient,
    servicebus_emulator: ServiceBusEmulator,  # noqa: F811
) -> None:
    queue = servicebus_emulator.add_queue("renewed", lock_duration=1.0)
    async with client.get_queue_sender(queue) as sender:
        await sender.send_messages(ServiceBusMessage("keep"))
    async with client.get_queue_receiver(queue) as receiver:
        [message] = await receive(receiver)
        first_until = message.locked_until_utc
        await asyncio.sleep(0.6)
        renewed_until = await receiver.renew_message_lock(message)
        assert renewed_until > first_until
        assert message.locked_until_utc == renewed_until
        await asyncio.sleep(0.6)  # past the first lock, inside the renewed one
        await receiver.complete_message(message)
    assert servicebus_emulator.renew_lock_count(queue) == 1
    assert servicebus_emulator.counts(queue)["active"] == 0


async def test_auto_lock_renewer_keeps_message_locked_past_lock_duration(
    client: AsyncServiceBusClient,
    servicebus_emulator: ServiceBusEmulator,  # noqa: F811
) -> None:
    # The SDK's renewer looks every second, so the lock must outlast that gap.
    queue = servicebus_emulator.add_queue("auto-renewed", lock_duration=1.5)
    async with client.get_queue_sender(queue) as sender:
        await sender.send_messages(ServiceBusMessage("long job"))
    renewer = AsyncAutoLockRenewer(max_lock_renewal_duration=10, on_lock_renew_failure=None)
    try:
        async with client.get_queue_receiver(queue) as receiver:
            [message] = await receive(receiver)
            renewer.register(receiver, message)
            await asyncio.sleep(2.0)  # past the lock duration: only renewals keep it
            assert message.locked_until_utc > datetime.datetime.now(datetime.UTC)
            await receiver.complete_message(message)
    finally:
        await renewer.close()
    assert servicebus_emulator.renew_lock_count(queue) >= 1
    assert servicebus_emulator.counts(queue)["active"] == 0  # the completion held


async def test_peek_does_not_lock(
    client: AsyncServiceBusClient,
    servicebus_emulator: ServiceBusEmulator,  # noqa: F811
) -> None:
    queue = servicebus_emulator.queue_name
    async with client.get_queue_sender(queue) as sender:
        await sender.send_messages([ServiceBusMessage("one"), ServiceBusMessage("two")])
    async with client.get_queue_receiver(queue) as receiver:
        peeked = await receiver.peek_messages(max_message_count=5)
        assert [str(m) for m in peeked] == ["one", "two"]
        assert [m.sequence_number for m in peeked] == [1, 2]
        from_second = await receiver.peek_messages(max_message_count=5, sequence_number=2)
        assert [str(m) for m in from_second] == ["two"]
        assert await receiver.peek_messages(max_message_count=5, sequence_number=3) == []
        assert servicebus_emulator.counts(queue)["locked"] == 0
        messages = await receive(receiver, count=2)
        assert [(str(m), m.delivery_count) for m in messages] == [("one", 0), ("two", 0)]
        for message in messages:
            await receiver.complete_message(message)


async def test_scheduled_message_arrives_at_its_time_and_can_be_cancelled(
    client: AsyncServiceBusClient,
    servicebus_emulator: ServiceBusEmulator,  # noqa: F811
) -> None:
    queue = servicebus_emulator.queue_name
    async with (
        client.get_queue_sender(queue) as sender,
        client.get_queue_receiver(queue) as receiver,
    ):
        far = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5)
        [cancelled] = await sender.schedule_messages(ServiceBusMessage("never"), far)
        await sender.cancel_scheduled_messages(cancelled)
        # Far enough ahead that a loaded machine cannot reach it during the first receive.
        at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=3)
        [kept] = await sender.schedule_messages(ServiceBusMessage("later"), at)
        assert kept != cancelled
        assert servicebus_emulator.counts(queue)["scheduled"] == 1
        assert await receive(receiver, wait=0.5) == []
        messages = await receive(receiver, wait=5.0)
        received_at = datetime.datetime.now(datetime.UTC)
        assert [str(m) for m in messages] == ["later"]
        assert received_at >= at
        assert messages[0].sequence_number == kept
        assert messages[0].scheduled_enqueue_time_utc is not None
        await receiver.complete_message(messages[0])
        assert await receive(receiver, wait=0.3) == []


async def test_duplicate_detection_drops_a_repeated_message_id(
    client: AsyncServiceBusClient,
    servicebus_emulator: ServiceBusEmulator,  # noqa: F811
) -> None:
    queue = servicebus_emulator.queue_name
    async with client.get_queue_sender(queue) as sender:
        await sender.send_messages(ServiceBusMessage("first", message_id="doc-1:1"))
        await sender.send_messages(ServiceBusMessage("duplicate", message_id="doc-1:1"))
        await sender.send_messages(ServiceBusMessage("recovery", message_id="doc-1:2"))
    assert servicebus_emulator.counts(queue)["active"] == 2
    async with client.get_queue_receiver(
        queue, receive_mode=ServiceBusReceiveMode.RECEIVE_AND_DELETE
    ) as receiver:
        messages = await receive(receiver, count=3, wait=0.5)
        assert [str(m) for m in messages] == ["first", "recovery"]
    assert servicebus_emulator.counts(queue)["active"] == 0


async def test_concurrent_receivers_get_different_messages(
    client: AsyncServiceBusClient,
    servicebus_emulator: ServiceBusEmulator,  # noqa: F811
) -> None:
    queue = servicebus_emulator.queue_name
    async with client.get_queue_sender(queue) as sender:
        await sender.send_messages([ServiceBusMessage(f"m{i}") for i in range(6)])
    async with (
        client.get_queue_receiver(queue, prefetch_count=2) as first,
        client.get_queue_receiver(queue, prefetch_count=2) as second,
    ):
        got_first, got_second = await asyncio.gather(
            receive(first, count=3, wait=0.5), receive(second, count=3, wait=0.5)
        )
        bodies = [str(m) for m in got_first + got_second]
        assert sorted(bodies) == [f"m{i}" for i in range(6)]
        assert got_first
        assert got_second
        for receiver, messages in ((first, got_first), (second, got_second)):
            for message in messages:
                await receiver.complete_message(message)
    assert servicebus_emulator.counts(queue)["active"] == 0


@pytest.mark.skipif(not SDK_7_15, reason="SDKs before 7.15 leave prefetched messages locked")
async def test_prefetched_messages_released_on_close_keep_their_delivery_count(
    client: AsyncServiceBusClient,
    servicebus_emulator: ServiceBusEmulator,  # noqa: F811
) -> None:
    queue = servicebus_emulator.queue_name
    async with client.get_queue_sender(queue) as sender:
        await sender.send_messages([ServiceBusMessage(f"m{i}") for i in range(3)])
    async with client.get_queue_receiver(queue, prefetch_count=10) as receiver:
        [message] = await receiver.receive_messages(max_message_count=1, max_wait_time=WAIT)
        await receiver.complete_message(message)
    async with client.get_queue_receiver(queue) as receiver:
        messages = await receive(receiver, count=2)
        assert [m.delivery_count for m in messages] == [0, 0]
        for message in messages:
            await receiver.complete_message(message)


async def test_unknown_queue_raises_entity_not_found(client: AsyncServiceBusClient) -> None:
    with pytest.raises(MessagingEntityNotFoundError):
        async with client.get_queue_sender("no-such-queue") as sender:
            await sender.send_messages(ServiceBusMessage("lost"))


async def test_outage_send_fails_while_stopped_and_works_after_start(
    client: AsyncServiceBusClient,
    servicebus_emulator: ServiceBusEmulator,  # noqa: F811
) -> None:
    queue = servicebus_emulator.queue_name
    async with client.get_queue_sender(queue) as sender:
        await sender.send_messages(ServiceBusMessage("before"))
        servicebus_emulator.stop()
        with pytest.raises(ServiceBusError):
            await sender.send_messages(ServiceBusMessage("during"))
        servicebus_emulator.start()
        await sender.send_messages(ServiceBusMessage("after"))
    assert servicebus_emulator.counts(queue)["active"] == 2


def test_sync_client_round_trip_dead_letter_and_auto_renew(
    servicebus_emulator: ServiceBusEmulator,  # noqa: F811
) -> None:
    # The sync renewer looks every 0.5 s, so a 1 s lock is enough.
    queue = servicebus_emulator.add_queue("sync", lock_duration=1.0)
    with ServiceBusClient.from_connection_string(servicebus_emulator.connection_string) as client:
        with client.get_queue_sender(queue) as sender:
            sender.send_messages(
                [ServiceBusMessage("ok", application_properties={"n": 1}), ServiceBusMessage("x")]
            )
        renewer = AutoLockRenewer(max_lock_renewal_duration=10)
        with client.get_queue_receiver(queue, max_wait_time=WAIT) as receiver:
            ok, bad = receiver.receive_messages(max_message_count=2, max_wait_time=WAIT)
            assert (str(ok), ok.application_properties) == ("ok", {b"n": 1})
            renewer.register(receiver, ok)
            receiver.dead_letter_message(bad, reason="malformed_message", error_description="x")
            time.sleep(1.4)
            receiver.complete_message(ok)
            renewer.close()
        with client.get_queue_receiver(
            queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER, max_wait_time=WAIT
        ) as dlq_receiver:
            [dead] = dlq_receiver.receive_messages(max_message_count=1)
            assert dead.dead_letter_reason == "malformed_message"
            dlq_receiver.complete_message(dead)
    assert servicebus_emulator.counts(queue) == {
        "active": 0,
        "scheduled": 0,
        "deferred": 0,
        "locked": 0,
        "dead_letter": 0,
    }
    assert servicebus_emulator.renew_lock_count(queue) >= 1


def test_closing_leaves_no_thread_or_socket_behind() -> None:
    emulator = ThreadedEmulator([QueueConfig("q")])
    port = emulator.port
    emulator.stop()
    emulator.start()
    assert emulator.port == port
    emulator.close()
    assert not [t for t in threading.enumerate() if t.name == "servicebus-emulator"]
    with socket.socket() as probe:  # the port is free again
        probe.bind(("127.0.0.1", port))
