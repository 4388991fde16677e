"""The processing service and the worker loop, on the in-memory fakes."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from sheaf.config import Settings
from sheaf.domain.chunking import DocumentChunks
from sheaf.domain.models import (
    AcquireOutcome,
    ChunkBatch,
    Chunking,
    Document,
    Lease,
    Page,
    Status,
)
from sheaf.errors import StoreUnavailable, TransientError
from sheaf.services.deps import Deps
from sheaf.services.ingest import accept_upload
from sheaf.services.processing import process_document
from sheaf.services.streaming import chunk_batches, resident_bytes
from tests.samples import encrypt_pdf, make_pdf
from tests.unit.conftest import make_deps
from worker.runner import Worker

pytestmark = pytest.mark.unit

TEXT = " ".join(f"word{i % 50} topic{i % 7}" for i in range(200)).encode()


async def put(deps: Deps, data: bytes = TEXT, collection: str = "c") -> Document:
    async def body() -> AsyncIterator[bytes]:
        yield data

    return (await accept_upload(deps, collection, "f.txt", body())).document


async def claim(deps: Deps, worker: str = "w1") -> Lease:
    [lease] = await deps.store.claim_queued_documents(worker, deps.settings.lease_seconds, 1)
    return lease


async def doc(deps: Deps, document_id: str) -> Document:
    found = await deps.store.get_document(document_id)
    assert found is not None
    return found


class SlowEmbedder:
    """The real lexical embedder, slowed down (and optionally failing) per call."""

    def __init__(self, inner: object, delay: float, fail: Exception | None = None) -> None:
        self.inner = inner
        self.delay = delay
        self.fail = fail
        self.model = inner.model  # type: ignore[attr-defined]
        self.dimensions = inner.dimensions  # type: ignore[attr-defined]

    async def embed(self, texts: Sequence[str]) -> list[tuple[float, ...]]:
        await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return await self.inner.embed(texts)  # type: ignore[attr-defined, no-any-return]

    async def close(self) -> None:
        pass


def slowed(deps: Deps, delay: float, fail: Exception | None = None) -> Deps:
    return dataclasses.replace(deps, embedder=SlowEmbedder(deps.embedder, delay, fail))


class RenewalLog:
    """The fake store, recording the stage each renewal reports."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.stages: list[str] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def renew_document_lease(
        self, document_id: str, lease_token: str, lease_seconds: float, stage: str
    ) -> bool:
        self.stages.append(stage)
        renew = self.inner.renew_document_lease  # type: ignore[attr-defined]
        return await renew(document_id, lease_token, lease_seconds, stage)  # type: ignore[no-any-return]


def logging_renewals(deps: Deps) -> tuple[Deps, RenewalLog]:
    log = RenewalLog(deps.store)
    return dataclasses.replace(deps, store=log), log  # type: ignore[arg-type]


async def test_entering_stages_costs_no_renewal() -> None:
    """A document done within one heartbeat writes nothing but its chunks and completion."""
    deps, renewals = logging_renewals(make_deps(heartbeat_seconds=30, lease_seconds=90))
    created = await put(deps)
    assert (await process_document(deps, await claim(deps))).label == "completed"
    assert renewals.stages == []
    assert (await doc(deps, created.id)).history[0].stage == "index"  # set by the chunk write


async def test_the_heartbeat_reports_the_stage_the_document_is_in(deps: Deps) -> None:
    logged, renewals = logging_renewals(deps)
    slow = slowed(logged, delay=0.25)  # every embedding call outlasts two heartbeats
    created = await put(slow)
    assert (await process_document(slow, await claim(slow))).label == "completed"
    assert "embed" in renewals.stages
    assert set(renewals.stages) <= {"download", "extract", "chunk", "embed", "index"}
    assert (await doc(deps, created.id)).attempts == 1


async def test_a_document_is_processed_and_searchable(deps: Deps) -> None:
    pdf = make_pdf(["alpha beta gamma " * 8, "delta epsilon zeta eta theta " * 5])
    created = await put(deps, pdf)
    lease = await claim(deps)
    assert (await process_document(deps, lease)).label == "completed"
    done = await doc(deps, created.id)
    assert (done.status, done.attempts, done.page_count) == (Status.COMPLETED, 1, 2)
    assert done.history[0].stage_seconds.keys() >= {"download", "extract", "embed", "index"}
    [vector] = await deps.embedder.embed(["theta zeta epsilon"])
    [hit, *_] = await deps.store.search("c", vector, deps.embedder.model, 3)
    assert (hit.document_id, hit.page_start) == (created.id, 2)


