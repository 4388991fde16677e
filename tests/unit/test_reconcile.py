"""The reconciler re-sends a lost wake-up, and only a lost one (on the in-memory fakes).

A row waiting longer than `reconcile_after_seconds` is claimed as stale; it gets a new
wake-up only when the queue holds none for it. The same rule over Service Bus and a real
database, with a backlog of hundreds: tests/integration/test_reconcile_backlog.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from sheaf.domain.models import Document
from sheaf.errors import QueueUnavailable
from sheaf.services import housekeeping
from sheaf.services.deps import Deps
from sheaf.services.ingest import accept_upload
from sheaf.testing import InMemoryQueue
from tests.unit.conftest import make_deps

pytestmark = pytest.mark.unit

AFTER = 0.05  # reconcile_after_seconds
PAST = 0.1  # sleeping this long makes every row stale


def queued(queue: InMemoryQueue | None = None) -> tuple[Deps, InMemoryQueue]:
    queue = queue or InMemoryQueue()
    deps = make_deps(reconcile_after_seconds=AFTER)
    return dataclasses.replace(deps, bus=queue, queue=queue), queue


async def upload(deps: Deps, n: int) -> Document:
    async def body() -> AsyncIterator[bytes]:
        yield f"document {n}".encode()

    return (await accept_upload(deps, "c", f"{n}.txt", body())).document


async def drop_one(queue: InMemoryQueue) -> str:
    """Take a wake-up out of the queue without processing it: a lost message."""
    async with queue.deliveries(prefetch=0, lock_renewal_seconds=0) as receiver:
        [delivery] = await receiver.receive(1, 0.5)
        assert await delivery.complete()
    return delivery.message_id.split(":")[0]


async def test_a_wake_up_still_waiting_is_not_sent_again() -> None:
    deps, queue = queued()
    for n in range(20):
        await upload(deps, n)
    for _ in range(5):  # a backlog waits through several thresholds
        await asyncio.sleep(PAST)
        assert await housekeeping.reconcile(deps) == 0
    assert len(queue.sent) == 20  # the uploads' own wake-ups, nothing more


async def test_a_lost_wake_up_is_sent_again_once() -> None:
    deps, queue = queued()
    docs = [await upload(deps, n) for n in range(3)]
    lost = await drop_one(queue)
    await asyncio.sleep(PAST)
    assert await housekeeping.reconcile(deps) == 1
    [resent] = queue.sent[3:]
    row = await deps.store.get_document(lost, history=False)
    assert row is not None
    assert (resent.document_id, resent.dispatch_seq) == (lost, row.dispatch_seq)
    assert row.dispatch_seq == 2
    assert await housekeeping.reconcile(deps) == 0  # just re-sent: not stale
    await asyncio.sleep(PAST)
    assert await housekeeping.reconcile(deps) == 0  # its new wake-up is waiting now
    assert {d.id for d in docs} == await queue.waiting(10)


class BlindQueue(InMemoryQueue):
    """A queue that can be sent to but not looked into (e.g. a sender-only identity)."""

    async def waiting(self, limit: int) -> set[str] | None:
        raise QueueUnavailable("peek not allowed (simulated)")


async def test_a_queue_that_cannot_be_looked_into_gets_every_stale_wake_up() -> None:
    deps, _ = queued(BlindQueue())
    for n in range(3):
        await upload(deps, n)
    await asyncio.sleep(PAST)
    assert await housekeeping.reconcile(deps) == 3  # as before: recovery first


async def test_a_backlog_longer_than_the_peek_limit_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(housekeeping, "PEEK_LIMIT", 2)
    deps, queue = queued()
    for n in range(3):
        await upload(deps, n)
    await drop_one(queue)
    await drop_one(queue)
    await asyncio.sleep(PAST)
    assert await housekeeping.reconcile(deps) == 2  # one waiting: the queue is short enough
    for n in range(3, 6):
        await upload(deps, n)
    await drop_one(queue)
    await asyncio.sleep(PAST)
    assert await housekeeping.reconcile(deps) == 0  # more than 2 waiting: cannot tell, none
