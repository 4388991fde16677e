"""The settlement table (ARCHITECTURE.md §4), one test per row, on the in-memory fakes.

Each test puts a real wake-up on an `InMemoryQueue` (the fake held to the Service Bus
contract), runs one delivery through `settlement.consume` with the real `process_document`
on the fake store, and asserts what became of the message and of the row.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sheaf.domain.models import (
    AcquireResult,
    AttemptResult,
    Dispatch,
    Document,
    ErrorInfo,
    ErrorKind,
    Lease,
    Page,
    ReleaseOutcome,
    Status,
)
from sheaf.errors import PermanentError, TransientError
from sheaf.ports import Delivery, Receiver
from sheaf.services import settlement
from sheaf.services.deps import Deps
from sheaf.services.ingest import accept_upload
from sheaf.services.processing import process_document
from sheaf.services.settlement import Action
from sheaf.testing import InMemoryQueue
from tests.unit.conftest import make_deps

pytestmark = pytest.mark.unit

TEXT = " ".join(f"word{i % 50} topic{i % 7}" for i in range(200)).encode()
EMPTY = {"active": 0, "scheduled": 0, "locked": 0, "dead_letter": 0}


@dataclasses.dataclass
class Bench:
    """A worker's view: deps whose bus is the in-memory queue, and an open receiver."""

    deps: Deps
    queue: InMemoryQueue
    receiver: Receiver

    async def upload(self, data: bytes = TEXT) -> Document:
        async def body() -> AsyncIterator[bytes]:
            yield data

        return (await accept_upload(self.deps, "c", "f.txt", body())).document

    async def next(self) -> Delivery:
        [delivery] = await self.receiver.receive(1, 1.0)
        return delivery

    async def consume(self, delivery: Delivery | None = None) -> settlement.Settle:
        deps = self.deps

        async def acquire(wake: Dispatch) -> AcquireResult:
            return await deps.store.acquire_document_lease(wake.document_id, "w1", 30.0)

        async def process(lease: Lease) -> AttemptResult:
            return await process_document(deps, lease)

        delivery = delivery or await self.next()
        return await settlement.consume(deps, delivery, acquire, process)

    async def row(self, document_id: str) -> Document:
        found = await self.deps.store.get_document(document_id, history=False)
        assert found is not None
        return found


MakeBench = Callable[..., Awaitable[Bench]]


@pytest.fixture
async def bench() -> AsyncIterator[MakeBench]:
    async with contextlib.AsyncExitStack() as stack:

        async def make(
            lock_seconds: float = 5.0,
            renew: float = 30.0,
            settings: dict[str, Any] | None = None,
            **changes: Any,
        ) -> Bench:
            # Duplicate detection off: some tests re-send a message on purpose.
            queue = InMemoryQueue(lock_seconds=lock_seconds, duplicate_window_seconds=0.0)
            base = make_deps(**(settings or {}))
            deps = dataclasses.replace(base, bus=queue, queue=queue, **changes)
            receiver = await stack.enter_async_context(queue.deliveries(0, renew))
            return Bench(deps, queue, receiver)

        yield make


class FailingExtractor:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def extract(self, path: Path, content_type: str) -> list[Page]:
        raise self.error


class SlowEmbedder:
    """The lexical embedder, `delay` seconds per call; `None` waits for ever."""

    def __init__(self, deps: Deps, delay: float | None) -> None:
        self.inner = deps.embedder
        self.delay = delay
        self.model = deps.embedder.model
        self.dimensions = deps.embedder.dimensions

    async def embed(self, texts: Any) -> list[tuple[float, ...]]:
        if self.delay is None:
            await asyncio.Event().wait()
        await asyncio.sleep(self.delay or 0)
        return await self.inner.embed(texts)

    async def close(self) -> None:
        pass


async def test_a_processed_document_completes_its_message(bench: MakeBench) -> None:
    b = await bench()
    doc = await b.upload()
    assert await b.consume() == settlement.COMPLETE
    assert (await b.row(doc.id)).status is Status.COMPLETED
    assert b.queue.counts() == EMPTY


@pytest.mark.parametrize("state", [Status.COMPLETED, Status.FAILED, Status.DELETED])
async def test_a_wake_up_for_a_terminal_document_is_completed(
    bench: MakeBench, state: Status
) -> None:
    b = await bench()
    doc = await b.upload()
    assert await (await b.next()).complete()
    [lease] = await b.deps.store.claim_queued_documents("w", 30.0, 1)
    if state is Status.COMPLETED:
        await process_document(b.deps, lease)
    else:
        error = ErrorInfo("bad", "bad", ErrorKind.PERMANENT)
        await b.deps.store.release_document_lease(
            doc.id, lease.token, ReleaseOutcome.PERMANENT, error
        )
    if state is Status.DELETED:
        await b.deps.store.delete_document(doc.id)
    assert (await b.row(doc.id)).status is state
    await b.queue.send([Dispatch(doc.id, "c", (await b.row(doc.id)).dispatch_seq)])
    assert await b.consume() == settlement.COMPLETE
    assert b.queue.counts() == EMPTY


async def test_a_wake_up_for_a_held_document_is_completed(bench: MakeBench) -> None:
    b = await bench()
    doc = await b.upload()
    held = await b.deps.store.acquire_document_lease(doc.id, "other", 30.0)
    assert held.lease is not None
    assert await b.consume() == settlement.COMPLETE
    assert b.queue.counts() == EMPTY
    assert (await b.row(doc.id)).attempts == 1  # the other worker's attempt only