async def test_the_heartbeat_keeps_a_slow_document_alive(deps: Deps) -> None:
    created = await put(deps)
    slow = slowed(deps, delay=0.3)  # many batches x 0.3 s is far beyond the 0.6 s lease
    lease = await claim(slow)
    assert (await process_document(slow, lease)).label == "completed"
    assert (await doc(deps, created.id)).attempts == 1


class CountingEmbedder(SlowEmbedder):
    """Counts the calls under way at once."""

    in_flight = most = calls = 0

    async def embed(self, texts: Sequence[str]) -> list[tuple[float, ...]]:
        self.calls += 1
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            return await super().embed(texts)
        finally:
            self.in_flight -= 1


async def test_the_next_batch_is_embedding_while_one_is_written() -> None:
    deps = make_deps(embed_batch_size=1)
    embedder = CountingEmbedder(deps.embedder, delay=0.02)
    deps = dataclasses.replace(deps, embedder=embedder)
    created = await put(deps)
    assert (await process_document(deps, await claim(deps))).label == "completed"

    done = await doc(deps, created.id)
    assert done.chunk_count == embedder.calls >= 3
    assert embedder.most == 2  # EMBED_AHEAD batches of the one document, never more
    [vector] = await deps.embedder.embed(["word7 topic3"])
    hits = await deps.store.search("c", vector, deps.embedder.model, 100)
    assert sorted(hit.chunk_ordinal for hit in hits) == list(range(done.chunk_count))


class PagedExtractor:
    """Pages of about 150 characters, noting when each is read."""

    def __init__(self, pages: int) -> None:
        self.pages = pages
        self.read_at: list[float] = []

    def extract(self, path: object, content_type: str) -> Iterator[Page]:
        for number in range(1, self.pages + 1):
            self.read_at.append(time.monotonic())
            yield Page(number, " ".join(f"alpha{number} beta{n}." for n in range(12)))


class TimedWrites:
    """The fake store, with slow chunk writes whose spans are noted."""

    def __init__(self, inner: Any, seconds: float) -> None:
        self.inner, self.seconds = inner, seconds
        self.spans: list[tuple[float, float]] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def write_chunks(self, lease: Lease, chunks: Sequence[Any]) -> None:
        started = time.monotonic()
        await asyncio.sleep(self.seconds)
        await self.inner.write_chunks(lease, chunks)
        self.spans.append((started, time.monotonic()))


async def test_the_next_batch_is_read_while_one_is_written() -> None:
    """Extraction and chunking of batch n+1 run while batch n is written, not after."""
    extractor = PagedExtractor(pages=20)  # more than the header filter looks ahead
    deps = make_deps(embed_batch_size=1, chunk_size=100, chunk_overlap=0)
    store = TimedWrites(deps.store, seconds=0.03)
    deps = dataclasses.replace(deps, extractor=extractor, store=store)
    created = await put(deps)
    assert (await process_document(deps, await claim(deps))).label == "completed"
    assert (await doc(deps, created.id)).chunk_count >= 6
    during = [t for t in extractor.read_at if any(a < t < b for a, b in store.spans)]
    assert len(during) >= 2  # pages after the first batches were read under writes


async def test_a_failed_batch_fails_the_attempt_and_leaves_no_embedding_running() -> None:
    deps = make_deps(embed_batch_size=1)
    failing = CountingEmbedder(deps.embedder, delay=0.02, fail=TransientError("down"))
    deps = dataclasses.replace(deps, embedder=failing)
    created = await put(deps)
    assert (await process_document(deps, await claim(deps))).label == "transient:transient_error"
    await asyncio.sleep(0.05)
    assert failing.in_flight == 0
    assert (await doc(deps, created.id)).status is Status.QUEUED


async def test_a_worker_whose_lease_was_taken_over_cannot_complete(deps: Deps) -> None:
    created = await put(deps)
    stalled = slowed(deps, 0.05)
    lease_a = await claim(deps, "a")
    # Worker A stalls without renewing: its lease expires and B takes the document over.
    await asyncio.sleep(deps.settings.lease_seconds + 0.1)
    taken = await deps.store.acquire_document_lease(created.id, "b", 30)
    assert taken.outcome is AcquireOutcome.ACQUIRED
    assert taken.lease is not None
    assert (await process_document(stalled, lease_a)).label == "lease_lost"
    assert await deps.store.document_chunks(created.id) == []
    assert (await process_document(deps, taken.lease)).label == "completed"
    final = await doc(deps, created.id)
    assert final.attempts == 2
    assert [a.outcome.value for a in final.history] == ["expired", "completed"]
    assert len(await deps.store.document_chunks(created.id)) == final.chunk_count


