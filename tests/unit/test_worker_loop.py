"""The worker's one loop with a queue: wake-ups, the circuit breaker, and the fall-back to
polling, on the in-memory fakes (the queue held to the Service Bus contract)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sheaf.domain.models import Document, Status
from sheaf.errors import StoreUnavailable
from sheaf.services.deps import Deps
from sheaf.services.ingest import accept_upload
from sheaf.testing import InMemoryQueue
from tests.unit.conftest import make_deps
from worker.runner import Worker

pytestmark = pytest.mark.unit

TEXT = " ".join(f"word{i % 50} topic{i % 7}" for i in range(200)).encode()
EMPTY = {"active": 0, "scheduled": 0, "locked": 0, "dead_letter": 0}


def queued(**settings: Any) -> tuple[Deps, InMemoryQueue]:
    queue = InMemoryQueue(lock_seconds=1.0)
    base = make_deps(safety_poll_seconds=0, **settings)
    return dataclasses.replace(base, bus=queue, queue=queue), queue


async def upload(deps: Deps, n: int = 0) -> Document:
    async def body() -> AsyncIterator[bytes]:
        yield TEXT + str(n).encode()

    return (await accept_upload(deps, "c", f"f{n}.txt", body())).document


async def status(deps: Deps, document_id: str) -> Document:
    found = await deps.store.get_document(document_id, history=False)
    assert found is not None
    return found


async def until_completed(deps: Deps, ids: list[str]) -> None:
    for document_id in ids:
        while (await status(deps, document_id)).status is not Status.COMPLETED:
            await asyncio.sleep(0.02)


async def test_wake_ups_are_processed_and_settled() -> None:
    deps, queue = queued(concurrency=2)
    ids = [(await upload(deps, n)).id for n in range(3)]
    stop = asyncio.Event()
    run = asyncio.create_task(Worker(deps).run(stop))
    await asyncio.wait_for(until_completed(deps, ids), 5)
    stop.set()
    await run
    assert queue.counts() == EMPTY


class FlakyStore:
    """The fake store; while `down`, acquiring and pinging fail as an outage would."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down = False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name not in ("acquire_document_lease", "ping"):
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise StoreUnavailable("database unreachable (simulated outage)")
            return await attribute(*args, **kwargs)

        return call


async def test_a_database_outage_keeps_the_message_locked_and_spends_nothing() -> None:
    deps, queue = queued(concurrency=1)
    store = FlakyStore(deps.store)
    deps = dataclasses.replace(deps, store=store)
    doc = await upload(deps)
    store.down = True
    stop = asyncio.Event()
    worker = Worker(deps)
    run = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(1.5)  # longer than the message lock: the queue renews it
    assert queue.counts() == {**EMPTY, "locked": 1}  # never abandoned, never redelivered
    assert not worker.dependencies_up.is_set()
    assert (await status(deps, doc.id)).attempts == 0
    store.down = False
    await asyncio.wait_for(until_completed(deps, [doc.id]), 5)
    stop.set()
    await run
    assert worker.dependencies_up.is_set()
    assert queue.counts() == EMPTY
    assert (await status(deps, doc.id)).attempts == 1


async def test_an_unreachable_queue_degrades_to_polling() -> None:
    deps, queue = queued(servicebus_retry_seconds=0.2)
    queue.down = True
    doc = await upload(deps)  # its wake-up is lost: the send fails
    stop = asyncio.Event()
    run = asyncio.create_task(Worker(deps).run(stop))
    await asyncio.wait_for(until_completed(deps, [doc.id]), 5)
    queue.down = False
    await asyncio.sleep(0.5)  # the worker reconnects to the queue
    later = await upload(deps, 1)
    await asyncio.wait_for(until_completed(deps, [later.id]), 5)
    stop.set()
    await run
    assert queue.counts() == EMPTY  # and the second wake-up was received and settled
