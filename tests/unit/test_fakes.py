"""What is particular to the fakes in `sheaf.testing`, beyond the contracts they share.

The shared behaviour is judged by the backend-parametrised contract suites; here: the
fakes copy state in and out like a database would, time can be injected, and the
recording bus can simulate an outage.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sheaf.adapters.bus_none import NoMessageBus
from sheaf.domain.models import (
    AcquireOutcome,
    Chunk,
    Completion,
    Dispatch,
    EmbeddedChunk,
    Lease,
    NewDocument,
    Status,
)
from sheaf.errors import StoreUnavailable, TransientError
from sheaf.testing import InMemoryBlobStore, InMemoryDocumentStore, RecordingMessageBus

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 5, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def new_document(max_attempts: int = 3) -> NewDocument:
    return NewDocument(
        id=str(uuid.uuid4()),
        collection="docs",
        filename="a.txt",
        content_type="text/plain",
        size_bytes=5,
        sha256=uuid.uuid4().hex * 2,
        blob_key="2026/11/05/" + uuid.uuid4().hex,
        max_attempts=max_attempts,
    )


async def leased(store: InMemoryDocumentStore, lease_seconds: float = 60) -> Lease:
    doc, _ = await store.create_document(new_document())
    result = await store.acquire_document_lease(doc.id, "worker-1", lease_seconds)
    assert result.lease is not None
    return result.lease


def completion(stage_seconds: dict[str, float]) -> Completion:
    return Completion(
        page_count=1,
        chunk_count=1,
        stage_seconds=stage_seconds,
        embedding_model="lexical",
        embedding_dimensions=2,
    )


async def test_the_store_keeps_its_own_copy_of_what_it_is_given() -> None:
    store = InMemoryDocumentStore()
    lease = await leased(store)
    vector = [1.0, 0.0]
    chunk = EmbeddedChunk(Chunk(0, "hello", 1, 1), vector, "lexical")  # type: ignore[arg-type]
    stage_seconds = {"extract": 1.5}
    await store.write_chunks(lease, [chunk])
    await store.complete(lease, completion(stage_seconds))

    vector[:] = [0.0, 1.0]
    stage_seconds["extract"] = 99.0

    doc = await store.get_document(lease.document_id)
    assert doc is not None
    assert doc.history[0].stage_seconds == {"extract": 1.5}
    [hit] = await store.search("docs", [1.0, 0.0], "lexical", 5)
    assert hit.score == pytest.approx(1.0)


async def test_what_the_store_returns_cannot_change_it() -> None:
    store = InMemoryDocumentStore()
    lease = await leased(store)
    await store.complete(lease, completion({"extract": 1.5}))
    doc = await store.get_document(lease.document_id)
    assert doc is not None

    doc.history[0].stage_seconds["extract"] = 99.0
    (await store.stats()).counts["completed"] = 99

    again = await store.get_document(lease.document_id)
    assert again is not None
    assert again.history[0].stage_seconds == {"extract": 1.5}
    assert (await store.stats()).counts["completed"] == 1


async def test_an_injected_clock_expires_leases_without_sleeping() -> None:
    clock = FakeClock()
    store = InMemoryDocumentStore(clock=clock)
    lease = await leased(store, lease_seconds=30)
    await store.renew_document_lease(lease.document_id, lease.token, 30, "embed")

    clock.advance(29)
    assert await store.find_expired_leases(10) == []
    clock.advance(2)
    [dispatch] = await store.find_expired_leases(10)

    assert dispatch.status == Status.QUEUED
    assert dispatch.dispatch_seq == lease.dispatch_seq + 1
    doc = await store.get_document(lease.document_id)
    assert doc is not None
    assert doc.last_error == (
        "worker worker-1 stopped renewing its lease during stage embed (attempt 1 of 3)"
    )
    again = await store.acquire_document_lease(lease.document_id, "worker-2", 30)
    assert again.outcome == AcquireOutcome.ACQUIRED


async def test_a_closed_store_is_not_ready() -> None:
    store = InMemoryDocumentStore()
    await store.ping()

    await store.close()

    with pytest.raises(StoreUnavailable):
        await store.ping()


async def test_recording_bus_keeps_what_it_was_sent() -> None:
    bus = RecordingMessageBus()
    batch = [Dispatch("d1", "docs", 1), Dispatch("d2", "docs", 4)]

    await bus.send(batch)
    batch.clear()

    assert bus.enabled is True
    assert bus.sent == [Dispatch("d1", "docs", 1), Dispatch("d2", "docs", 4)]


async def test_recording_bus_simulates_an_outage_of_n_sends() -> None:
    bus = RecordingMessageBus()
    bus.fail_next(2)

    for _ in range(2):
        with pytest.raises(TransientError):
            await bus.send([Dispatch("d1", "docs", 1)])
    await bus.send([Dispatch("d1", "docs", 2)])

    assert bus.sent == [Dispatch("d1", "docs", 2)]
    await bus.close()
    assert bus.closed


async def test_no_message_bus_means_polling() -> None:
    bus = NoMessageBus()

    await bus.send([Dispatch("d1", "docs", 1)])
    await bus.close()

    assert bus.enabled is False


async def test_blob_store_keeps_its_own_copy_of_the_bytes(tmp_path: Path) -> None:
    blobs = InMemoryBlobStore()
    buffer = bytearray(b"original")

    async def upload() -> AsyncIterator[bytes]:
        yield buffer  # a reused read buffer, as a streaming HTTP reader may hand over

    await blobs.put("k", upload())
    buffer[:] = b"tampered"

    await blobs.download("k", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"original"