async def test_a_refused_renewal_stops_the_attempt_at_once(deps: Deps) -> None:
    created = await put(deps)
    slow = slowed(deps, delay=0.2)
    lease = await claim(slow)
    task = asyncio.create_task(process_document(slow, lease))
    await asyncio.sleep(0.1)
    await deps.store.delete_document(created.id)  # the tombstone clears the lease
    assert (await asyncio.wait_for(task, 2)).label == "lease_lost"
    assert (await doc(deps, created.id)).status is Status.DELETED


async def test_transient_failures_retry_then_fail(deps: Deps) -> None:
    created = await put(deps)
    broken = slowed(deps, 0, TransientError("embedding endpoint returned 503", code="embed_5xx"))
    for attempt in range(1, 4):
        await asyncio.sleep(deps.settings.retry_max_seconds + 0.05)
        lease = await claim(broken)
        assert lease.attempt == attempt
        await process_document(broken, lease)
    failed = await doc(deps, created.id)
    assert (failed.status, failed.error_code, failed.attempts) == (Status.FAILED, "embed_5xx", 3)
    assert [a.outcome.value for a in failed.history] == ["transient"] * 3


async def test_a_file_with_no_text_fails_permanently(deps: Deps) -> None:
    created = await put(deps, make_pdf(["", ""]))
    await process_document(deps, await claim(deps))
    failed = await doc(deps, created.id)
    assert (failed.status, failed.error_code, failed.attempts) == (Status.FAILED, "no_text", 1)


async def test_a_failed_document_names_the_stage_it_failed_in(deps: Deps) -> None:
    """It fails at once, before any heartbeat could report the stage: still not `queued`."""
    created = await put(deps, encrypt_pdf(make_pdf(["Secret."]), "pw"))
    await process_document(deps, await claim(deps))
    failed = await doc(deps, created.id)
    assert (failed.status, failed.error_code) == (Status.FAILED, "encrypted")
    assert failed.current_stage == "extract"
    assert [a.stage for a in failed.history] == ["extract"]


async def test_worker_claims_no_more_than_its_free_slots() -> None:
    deps = slowed(make_deps(concurrency=2), delay=0.05)
    ids = [(await put(deps, TEXT + str(n).encode())).id for n in range(5)]
    stop = asyncio.Event()
    run = asyncio.create_task(Worker(deps).run(stop))
    peak = 0
    while True:
        stats = await deps.store.stats()
        peak = max(peak, stats.counts["processing"])
        if stats.counts["completed"] == len(ids):
            break
        await asyncio.sleep(0.01)
    stop.set()
    await run
    assert peak == 2


async def test_shutdown_releases_unfinished_documents_without_spending_an_attempt() -> None:
    deps = slowed(make_deps(shutdown_grace_seconds=0.1), delay=0.5)
    created = await put(deps)
    stop = asyncio.Event()
    run = asyncio.create_task(Worker(deps).run(stop))
    while (await doc(deps, created.id)).status is not Status.PROCESSING:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(run, 3)
    released = await doc(deps, created.id)
    assert (released.status, released.attempts) == (Status.QUEUED, 0)
    assert [a.outcome.value for a in released.history] == ["interrupted"]
    assert await deps.store.document_chunks(created.id) == []


