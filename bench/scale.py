"""Per-document cost against collection size: a document's time with 1k and with 150k
chunks already in its collection (quick: 1k and 20k).

The collection is filled through the store's own operations (documents leased, chunks
written in batches, completed), with distinct texts and random unit vectors, so the
embedding cache and the duplicate check see a collection of that size; then a few new
documents of ~500 chunks each are uploaded and processed by the worker's pipeline in
this process (`open_deps`, isolated extraction, lexical embedder), one at a time, timed
from claim to completion. Target: the median at the large size ≤ 1.2 times the median at 1k.
Vectors have 256 dimensions to keep a 150k-chunk collection small on disk; the lookups
that depend on the collection's size do not read vectors of other documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from bench.harness import Context, median, ratio
from bench.postgres import fresh_database, sqlalchemy_url, unavailable_reason
from sheaf.bootstrap import migrate, open_deps
from sheaf.config import Settings
from sheaf.domain.models import Chunk, Completion, EmbeddedChunk, NewDocument
from sheaf.services.deps import Deps
from sheaf.services.ingest import accept_upload
from sheaf.services.processing import process_document
from tests.memory_probe import file_body, write_prose

NAME = "scale"
TITLE = "Per-document time against collection size"
COLLECTION = "scale"
DIMENSIONS = 256
FILL_DOCUMENT_CHUNKS = 5000
WRITE_BATCH = 1000
TARGET = 1.2


@dataclass(frozen=True)
class Plan:
    small: int
    large: int
    documents: int  # measured at each size
    document_bytes: int  # ~500 chunks at the default chunk size and overlap


QUICK = Plan(small=1000, large=20_000, documents=3, document_bytes=500_000)
FULL = Plan(small=1000, large=150_000, documents=5, document_bytes=500_000)


async def run(ctx: Context) -> None:
    plan = QUICK if ctx.quick else FULL
    databases = ["sqlite"]
    reason = unavailable_reason(ctx.postgres_admin_dsn)
    if reason is None:
        databases.append("postgres")
    else:
        ctx.note(f"PostgreSQL rows skipped: {reason}")
    rows = []
    for database in databases:
        with _database_url(ctx, database) as url:
            settings = Settings.from_env(
                {},
                database_url=url,
                blob_dir=ctx.workdir / f"blobs-{database}",
                embedder="lexical",  # per-document cost of the store, not of a model
                embedding_dimensions=DIMENSIONS,
            )
            await asyncio.to_thread(migrate, settings)  # alembic runs its own event loop
            async with open_deps(settings, warm_extractor=True) as deps:
                rows += await _measure(ctx, deps, database, plan)
    ctx.table(
        "seconds per document (~500 chunks), median of the documents measured at each size",
        ["database", "chunks in collection", "median s", "min s", "max s", f"÷ 1k (≤ {TARGET})"],
        rows,
    )


async def _measure(ctx: Context, deps: Deps, database: str, plan: Plan) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    reference = None
    filled = 0
    for size in (plan.small, plan.large):
        ctx.progress(f"scale: {database}, filling to {size} chunks")
        started = time.perf_counter()
        while filled < size:
            filled += await _fill_document(deps, min(FILL_DOCUMENT_CHUNKS, size - filled))
        ctx.progress(f"scale: filled in {time.perf_counter() - started:.0f} s; measuring")
        times = [
            await _timed_document(ctx, deps, f"{database}-{size}-{n}", plan.document_bytes)
            for n in range(plan.documents)
        ]
        middle = median(times)
        reference = reference or middle
        share = ratio(middle, reference)
        rows.append(
            (
                database,
                f"{size:,}",
                f"{middle:.2f}",
                f"{min(times):.2f}",
                f"{max(times):.2f}",
                f"{share:.2f}" + ("" if share is None or share <= TARGET else " **miss**"),
            )
        )
    return rows


async def _fill_document(deps: Deps, chunks: int) -> int:
    """One completed document of `chunks` distinct chunks, written as a worker would."""
    store, settings = deps.store, deps.settings
    document_id = str(uuid.uuid4())
    new = NewDocument(
        id=document_id,
        collection=COLLECTION,
        filename=f"fill-{document_id}.txt",
        content_type="text/plain",
        size_bytes=chunks * 1000,
        sha256=hashlib.sha256(document_id.encode()).hexdigest(),
        blob_key=f"fill/{document_id}",
        max_attempts=settings.max_attempts,
    )
    await store.create_document(new)
    [lease] = await store.claim_queued_documents("filler", settings.lease_seconds, 1)
    rng = np.random.default_rng(random.getrandbits(32))
    model = deps.embedder.model
    for start in range(0, chunks, WRITE_BATCH):
        count = min(WRITE_BATCH, chunks - start)
        vectors = rng.standard_normal((count, DIMENSIONS)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        batch = [
            EmbeddedChunk(
                Chunk(start + n, f"{document_id} chunk {start + n}", 1, 1),
                tuple(vectors[n].tolist()),
                model,
            )
            for n in range(count)
        ]
        await store.write_chunks(lease, batch)
    await store.complete(lease, Completion(1, chunks, {}, model, DIMENSIONS))
    return chunks


async def _timed_document(ctx: Context, deps: Deps, name: str, size: int) -> float:
    path = ctx.workdir / f"{name}.txt"
    write_prose(path, size, seed=zlib.crc32(name.encode()))
    await accept_upload(deps, COLLECTION, path.name, file_body(path))
    started = time.perf_counter()
    [lease] = await deps.store.claim_queued_documents("scale", deps.settings.lease_seconds, 1)
    outcome = (await process_document(deps, lease)).label
    if outcome != "completed":
        raise RuntimeError(f"{name}: {outcome}")
    return time.perf_counter() - started


@contextlib.contextmanager
def _database_url(ctx: Context, database: str) -> Iterator[str]:
    if database == "sqlite":
        yield f"sqlite+aiosqlite:///{ctx.workdir / 'scale.db'}"
        return
    with fresh_database(ctx.postgres_admin_dsn, "scale") as dsn:
        yield sqlalchemy_url(dsn)
