"""The queue contract (`WorkQueue` in `sheaf.ports`), judged on Service Bus and the fake.

Each test uses the port only, so `InMemoryQueue` is held to exactly what the Service Bus
adapter does over the emulator with the unmodified SDK: peek-lock deliveries, settlement,
a lock that lapses unless renewed (and that the queue renews by itself until settled),
delivery counts, the dead-letter sub-queue, scheduled messages and duplicate detection.
Locks are one second long so that expiry is waited for with short sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from sheaf.adapters.bus_servicebus import ServiceBusMessageBus
from sheaf.domain.messages import decode
from sheaf.domain.models import Dispatch
from sheaf.ports import DeadLetter, Delivery, WorkQueue
from sheaf.testing import InMemoryQueue
from tests.servicebus_fixtures import ServiceBusEmulator

pytestmark = pytest.mark.integration

LOCK = 1.0  # seconds a delivery stays locked without renewal
MAX_DELIVERIES = 3
NO_RENEWAL = 0.0


@pytest.fixture(params=["memory", "servicebus"])
async def queue(
    request: pytest.FixtureRequest, servicebus_emulator: ServiceBusEmulator
) -> AsyncIterator[WorkQueue]:
    opened: WorkQueue
    if request.param == "memory":
        opened = InMemoryQueue(lock_seconds=LOCK, max_delivery_count=MAX_DELIVERIES)
    else:
        name = servicebus_emulator.add_queue(
            "contract",
            lock_duration=LOCK,
            max_delivery_count=MAX_DELIVERIES,
            duplicate_detection_window=600.0,
        )
        opened = ServiceBusMessageBus.from_connection_string(
            servicebus_emulator.connection_string, name
        )
    yield opened
    await opened.close()


async def receive_all(
    queue: WorkQueue, count: int, wait: float = 2.0, renew_for: float = NO_RENEWAL
) -> list[Delivery]:
    """Receive until `count` deliveries arrived or `wait` seconds passed."""
    got: list[Delivery] = []
    async with queue.deliveries(prefetch=0, lock_renewal_seconds=renew_for) as receiver:
        deadline = asyncio.get_running_loop().time() + wait
        while len(got) < count:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            got.extend(await receiver.receive(count - len(got), min(left, 1.0)))
    return got


async def drain(queue: WorkQueue, wait: float) -> list[str]:
    """Receive and complete everything that arrives within `wait` seconds; the message ids."""
    ids: list[str] = []
    async with queue.deliveries(prefetch=0, lock_renewal_seconds=NO_RENEWAL) as receiver:
        deadline = asyncio.get_running_loop().time() + wait
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            for delivery in await receiver.receive(10, min(left, 0.5)):
                assert await delivery.complete()
                ids.append(delivery.message_id)
    return sorted(ids)


async def test_a_sent_dispatch_arrives_once_and_complete_removes_it(queue: WorkQueue) -> None:
    await queue.send([Dispatch("d1", "audit", 1), Dispatch("d2", "audit", 4)])
    async with queue.deliveries(prefetch=0, lock_renewal_seconds=NO_RENEWAL) as receiver:
        got = await receiver.receive(10, 2.0)
        if len(got) < 2:
            got += await receiver.receive(10, 2.0)
        assert sorted(d.message_id for d in got) == ["d1:1", "d2:4"]
        assert sorted((decode(d.body) for d in got), key=lambda w: w.document_id) == [
            Dispatch("d1", "audit", 1),
            Dispatch("d2", "audit", 4),
        ]
        assert [d.delivery_count for d in got] == [0, 0]
        assert [await d.complete() for d in got] == [True, True]
        assert await receiver.receive(10, 0.5) == []


async def test_duplicates_are_dropped_but_a_recovery_is_delivered(queue: WorkQueue) -> None:
    await queue.send([Dispatch("d1", "c", 1)])
    await queue.send([Dispatch("d1", "c", 1)])  # the same send twice: a true duplicate
    await queue.send([Dispatch("d1", "c", 2)])  # a recovery bumped dispatch_seq
    assert await drain(queue, 2.0) == ["d1:1", "d1:2"]


async def test_a_future_dispatch_is_scheduled_for_its_time(queue: WorkQueue) -> None:
    at = datetime.now(UTC) + timedelta(seconds=2)
    await queue.send([Dispatch("d1", "c", 2, not_before=at)])
    assert await receive_all(queue, 1, wait=0.5) == []
    [delivery] = await receive_all(queue, 1, wait=4.0)
    assert datetime.now(UTC) >= at
    assert decode(delivery.body) == Dispatch("d1", "c", 2)


async def test_abandon_gives_the_message_back_with_one_more_delivery(queue: WorkQueue) -> None:
    await queue.send([Dispatch("d1", "c", 1)])
    async with queue.deliveries(prefetch=0, lock_renewal_seconds=NO_RENEWAL) as receiver:
        [first] = await receiver.receive(1, 2.0)
        assert await first.abandon()
        [again] = await receiver.receive(1, 2.0)
        assert (again.message_id, again.delivery_count) == ("d1:1", 1)
        assert await again.complete()


async def test_a_lapsed_lock_redelivers_and_the_late_settlement_fails_harmlessly(
    queue: WorkQueue,
) -> None:
    await queue.send([Dispatch("d1", "c", 1)])
    async with queue.deliveries(prefetch=0, lock_renewal_seconds=NO_RENEWAL) as receiver:
        [first] = await receiver.receive(1, 2.0)
        await asyncio.sleep(LOCK + 0.5)
        [again] = await receiver.receive(1, 2.0)
        assert (again.message_id, again.delivery_count) == ("d1:1", 1)
        assert await first.complete() is False  # no exception: the row is the truth
        assert await again.complete()


async def test_the_queue_renews_the_lock_until_the_delivery_is_settled(queue: WorkQueue) -> None:
    await queue.send([Dispatch("d1", "c", 1)])
    async with queue.deliveries(prefetch=0, lock_renewal_seconds=30.0) as receiver:
        [held] = await receiver.receive(1, 2.0)
        await asyncio.sleep(LOCK * 2.5)  # lapsed twice over without renewal
        assert await receiver.receive(1, 0.3) == []
        assert await held.complete()


async def test_renewal_stops_at_its_limit(queue: WorkQueue) -> None:
    await queue.send([Dispatch("d1", "c", 1)])
    async with queue.deliveries(prefetch=0, lock_renewal_seconds=LOCK * 1.5) as receiver:
        [held] = await receiver.receive(1, 2.0)
        await asyncio.sleep(LOCK * 3.5)
        [again] = await receiver.receive(1, 2.0)
        assert again.delivery_count == 1
        assert await held.complete() is False


async def test_dead_letters_keep_reason_and_description_until_taken(queue: WorkQueue) -> None:
    await queue.send([Dispatch("d1", "c", 1), Dispatch("d2", "c", 1)])
    async with queue.deliveries(prefetch=0, lock_renewal_seconds=NO_RENEWAL) as receiver:
        got = await receiver.receive(2, 2.0)
        got += await receiver.receive(2 - len(got), 2.0) if len(got) < 2 else []
        for delivery in got:
            assert await delivery.dead_letter("encrypted", f"{delivery.message_id} is encrypted")
        assert await receiver.receive(1, 0.5) == []
    letters = await queue.peek_dead_letters(10)
    assert [(d.message_id, d.reason, d.description) for d in letters] == [
        ("d1:1", "encrypted", "d1:1 is encrypted"),
        ("d2:1", "encrypted", "d2:1 is encrypted"),
    ]
    assert [
        d.sequence_number for d in await queue.peek_dead_letters(10, letters[1].sequence_number)
    ] == [letters[1].sequence_number]

    async def take_d1_only(letter: DeadLetter) -> bool:
        return letter.message_id == "d1:1"

    await queue.take_dead_letters(take_d1_only, enough=lambda: False, limit=10, max_wait=0.5)
    assert [d.message_id for d in await queue.peek_dead_letters(10)] == ["d2:1"]


async def test_a_delivery_cannot_be_settled_once_its_receiver_closed(queue: WorkQueue) -> None:
    await queue.send([Dispatch("d1", "c", 1)])
    [delivery] = await receive_all(queue, 1)
    assert await delivery.complete() is False
    await asyncio.sleep(LOCK + 0.5)
    [again] = await receive_all(queue, 1)  # still there: its lock lapsed
    assert again.delivery_count == 1


async def test_too_many_failed_deliveries_dead_letter_the_message(queue: WorkQueue) -> None:
    await queue.send([Dispatch("d1", "c", 1)])
    async with queue.deliveries(prefetch=0, lock_renewal_seconds=NO_RENEWAL) as receiver:
        for _ in range(MAX_DELIVERIES):
            [delivery] = await receiver.receive(1, 2.0)
            assert await delivery.abandon()
        assert await receiver.receive(1, 0.5) == []
    [letter] = await queue.peek_dead_letters(10)
    assert (letter.message_id, letter.reason) == ("d1:1", "MaxDeliveryCountExceeded")


async def test_waiting_names_the_documents_with_a_wake_up_in_the_queue(queue: WorkQueue) -> None:
    later = datetime.now(UTC) + timedelta(seconds=60)
    await queue.send([Dispatch("d1", "c", 1), Dispatch("d2", "c", 1, not_before=later)])
    await queue.send([Dispatch("d3", "c", 1)])
    async with queue.deliveries(prefetch=0, lock_renewal_seconds=30.0) as receiver:
        [locked] = await receiver.receive(1, 2.0)  # d1: locked, still in the queue
        assert locked.message_id == "d1:1"
        assert await queue.waiting(10) == {"d1", "d2", "d3"}  # ready, scheduled, locked
        assert await queue.waiting(2) is None  # more than it may look at
        assert await locked.complete()
    assert await queue.waiting(10) == {"d2", "d3"}