class FlakyBlobStore:
    """Delegates to a real fake; while `down`, every call fails as an outage would."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down = False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if inspect.isasyncgenfunction(attribute):  # `list`, which housekeeping iterates

            async def items(*args: Any, **kwargs: Any) -> Any:
                self._fail_if_down()
                async for item in attribute(*args, **kwargs):
                    yield item

            return items
        if not callable(attribute):
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            self._fail_if_down()
            return await attribute(*args, **kwargs)

        return call

    def _fail_if_down(self) -> None:
        if self.down:
            raise StoreUnavailable("blob store unreachable (simulated outage)")


async def test_a_blob_store_outage_stops_the_worker_taking_documents() -> None:
    """The circuit breaker: one attempt fails, then no queued document spends one."""
    base = make_deps(concurrency=1, poll_interval_seconds=0.05)
    blobs = FlakyBlobStore(base.blobs)
    deps = dataclasses.replace(base, blobs=blobs)
    ids = [(await put(deps, TEXT + str(n).encode())).id for n in range(4)]
    blobs.down = True
    stop = asyncio.Event()
    worker = Worker(deps)
    run = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(1.0)  # many poll intervals while the blob store is down
    attempts = [(await doc(deps, i)).attempts for i in ids]
    assert sum(attempts) == 1, attempts  # the first failure opens the breaker
    assert not worker.dependencies_up.is_set()
    blobs.down = False
    for document_id in ids:
        while (await doc(deps, document_id)).status is not Status.COMPLETED:
            await asyncio.sleep(0.02)
    stop.set()
    await run
    assert worker.dependencies_up.is_set()
    assert sum([(await doc(deps, i)).attempts for i in ids]) == 5  # 4 + the failed one


class BrokenWatch(RenewalLog):
    """The fake store, with a `watch_queue` that fails the way a bug would."""

    async def watch_queue(self, arrived: asyncio.Event, stop: asyncio.Event) -> None:
        raise RuntimeError("a bug in the store's wake-ups")


async def test_a_failing_queue_watch_leaves_the_worker_polling(
    caplog: pytest.LogCaptureFixture,
) -> None:
    base = make_deps(poll_interval_seconds=0.05)
    deps = dataclasses.replace(base, store=BrokenWatch(base.store))
    created = await put(deps)
    stop = asyncio.Event()
    run = asyncio.create_task(Worker(deps).run(stop))
    while (await doc(deps, created.id)).status is not Status.COMPLETED:
        assert not run.done(), run
        await asyncio.sleep(0.02)
    stop.set()
    await run
    assert "watching for new documents failed" in caplog.text


# --- streaming, deadlines by progress and per-document limits --------------------------

PACED: dict[str, Any] = {"document_stall_seconds": 0.5, "extract_timeout_seconds": 0.2}


class PacedExtractor:
    """A generator extractor: `pages` pages of prose, one every `seconds`; then, if
    `stuck`, it hangs (until the test releases it) like a parser looping mid-document.
    Records how many pages were read and whether the caller closed it."""

    def __init__(self, pages: int | None, seconds: float, stuck: bool = False) -> None:
        self.pages, self.seconds, self.stuck = pages, seconds, stuck
        self.first_delay = 0.0  # before page 1, as a document queued for a child waits
        self.read = 0
        self.closed = False
        self.release = threading.Event()

    def extract(self, path: object, content_type: str) -> Iterator[Page]:
        try:
            time.sleep(self.first_delay)
            for number in itertools.count(1) if self.pages is None else range(1, self.pages + 1):
                time.sleep(self.seconds)
                self.read += 1
                yield Page(number, " ".join(f"page{number} word{i}" for i in range(40)))
            if self.stuck:
                self.release.wait(30)
        except GeneratorExit:
            self.closed = True
            raise


def paced(extractor: PacedExtractor, **overrides: Any) -> Deps:
    return dataclasses.replace(make_deps(**{**PACED, **overrides}), extractor=extractor)


async def test_a_slow_but_progressing_extraction_is_not_abandoned() -> None:
    extractor = PacedExtractor(pages=12, seconds=0.15)  # 1.8 s in all, 3.6 x the stall limit
    deps = paced(extractor)
    created = await put(deps)
    assert (await process_document(deps, await claim(deps))).label == "completed"
    done = await doc(deps, created.id)
    assert (done.attempts, done.page_count) == (1, 12)


async def test_slow_but_progressing_embedding_is_not_abandoned() -> None:
    deps = slowed(make_deps(**PACED, embed_batch_size=1), delay=0.2)  # a batch every 0.2 s
    created = await put(deps)
    started = time.monotonic()
    assert (await process_document(deps, await claim(deps))).label == "completed"
    assert time.monotonic() - started > 2 * deps.settings.document_stall_seconds
    assert (await doc(deps, created.id)).attempts == 1


async def test_a_stuck_attempt_is_abandoned_after_the_stall_limit() -> None:
    extractor = PacedExtractor(pages=3, seconds=0.05, stuck=True)
    deps = paced(extractor)
    created = await put(deps)
    started = time.monotonic()
    try:
        assert (await process_document(deps, await claim(deps))).label == "transient:stalled"
    finally:
        extractor.release.set()
    assert 0.5 <= time.monotonic() - started < 2.0
    stuck = await doc(deps, created.id)
    assert (stuck.status, stuck.error_code) == (Status.QUEUED, "stalled")
    assert "SHEAF_DOCUMENT_STALL_SECONDS" in (stuck.last_error or "")


async def test_waiting_for_the_first_page_is_not_a_stall() -> None:
    """Two stall limits before page 1: the document may be queued for an extraction
    process that other documents hold while they stream; the extractor bounds its own
    wait for a page (SHEAF_EXTRACT_TIMEOUT_SECONDS in the isolated children)."""
    extractor = PacedExtractor(pages=3, seconds=0.05)
    extractor.first_delay = 1.0
    deps = paced(extractor)
    created = await put(deps)
    assert (await process_document(deps, await claim(deps))).label == "completed"
    assert (await doc(deps, created.id)).page_count == 3


async def test_the_deadline_is_a_backstop_even_for_progress() -> None:
    deps = paced(PacedExtractor(pages=None, seconds=0.05), document_deadline_seconds=0.8)
    await put(deps)
    assert (await process_document(deps, await claim(deps))).label == "transient:deadline_exceeded"


async def test_pages_are_read_only_as_far_as_the_page_limit() -> None:
    """An endless document: the stream reads one page past the limit, then stops it."""
    extractor = PacedExtractor(pages=None, seconds=0)
    deps = paced(extractor, document_max_pages=5)
    created = await put(deps)
    assert (await process_document(deps, await claim(deps))).label == "permanent:too_many_pages"
    assert extractor.read == 6
    assert extractor.closed  # the caller stopped it early: an isolated child stops too
    failed = await doc(deps, created.id)
    assert (failed.status, failed.error_code) == (Status.FAILED, "too_many_pages")
    assert "SHEAF_DOCUMENT_MAX_PAGES" in (failed.last_error or "")


@pytest.mark.parametrize(
    ("limit", "code"),
    [("document_max_chunks", "too_many_chunks"), ("document_max_bytes", "document_too_large")],
)
async def test_a_document_over_a_limit_fails_with_the_limits_name(limit: str, code: str) -> None:
    deps = make_deps(**{limit: 3})
    created = await put(deps)
    assert (await process_document(deps, await claim(deps))).label == f"permanent:{code}"
    failed = await doc(deps, created.id)
    assert (failed.status, failed.error_code) == (Status.FAILED, code)
    assert f"SHEAF_{limit.upper()}" in (failed.last_error or "")


async def test_a_worker_over_its_memory_limit_fails_the_document_asking_for_more() -> None:
    """The limit is on this process's resident memory, which any test run exceeds at
    1 MiB; the same document completes under the default limit."""
    if resident_bytes() is None:
        pytest.skip("a process's resident memory is read from Linux's /proc")
    deps = make_deps(worker_memory_bytes=1024 * 1024)
    created = await put(deps)
    result = await process_document(deps, await claim(deps))
    assert result.label == "transient:worker_memory_limit"
    stopped = await doc(deps, created.id)
    assert (stopped.status, stopped.error_code) == (Status.QUEUED, "worker_memory_limit")
    assert "SHEAF_WORKER_MEMORY_BYTES" in (stopped.last_error or "")


class _Pages:
    """An extractor that only reads pages: the worker chunks them itself."""

    def extract(self, path: Path, content_type: str) -> Iterator[Page]:
        yield Page(1, "alpha beta gamma " * 40)
        yield Page(2, "delta epsilon " * 40)


class _ChunksToo(_Pages):
    """An extractor that also chunks where it reads (as the isolated children do)."""

    def __init__(self) -> None:
        self.asked: list[Chunking] = []

    def extract_chunks(
        self, path: Path, content_type: str, chunking: Chunking, on_page: Callable[[], None]
    ) -> Iterator[ChunkBatch]:
        self.asked.append(chunking)
        yield from DocumentChunks(self.extract(path, content_type), chunking, on_page).batches()


def test_an_extractor_that_chunks_where_it_reads_is_asked_for_chunks(tmp_path: Path) -> None:
    settings = Settings.from_env({"SHEAF_CHUNK_SIZE": "200", "SHEAF_EMBED_BATCH_SIZE": "3"})
    path = tmp_path / "document"
    pages_read: list[int] = []
    chunker = _ChunksToo()
    made = list(chunk_batches(chunker, path, "text/plain", settings, lambda: pages_read.append(1)))
    here = list(chunk_batches(_Pages(), path, "text/plain", settings, lambda: None))
    assert chunker.asked == [Chunking(200, settings.chunk_overlap, 3, settings.document_max_pages)]
    assert [b.chunks for b in made] == [b.chunks for b in here]
    assert {len(b.chunks) for b in made[:-1]} == {3}
    assert made[-1].pages == 2
    assert len(pages_read) == 2