async def test_an_unknown_document_is_dead_lettered(bench: MakeBench) -> None:
    b = await bench()
    await b.queue.send([Dispatch("no-such-document", "c", 1)])
    decision = await b.consume()
    assert (decision.action, decision.reason) == (Action.DEAD_LETTER, "unknown_document")
    [letter] = await b.queue.peek_dead_letters(10)
    assert letter.reason == "unknown_document"
    assert "no document no-such-document exists" in (letter.description or "")


async def test_a_malformed_body_is_dead_lettered(bench: MakeBench) -> None:
    b = await bench()
    b.queue.put_raw(b'{"document_id": "d"}', "m1")
    decision = await b.consume()
    assert (decision.action, decision.reason) == (Action.DEAD_LETTER, "malformed_message")
    [letter] = await b.queue.peek_dead_letters(10)
    assert letter.reason == "malformed_message"
    assert "lacks collection, dispatch_seq" in (letter.description or "")


async def retry_later(b: Bench, doc: Document) -> Document:
    """Fail one attempt transiently: queued again, not before a minute from now."""
    acquired = await b.deps.store.acquire_document_lease(doc.id, "w", 30.0)
    assert acquired.lease is not None
    error = ErrorInfo("flaky", "flaky", ErrorKind.TRANSIENT)
    await b.deps.store.release_document_lease(
        doc.id, acquired.lease.token, ReleaseOutcome.TRANSIENT, error, retry_delay=60.0
    )
    return await b.row(doc.id)


async def test_a_current_wake_up_before_its_time_is_scheduled_for_then(bench: MakeBench) -> None:
    b = await bench()
    doc = await b.upload()
    assert await (await b.next()).complete()
    current = await retry_later(b, doc)
    await b.queue.send([Dispatch(doc.id, "c", current.dispatch_seq)])
    decision = await b.consume()
    assert decision.action is Action.COMPLETE
    later = Dispatch(doc.id, "c", current.dispatch_seq, not_before=current.not_before)
    assert decision.wake_later == later
    assert b.queue.counts() == {**EMPTY, "scheduled": 1}
    assert b.queue.sent[-1] == later


async def test_a_stale_wake_up_before_its_time_is_only_completed(bench: MakeBench) -> None:
    b = await bench()
    doc = await b.upload()
    assert await (await b.next()).complete()
    current = await retry_later(b, doc)
    await b.queue.send([Dispatch(doc.id, "c", current.dispatch_seq - 1)])
    assert await b.consume() == settlement.COMPLETE
    assert b.queue.counts() == EMPTY


async def test_a_transient_failure_schedules_the_retry(bench: MakeBench) -> None:
    b = await bench(extractor=FailingExtractor(TransientError("flaky")))
    doc = await b.upload()
    decision = await b.consume()
    after = await b.row(doc.id)
    assert (after.status, after.attempts) == (Status.QUEUED, 1)
    assert decision.action is Action.COMPLETE
    assert decision.wake_later == Dispatch(
        doc.id, "c", after.dispatch_seq, not_before=after.not_before
    )
    assert b.queue.counts() == {**EMPTY, "scheduled": 1}


async def test_a_permanent_failure_is_dead_lettered_with_what_to_do(bench: MakeBench) -> None:
    error = PermanentError("the PDF is encrypted", code="encrypted")
    b = await bench(extractor=FailingExtractor(error))
    doc = await b.upload()
    decision = await b.consume()
    assert (await b.row(doc.id)).status is Status.FAILED
    assert (decision.action, decision.reason) == (Action.DEAD_LETTER, "encrypted")
    [letter] = await b.queue.peek_dead_letters(10)
    assert letter.reason == "encrypted"
    assert "f.txt in c failed after 1 of 3 attempts: the PDF is encrypted" in (
        letter.description or ""
    )
    assert f"sheaf failed retry {doc.id}" in (letter.description or "")


async def test_a_transient_failure_of_the_last_attempt_is_dead_lettered(bench: MakeBench) -> None:
    b = await bench(settings={"max_attempts": 1}, extractor=FailingExtractor(TransientError("x")))
    doc = await b.upload()
    decision = await b.consume()
    assert (await b.row(doc.id)).status is Status.FAILED
    assert (decision.action, decision.reason) == (Action.DEAD_LETTER, "transient_error")
    assert b.queue.counts() == {**EMPTY, "dead_letter": 1}


async def test_shutting_down_mid_document_abandons_the_message(bench: MakeBench) -> None:
    b = await bench()
    b.deps = dataclasses.replace(b.deps, embedder=SlowEmbedder(b.deps, None))
    doc = await b.upload()
    task = asyncio.create_task(b.consume())
    while (await b.row(doc.id)).status is not Status.PROCESSING:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    after = await b.row(doc.id)
    assert (after.status, after.attempts) == (Status.QUEUED, 0)  # interrupted: not spent
    again = await b.next()  # abandoned: back at once, not after its lock
    assert again.delivery_count == 1


async def test_a_lost_message_lock_changes_nothing_and_the_redelivery_is_stale(
    bench: MakeBench,
) -> None:
    b = await bench(lock_seconds=0.2, renew=0.0)
    b.deps = dataclasses.replace(b.deps, embedder=SlowEmbedder(b.deps, 0.3))
    doc = await b.upload()
    first = await b.next()
    assert await b.consume(first) == settlement.COMPLETE  # the lock lapsed meanwhile
    assert (await b.row(doc.id)).status is Status.COMPLETED
    again = await b.next()
    assert again.delivery_count == 1
    assert await b.consume(again) == settlement.COMPLETE  # terminal: nothing to do
    assert (await b.row(doc.id)).attempts == 1
    assert b.queue.counts() == EMPTY
