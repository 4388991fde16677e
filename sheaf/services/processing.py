"""Processing one leased document: download → extract → chunk → embed → index → complete.

The caller already holds the lease. While the pipeline runs, a heartbeat renews the lease
every `heartbeat_seconds` and records the stage the pipeline is in then; if a renewal is
refused the pipeline is cancelled at once (the fencing token would reject its writes
anyway). Entering a stage costs no write: the stage travels with the next renewal, and
each chunk write records the `index` stage in its own transaction. Every way out of here
settles the lease:

    completed            store.complete (one transaction; LeaseLost → nothing to do)
    PermanentError       release(permanent)     → failed, a human looks at it
    TransientError/bug   release(transient)     → queued again after a backoff delay
    stalled, or deadline release(transient)     → the next attempt may be luckier
    cancelled (shutdown) release(interrupted)   → queued, the attempt is not consumed
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sheaf import logs, metrics
from sheaf.domain.chunking import content_hash
from sheaf.domain.models import (
    AttemptResult,
    Chunk,
    Completion,
    EmbeddedChunk,
    ErrorInfo,
    ErrorKind,
    Lease,
    Processed,
    ReleaseOutcome,
    ReleaseResult,
)
from sheaf.domain.retry import retry_delay
from sheaf.errors import BlobNotFound, LeaseLost, PermanentError, SheafError, TransientError
from sheaf.services.deps import Deps
from sheaf.services.streaming import ChunkStream, chunk_batches

log = logging.getLogger(__name__)

EMBED_AHEAD = 2  # batches of one document whose embeddings may be under way at once


@dataclass
class Stages:
    """Which stage the attempt is in, and how long each stage took.

    Kept here only: the heartbeat's next renewal records `current` on the row. A renewal
    at every stage change cost up to five extra write transactions per document (one
    commit each, and on SQLite each waits for the one write lock) to learn where a worker
    died more precisely than within one heartbeat; the chunk writes, which happen anyway,
    record the `index` stage.
    """

    current: str = "download"
    seconds: dict[str, float] = field(default_factory=dict)
    lost: bool = False  # a renewal was refused: the lease belongs to someone else now
    progressed_at: float = field(default_factory=time.monotonic)  # the last page or write

    def progress(self) -> None:
        """A page was read or chunks were written; safe from any thread."""
        self.progressed_at = time.monotonic()

    def awaiting_extraction(self) -> None:
        """Until the first page, the stall clock stops: the document may be waiting for a
        free extraction process (held by other documents, for as long as they stream),
        and a parser stuck on a page is the extractor's to stop (its per-page limit)."""
        self.progressed_at = math.inf

    @contextlib.asynccontextmanager
    async def stage(self, name: str, *, observe: bool = True) -> AsyncIterator[None]:
        """Time a stage; `observe=False` leaves the histogram to the caller."""
        self.current = name
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
            if observe:
                metrics.STAGE_SECONDS.labels(stage=name).observe(elapsed)


async def process_document(deps: Deps, lease: Lease) -> AttemptResult:
    """Run the pipeline under `lease` and settle it; returns what happened, including what
    the database said on release (the caller settles a message from it, not from the row).

    Every line logged meanwhile, by any module, carries the document, collection, attempt
    and lease prefix; every attempt is counted by outcome and error code.
    """
    metrics.LEASES_ACQUIRED.inc()  # here, where the claim loop and the consumer both hand over
    with logs.bound(**_log_context(lease)), metrics.DOCUMENTS_IN_FLIGHT.track_inprogress():
        try:
            result = await _attempt(deps, lease)
        except asyncio.CancelledError:
            _count("interrupted")
            raise
    _count(result.outcome.value, result.error)
    return result


async def _attempt(deps: Deps, lease: Lease) -> AttemptResult:
    stages = Stages()
    started = time.perf_counter()
    pipeline = asyncio.create_task(_pipeline(deps, lease, stages))
    heartbeat = asyncio.create_task(_heartbeat(deps, lease, stages))
    try:
        done = await _while_progressing(deps, stages, pipeline, heartbeat)
    except asyncio.CancelledError:
        await _stop(pipeline, heartbeat)
        await _release(deps, lease, ReleaseOutcome.INTERRUPTED, None)
        raise
    await _stop(pipeline, heartbeat)
    stages.seconds["total"] = time.perf_counter() - started
    metrics.STAGE_SECONDS.labels(stage="total").observe(stages.seconds["total"])
    return await _settle(deps, lease, stages, pipeline if pipeline in done else None)


