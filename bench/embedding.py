"""Embedding batching: chunks per second against an OpenAI-compatible server with fixed latency.

The server is `tests.openai_fake.FakeOpenAI` (the one the tests use) in a process of its
own, holding every request for `LATENCY` seconds before it answers with deterministic
1024-dimension vectors. The theoretical maximum is batch size x concurrency ÷ latency:
what a client reaches if it always keeps `concurrency` full batches in flight and costs
nothing itself.

Two measurements:

- **the adapter**: Sheaf's `OpenAIEmbedder` (`openai_compatible_embedder`) embeds N chunk
  texts in one call, with `EmbeddingLimits(max_batch_inputs=B, max_concurrency=C)`;
- **the pipeline**: a real `sheaf worker` (default settings, SQLite) processes documents
  already queued through `sheaf api`, embedding through the same server. Each document
  embeds its chunks `SHEAF_EMBED_BATCH_SIZE` at a time, with up to two batches under way
  (`EMBED_AHEAD`), and a worker runs `SHEAF_CONCURRENCY` documents at once, under
  `SHEAF_EMBEDDING_CONCURRENCY` requests in flight; its maximum is therefore batch x
  min(`SHEAF_CONCURRENCY` x 2, `SHEAF_EMBEDDING_CONCURRENCY`) ÷ latency.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from bench.harness import Context, Stopwatch, percent
from bench.sheafproc import (
    SheafProcess,
    free_port,
    read_back,
    upload_all,
    wait_done,
    wait_log,
    wait_ready,
)
from sheaf.adapters.embed_openai import EmbeddingLimits, openai_compatible_embedder
from sheaf.config import Settings
from sheaf.domain.models import Status
from sheaf.services.processing import EMBED_AHEAD

NAME = "embedding"
TITLE = "4. Embedding batching against an OpenAI-compatible server"
LATENCY = 0.1  # seconds the server holds each request
DIMENSIONS = 1024
CHUNK_CHARS = 800  # about what 1,200-character chunks hold after word boundaries (API models)
MAX_CHUNKS = 16_384  # per adapter cell; bounds memory (a vector is a tuple of floats)


@dataclass(frozen=True)
class Plan:
    cells: tuple[tuple[int, int], ...]  # (batch size, concurrency)
    rounds: int  # each cell embeds batch x concurrency x rounds chunks (capped)
    pipeline_documents: int
    pipeline_chunks_per_document: int


QUICK = Plan(
    cells=((16, 1), (64, 1), (64, 4), (256, 4), (64, 16), (256, 16)),
    rounds=4,
    pipeline_documents=12,
    pipeline_chunks_per_document=192,
)
FULL = Plan(
    cells=tuple((b, c) for b in (16, 64, 256, 1024) for c in (1, 4, 16)),
    rounds=10,
    pipeline_documents=40,
    pipeline_chunks_per_document=320,
)


async def run(ctx: Context) -> None:
    plan = QUICK if ctx.quick else FULL
    ctx.note(
        f"Server latency {1000 * LATENCY:g} ms per request, {DIMENSIONS} dimensions, "
        f"chunks of about {CHUNK_CHARS} characters; the fake server runs in its own process."
    )
    with _FakeServer(LATENCY) as server:
        rows = [await _adapter_cell(ctx, server, b, c, plan.rounds) for b, c in plan.cells]
        ctx.table(
            "Sheaf's OpenAIEmbedder: chunks/s vs batch x concurrency ÷ latency",
            [
                "batch",
                "concurrency",
                "chunks",
                "requests",
                "most in flight",
                "chunks/s",
                "maximum/s",
                "÷ maximum",
                "client CPU ms / 1k chunks",
            ],
            rows,
        )
        pipeline = await _pipeline(ctx, server, plan)
    ctx.table(
        "the worker pipeline (`sheaf worker`, default settings) against the same server",
        ["documents", "chunks", "requests", "most in flight", "chunks/s", "maximum/s", "÷ maximum"],
        [pipeline],
    )
    _verdict(ctx, rows, pipeline)


# -- the fake server, in a process of its own -------------------------------------------


class _FakeServer:
    def __init__(self, latency: float) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._proc = context.Process(target=_serve_fake, args=(child, latency), daemon=True)

    def __enter__(self) -> _FakeServer:
        self._proc.start()
        self.port: int = self._pipe.recv()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pipe.send(None)
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def take_stats(self) -> dict[str, int]:
        """Requests answered and the most in flight at once since the last call."""
        self._pipe.send("stats")
        stats: dict[str, int] = self._pipe.recv()
        return stats


def _serve_fake(pipe: Connection, latency: float) -> None:
    from tests.openai_fake import FakeOpenAI

    async def main() -> None:
        async with FakeOpenAI(latency=latency, default_dimensions=DIMENSIONS) as fake:
            pipe.send(fake.port)
            while await asyncio.to_thread(pipe.recv) == "stats":
                answered = len(fake.answered())
                pipe.send({"requests": answered, "max_in_flight": fake.max_in_flight})
                fake.requests.clear()
                fake.max_in_flight = 0

    asyncio.run(main())


# -- the adapter alone ------------------------------------------------------------------


def _texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = [
        "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 9))) for _ in range(3000)
    ]
    texts = []
    for _ in range(count):
        text = ""
        while len(text) < CHUNK_CHARS:
            text += " ".join(rng.choices(words, k=20)) + " "
        texts.append(text[:CHUNK_CHARS])
    return texts


async def _adapter_cell(
    ctx: Context, server: _FakeServer, batch: int, concurrency: int, rounds: int
) -> list[Any]:
    count = min(batch * concurrency * rounds, MAX_CHUNKS)
    ctx.progress(f"adapter: batch {batch}, concurrency {concurrency}, {count} chunks")
    texts = _texts(count, seed=batch * 1000 + concurrency)
    limits = EmbeddingLimits(
        max_batch_inputs=batch, max_concurrency=concurrency, timeout_seconds=120
    )
    embedder = openai_compatible_embedder(
        server.base_url, "bench", DIMENSIONS, limits=limits, request_dimensions=True
    )
    try:
        await embedder.embed(texts[:batch])  # connection pool and code paths warmed up
        server.take_stats()
        with ctx.profiled(f"embedding-adapter-b{batch}-c{concurrency}"):
            cpu = time.process_time()
            clock = Stopwatch()
            vectors = await embedder.embed(texts)
            seconds = clock.seconds
            cpu = time.process_time() - cpu
    finally:
        await embedder.close()
    assert len(vectors) == count
    stats = server.take_stats()
    rate = count / seconds
    maximum = batch * concurrency / LATENCY
    return [
        batch,
        concurrency,
        count,
        stats["requests"],
        stats["max_in_flight"],
        rate,
        maximum,
        percent(rate / maximum),
        1_000_000 * cpu / count,
    ]


# -- the worker pipeline ----------------------------------------------------------------


async def _pipeline(ctx: Context, server: _FakeServer, plan: Plan) -> list[Any]:
    ctx.progress(f"pipeline: {plan.pipeline_documents} documents")
    run_dir = ctx.workdir / "pipeline"
    run_dir.mkdir()
    files = []
    for n in range(plan.pipeline_documents):
        path = run_dir / f"doc-{n:03d}.txt"
        texts = _texts(plan.pipeline_chunks_per_document, seed=10_000 + n)
        path.write_text("\n\n".join(texts))
        files.append(path)
    port = free_port()
    url = f"sqlite+aiosqlite:///{run_dir / 'sheaf.db'}"
    settings = {
        "SHEAF_DATABASE_URL": url,
        "SHEAF_BLOB_DIR": str(run_dir / "blobs"),
        "SHEAF_PORT": str(port),
        "SHEAF_EMBEDDER": "openai",
        "SHEAF_OPENAI_BASE_URL": server.base_url,
        "SHEAF_OPENAI_MODEL": "bench",
        "SHEAF_EMBEDDING_DIMENSIONS": str(DIMENSIONS),
        "SHEAF_LOG_FORMAT": "json",
    }
    SheafProcess(["db", "upgrade"], settings, run_dir, run_dir / "db.log").wait(timeout=120)
    api = SheafProcess(["api"], settings, run_dir, run_dir / "api.log")
    worker = None
    try:
        await wait_ready(f"http://127.0.0.1:{port}", api)
        sent = await upload_all(f"http://127.0.0.1:{port}", files)
        server.take_stats()
        worker = SheafProcess(["worker"], settings, run_dir, run_dir / "worker.log")
        await wait_log(worker, "extraction processes ready", 1)  # the profile leaves out start-up
        with ctx.spied(worker.pid, "embedding-pipeline-worker"):
            await wait_done(f"http://127.0.0.1:{port}", len(files), within=600)
    finally:
        if worker is not None:
            worker.stop()
        api.stop()
    stats = server.take_stats()
    documents = await read_back(url, list(sent))
    done = [d for d in documents if d.status is Status.COMPLETED]
    starts = [a.started_at.timestamp() for d in done for a in d.history]
    ends = [d.completed_at.timestamp() for d in done if d.completed_at]
    chunks = sum(d.chunk_count for d in done)
    rate = chunks / (max(ends) - min(starts))
    defaults = Settings.from_env({})
    in_flight = min(defaults.concurrency * EMBED_AHEAD, defaults.embedding_concurrency)
    maximum = defaults.embed_batch_size * in_flight / LATENCY
    return [
        f"{len(done)}/{len(files)}",
        chunks,
        stats["requests"],
        stats["max_in_flight"],
        rate,
        maximum,
        percent(rate / maximum),
    ]


def _verdict(ctx: Context, rows: list[list[Any]], pipeline: list[Any]) -> None:
    met = [r for r in rows if r[5] >= 0.9 * r[6]]
    missed = [r for r in rows if r[5] < 0.9 * r[6]]
    ctx.note(
        f"Target: ≥ 90% of the maximum. The adapter meets it in {len(met)} of {len(rows)} "
        "cells"
        + (
            "; missed at " + ", ".join(f"batch {r[0]} x {r[1]} ({r[7]})" for r in missed)
            if missed
            else ""
        )
        + f". The pipeline reaches {pipeline[6]} of its maximum."
    )