async def _while_progressing(
    deps: Deps, stages: Stages, *tasks: asyncio.Task[object]
) -> set[asyncio.Task[object]]:
    """Wait until a task ends; empty when the attempt stalled (no progress for
    SHEAF_DOCUMENT_STALL_SECONDS) or reached SHEAF_DOCUMENT_DEADLINE_SECONDS first.

    Measured from progress rather than from the start, so a large document that keeps
    producing pages and chunks is never abandoned for its size.
    """
    settings = deps.settings
    deadline = time.monotonic() + settings.document_deadline_seconds
    while True:
        give_up = min(deadline, stages.progressed_at + settings.document_stall_seconds)
        done, _ = await asyncio.wait(
            tasks, timeout=max(0.0, give_up - time.monotonic()), return_when=asyncio.FIRST_COMPLETED
        )
        now = time.monotonic()
        if done or now >= deadline or now >= stages.progressed_at + settings.document_stall_seconds:
            return done


def _count(outcome: str, error: ErrorInfo | None = None) -> None:
    metrics.DOCUMENTS_PROCESSED.labels(
        outcome=outcome, error_code=error.code if error else ""
    ).inc()


async def _stop(*tasks: asyncio.Task[object]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _settle(
    deps: Deps, lease: Lease, stages: Stages, pipeline: asyncio.Task[Completion] | None
) -> AttemptResult:
    if pipeline is None:
        if stages.lost:
            log.warning("lease lost; abandoning the document")
            return AttemptResult(Processed.LEASE_LOST)
        return await _fail(deps, lease, _timed_out(deps, stages), stages.current)
    exc = pipeline.exception()
    if exc is None:
        completion = pipeline.result()
        completion = dataclasses.replace(completion, stage_seconds=stages.seconds)
        try:
            await deps.store.complete(lease, completion)
        except LeaseLost:
            metrics.FENCING_REJECTIONS.labels(operation="complete").inc()
            log.warning("lease lost before completion; chunks discarded")
            return AttemptResult(Processed.LEASE_LOST)
        except SheafError as err:
            return await _fail(deps, lease, _error_info(err), stages.current)
        log.info(
            "document completed",
            extra={"chunks": completion.chunk_count, "duration_seconds": stages.seconds["total"]},
        )
        return AttemptResult(Processed.COMPLETED)
    if isinstance(exc, LeaseLost):
        metrics.FENCING_REJECTIONS.labels(operation="write_chunks").inc()
        log.warning("lease lost while writing; abandoning the document")
        return AttemptResult(Processed.LEASE_LOST)
    return await _fail(deps, lease, _error_info(exc), stages.current)


def _timed_out(deps: Deps, stages: Stages) -> ErrorInfo:
    settings = deps.settings
    idle = time.monotonic() - stages.progressed_at
    if idle >= settings.document_stall_seconds:
        return ErrorInfo(
            "stalled",
            f"the attempt made no progress (no page read, no chunks written) for "
            f"SHEAF_DOCUMENT_STALL_SECONDS ({settings.document_stall_seconds:g} s) during "
            f"stage {stages.current}; it will be retried",
            ErrorKind.TRANSIENT,
        )
    return ErrorInfo(
        "deadline_exceeded",
        f"the attempt ran longer than SHEAF_DOCUMENT_DEADLINE_SECONDS "
        f"({settings.document_deadline_seconds:g} s) during stage {stages.current}",
        ErrorKind.TRANSIENT,
    )


def _error_info(exc: BaseException) -> ErrorInfo:
    if isinstance(exc, PermanentError):
        return ErrorInfo(exc.code, exc.message, ErrorKind.PERMANENT)
    if isinstance(exc, TransientError):
        return ErrorInfo(exc.code, exc.message, ErrorKind.TRANSIENT)
    log.error("unexpected error while processing", exc_info=exc)
    return ErrorInfo("internal_error", f"{type(exc).__name__}: {exc}", ErrorKind.TRANSIENT)


async def _fail(deps: Deps, lease: Lease, error: ErrorInfo, stage: str) -> AttemptResult:
    settings = deps.settings
    await _record_stage(deps, lease, stage)
    if error.kind is ErrorKind.PERMANENT:
        outcome, delay = ReleaseOutcome.PERMANENT, 0.0
    else:
        outcome = ReleaseOutcome.TRANSIENT
        delay = retry_delay(lease.attempt, settings.retry_base_seconds, settings.retry_max_seconds)
    result = await _release(deps, lease, outcome, error, delay)
    status = result.status.value if result and result.status else "unknown"
    log.warning(
        "attempt failed", extra={"error_code": error.code, "error": error.message, "status": status}
    )
    kind = Processed.PERMANENT if outcome is ReleaseOutcome.PERMANENT else Processed.TRANSIENT
    return AttemptResult(kind, error, result)


async def _record_stage(deps: Deps, lease: Lease, stage: str) -> None:
    """Name the stage an attempt failed in before releasing it: the heartbeat reports
    stages only every few seconds, so a document that failed fast in `extract` would say
    it failed while `queued`. One renewal, on failures only; if it fails, the release
    still happens and only the stage is less precise."""
    with contextlib.suppress(SheafError):
        await asyncio.shield(
            deps.store.renew_document_lease(
                lease.document_id, lease.token, deps.settings.lease_seconds, stage
            )
        )


async def _release(
    deps: Deps,
    lease: Lease,
    outcome: ReleaseOutcome,
    error: ErrorInfo | None,
    delay: float = 0.0,
) -> ReleaseResult | None:
    """Release, shielded from cancellation; a failure here only delays recovery."""
    try:
        result = await asyncio.shield(
            deps.store.release_document_lease(lease.document_id, lease.token, outcome, error, delay)
        )
    except SheafError as exc:
        log.error(
            "could not release the lease; it will expire and be recovered",
            extra={"error": exc.message},
        )
        return None
    if not result.applied:
        metrics.FENCING_REJECTIONS.labels(operation="release").inc()
    return result


async def _heartbeat(deps: Deps, lease: Lease, stages: Stages) -> None:
    """Renew until cancelled; return (ending the attempt) when the lease is lost."""
    settings = deps.settings
    while True:
        await asyncio.sleep(settings.heartbeat_seconds)
        try:
            renewed = await deps.store.renew_document_lease(
                lease.document_id, lease.token, settings.lease_seconds, stages.current
            )
        except TransientError as exc:
            metrics.LEASE_RENEWAL_ERRORS.inc()
            log.warning("lease renewal failed; retrying", extra={"error": exc.message})
            continue
        if not renewed:
            metrics.FENCING_REJECTIONS.labels(operation="renew").inc()
            stages.lost = True
            return
        metrics.LEASES_RENEWED.inc()


async def _pipeline(deps: Deps, lease: Lease, stages: Stages) -> Completion:
    settings = deps.settings
    with tempfile.TemporaryDirectory(prefix="sheaf-") as tmp:
        path = Path(tmp) / "document"
        async with stages.stage("download"):
            try:
                await deps.blobs.download(lease.blob_key, path)
            except BlobNotFound as exc:
                raise PermanentError(
                    f"the stored file {lease.blob_key} is missing from the blob store; "
                    "upload the document again",
                    code="blob_missing",
                ) from exc
        stages.progress()
        _check_size(path, settings.document_max_bytes)
        # Extraction, chunking, embedding and writing run interleaved, a batch at a time:
        # the document is never in memory whole (sheaf.services.streaming).
        batches = chunk_batches(deps.extractor, path, lease.content_type, settings, stages.progress)
        stages.awaiting_extraction()
        stream = ChunkStream(batches, settings)
        try:
            await _index(deps, lease, stages, stream)
        finally:
            await stream.aclose()
            _split_extract_and_chunk(stages, stream.extract_seconds)
    if not stream.chunks:
        raise PermanentError(
            "no extractable text: the pages are blank, or they are scans and OCR is turned "
            "off (SHEAF_OCR_ENABLED); upload a file with text, or turn OCR on and retry",
            code="no_text",
        )
    return Completion(
        page_count=stream.pages,
        chunk_count=stream.chunks,
        stage_seconds={},
        embedding_model=deps.embedder.model,
        embedding_dimensions=deps.embedder.dimensions,
    )


def _check_size(path: Path, limit: int) -> None:
    size = path.stat().st_size
    if size > limit:
        raise PermanentError(
            f"the file is {size} bytes, more than SHEAF_DOCUMENT_MAX_BYTES ({limit}); split "
            "it into smaller files, or raise the limit",
            code="document_too_large",
        )


def _split_extract_and_chunk(stages: Stages, extract_seconds: float) -> None:
    """Reading pages and chunking them run interleaved (in the extraction child, or in the
    worker's reading thread), timed together as `extract` while the worker waits for a
    batch; the stream knows how long the parser took. Record both, once. With the child
    chunking ahead of the worker, the wait can be shorter than the parser's time: then
    `chunk` is 0 and `extract` is the parser's own seconds."""
    together = stages.seconds.get("extract", 0.0)
    stages.seconds["extract"] = extract_seconds
    stages.seconds["chunk"] = max(0.0, together - extract_seconds)
    for stage in ("extract", "chunk"):
        metrics.STAGE_SECONDS.labels(stage=stage).observe(stages.seconds[stage])


async def _index(deps: Deps, lease: Lease, stages: Stages, stream: ChunkStream) -> None:
    """Embed the stream's batches and write their chunks, in order, keeping `EMBED_AHEAD`
    batches' embeddings under way: while one batch is written, or one request waits on
    the server, the next is already in flight. The next batch is read (in a thread: from
    the extraction child that chunks as it reads, or chunked here from the pages) while
    the current one is written (in the database's thread), so neither waits for the
    other. The embedder's own limit on requests in flight still holds across all
    documents; this only stops a document from idling between batches.
    At most `EMBED_AHEAD` + 1 batches of the document are held at once.
    """
    pending: deque[tuple[Sequence[Chunk], asyncio.Task[list[tuple[float, ...]]]]] = deque()

    async def embed_next() -> None:
        async with stages.stage("extract", observe=False):  # pages and chunks, interleaved
            batch = await stream.next_batch()
        if batch:
            texts = [chunk.text for chunk in batch]
            pending.append((batch, asyncio.create_task(_embed(deps, lease.collection, texts))))

    reading: asyncio.Task[None] | None = None
    try:
        for _ in range(EMBED_AHEAD):
            await embed_next()
        while pending:
            batch, embedding = pending.popleft()
            async with stages.stage("embed"):
                vectors = await embedding
            reading = asyncio.create_task(embed_next())
            async with stages.stage("index"):
                embedded = [
                    EmbeddedChunk(chunk, vector, deps.embedder.model)
                    for chunk, vector in zip(batch, vectors, strict=True)
                ]
                await deps.store.write_chunks(lease, embedded)
            stages.progress()
            await reading
            reading = None
    finally:
        if reading is not None:  # the write failed: the read under way is not wanted
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
        for _, embedding in pending:
            embedding.cancel()
        await asyncio.gather(*(embedding for _, embedding in pending), return_exceptions=True)


async def _embed(deps: Deps, collection: str, texts: list[str]) -> list[tuple[float, ...]]:
    """Embed only texts this collection has not embedded with this model before."""
    model = deps.embedder.model
    hashes = [content_hash(text) for text in texts]
    known = await deps.store.cached_embeddings(collection, model, hashes)
    missing = sorted({h: t for h, t in zip(hashes, texts, strict=True) if h not in known}.items())
    if missing:
        fresh = await deps.embedder.embed([text for _, text in missing])
        known.update(zip((h for h, _ in missing), fresh, strict=True))
    metrics.EMBEDDING_CACHE.labels(result="hit").inc(len(texts) - len(missing))
    metrics.EMBEDDING_CACHE.labels(result="miss").inc(len(missing))
    return [known[h] for h in hashes]


def _log_context(lease: Lease) -> dict[str, object]:
    return {
        "document_id": lease.document_id,
        "collection": lease.collection,
        "attempt": lease.attempt,
        "lease": lease.token[:8],
    }
