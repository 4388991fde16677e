"""Orchestration overhead: the same corpus through a bare loop and through Sheaf end to end.

The bare loop is what one would write by hand in one process: read the file, extract its
pages, chunk them, embed the chunks with the offline lexical embedder and write them to a
table, one transaction per document, on the same kind of database, with the same keyword
index Sheaf keeps (migration 0008's statements: FTS5 and its triggers on SQLite, the
generated `tsvector` and its GIN index on PostgreSQL), so that both end with chunks a
search can use. It uses Sheaf's own extractor, chunker and embedder with Sheaf's default
settings, so the difference is the orchestration alone. The same loop without the keyword
index is printed beside it, for what the index itself costs.

Sheaf runs as `sheaf up --workers N` (the API plus N worker processes, default settings)
on a fresh database and blob directory. Documents are uploaded over HTTP, four at a time,
as fast as the API takes them; throughput is documents over the time from the first
upload's start to the last completion, and latency is each document's upload start (the
client's clock) to its `completed_at` (the database's clock, on the same host).

Where the time goes comes from the attempt history Sheaf records for every document
(per-stage seconds), so the table of stages needs no profiler; `--profile DIR` also runs
the workers under pyinstrument.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import psycopg

from bench.corpus import CorpusFile, pdf_heavy, tiny_text
from bench.harness import Context, Stopwatch, load_line, median, percent, percentile, ratio
from bench.postgres import backend_pids, fresh_database, sqlalchemy_url, unavailable_reason
from bench.sheafproc import (
    CpuMeter,
    SheafProcess,
    children,
    free_port,
    read_back,
    upload_all,
    wait_done,
    wait_log,
    wait_ready,
)
from sheaf.adapters.embed_lexical import LexicalEmbedder
from sheaf.config import Settings
from sheaf.domain.chunking import chunk_pages
from sheaf.domain.models import Document, Status
from sheaf.extract import LocalExtractor

NAME = "overhead"
TITLE = "1. Orchestration overhead: bare loop vs Sheaf end to end"
UPLOAD_CONCURRENCY = 4
STAGES = ("download", "extract", "chunk", "embed", "index")


@dataclass(frozen=True)
class Plan:
    pdf_documents: int
    tiny_documents: int
    repeats: int  # each configuration runs this often; the fastest run is reported


QUICK = Plan(pdf_documents=40, tiny_documents=150, repeats=1)
FULL = Plan(pdf_documents=300, tiny_documents=1000, repeats=2)
# Orchestration, not the model: both sides embed with the hashed lexical embedder (the
# local model's own throughput is measured by `python -m bench retrieval`).
LEXICAL = {"SHEAF_EMBEDDER": "lexical"}
BARE = "bare loop"  # the reference: with the keyword index Sheaf keeps
BARE_UNINDEXED = "bare loop, no keyword index"


@dataclass
class Result:
    system: str
    database: str
    workers: int | None
    documents: int
    pages: int
    seconds: float
    latencies: list[float] = field(default_factory=list)  # per document, seconds
    failed: int = 0
    stage_means: dict[str, float] = field(default_factory=dict)  # seconds per document
    cpu: dict[str, float] = field(default_factory=dict)  # role → CPU seconds for the run
    first_lease: float | None = None  # first upload's start → first lease granted, seconds

    @property
    def docs_per_second(self) -> float:
        return self.documents / self.seconds

    @property
    def pages_per_second(self) -> float:
        return self.pages / self.seconds


async def run(ctx: Context) -> None:
    plan = QUICK if ctx.quick else FULL
    databases = ["sqlite"]
    reason = unavailable_reason(ctx.postgres_admin_dsn)
    if reason is None:
        databases.append("postgres")
    else:
        ctx.note(f"PostgreSQL rows skipped: {reason}")
    default = Settings.from_env(LEXICAL)
    ctx.note(
        f"Sheaf settings: defaults (SHEAF_CONCURRENCY={default.concurrency}, "
        f"SHEAF_POLL_INTERVAL_SECONDS={default.poll_interval_seconds:g}, "
        f"SHEAF_CHUNK_SIZE={default.chunk_size}, SHEAF_EMBED_BATCH_SIZE="
        f"{default.embed_batch_size}, lexical embedder of {default.embedding_dimensions} "
        f"dimensions, local blob directory); uploads {UPLOAD_CONCURRENCY} at a time; "
        f"best of {plan.repeats} run(s) per row."
    )
    corpora = {
        "PDF-heavy": pdf_heavy(ctx.workdir / "corpus-pdf", plan.pdf_documents),
        "tiny text": tiny_text(ctx.workdir / "corpus-tiny", plan.tiny_documents),
    }
    for name, files in corpora.items():
        pages = sum(f.pages for f in files)
        ctx.progress(f"{name} corpus: {len(files)} documents, {pages} pages")
        results = await _measure_corpus(ctx, name, files, databases, plan.repeats)
        _report(ctx, name, files, results)
        print(load_line(f"end of {name}"), flush=True)


async def _measure_corpus(
    ctx: Context, name: str, files: list[CorpusFile], databases: list[str], repeats: int
) -> list[Result]:
    results = []
    for database in databases:
        for keyword_index in (True, False):
            attempts = [_bare(ctx, name, files, database, keyword_index) for _ in range(repeats)]
            results.append(min(attempts, key=lambda r: r.seconds))
        for workers in (1, 2):
            runs = [await _sheaf(ctx, name, files, database, workers) for _ in range(repeats)]
            results.append(min(runs, key=lambda r: r.seconds))
    return results


# -- the bare loop ------------------------------------------------------------------------


class _ChunkSink(Protocol):
    backend_pid: int | None  # the PostgreSQL server process, whose CPU counts too

    def write(self, document: str, rows: list[tuple[Any, ...]]) -> None: ...

    def close(self) -> None: ...


class _SqliteSink:
    """Chunks into a SQLite file with Sheaf's own durability settings (WAL, synchronous FULL)."""

    backend_pid = None

    def __init__(self, path: Path, keyword_index: bool) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode = WAL", "synchronous = FULL"):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.execute(_BARE_DOCUMENTS.replace("BIGSERIAL", "INTEGER"))
        self.db.execute(_BARE_CHUNKS.replace("BIGSERIAL", "INTEGER").replace("BYTEA", "BLOB"))
        for statement in _KEYWORD_INDEX.SQLITE_UP if keyword_index else ():
            self.db.execute(statement)

    def write(self, document: str, rows: list[tuple[Any, ...]]) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("INSERT INTO documents (name) VALUES (?)", (document,))
        self.db.executemany(_INSERT_CHUNK.replace("%s", "?"), rows)
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()


class _PostgresSink:
    def __init__(self, dsn: str, keyword_index: bool) -> None:
        self.db = psycopg.connect(dsn)
        self.backend_pid: int | None = self.db.info.backend_pid
        self.db.execute(_BARE_DOCUMENTS)
        self.db.execute(_BARE_CHUNKS)
        for statement in _KEYWORD_INDEX.POSTGRES_UP if keyword_index else ():
            self.db.execute(statement)
        self.db.commit()

    def write(self, document: str, rows: list[tuple[Any, ...]]) -> None:
        with self.db.transaction(), self.db.cursor() as cursor:
            cursor.execute("INSERT INTO documents (name) VALUES (%s)", (document,))
            cursor.executemany(_INSERT_CHUNK, rows)

    def close(self) -> None:
        self.db.close()


_BARE_DOCUMENTS = "CREATE TABLE documents (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL)"
_BARE_CHUNKS = (
    "CREATE TABLE chunks (id BIGSERIAL PRIMARY KEY, document TEXT NOT NULL, ordinal INT, "
    "page_start INT, page_end INT, text TEXT, embedding BYTEA)"
)
_INSERT_CHUNK = (
    "INSERT INTO chunks (document, ordinal, page_start, page_end, text, embedding) "
    "VALUES (%s, %s, %s, %s, %s, %s)"
)


def _migration(name: str) -> Any:
    """A migration module of sql/migrations/versions (not a package: loaded by path)."""
    path = Path(__file__).resolve().parents[1] / "sql" / "migrations" / "versions" / name
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_KEYWORD_INDEX = _migration("0008_keyword_index.py")


@contextlib.contextmanager
def _sink(ctx: Context, database: str, keyword_index: bool) -> Iterator[_ChunkSink]:
    if database == "sqlite":
        directory = ctx.workdir / f"bare-{time.monotonic_ns()}"
        directory.mkdir()
        sink: _ChunkSink = _SqliteSink(directory / "bare.db", keyword_index)
        try:
            yield sink
        finally:
            sink.close()
        return
    with fresh_database(ctx.postgres_admin_dsn, "bare") as dsn:
        sink = _PostgresSink(dsn, keyword_index)
        try:
            yield sink
        finally:
            sink.close()


def _bare(
    ctx: Context, corpus: str, files: list[CorpusFile], database: str, keyword_index: bool = True
) -> Result:
    system = BARE if keyword_index else BARE_UNINDEXED
    ctx.progress(f"{system}, {corpus}, {database}")
    settings = Settings.from_env(LEXICAL)
    extractor = LocalExtractor()
    embedder = LexicalEmbedder(settings.embedding_dimensions)
    latencies = []
    server = CpuMeter()
    label = f"overhead-{_slug(system)}-{_slug(corpus)}-{database}"
    with _sink(ctx, database, keyword_index) as sink, ctx.spied(os.getpid(), label):
        backend = {sink.backend_pid: "PostgreSQL"} if sink.backend_pid else {}
        server.start(backend)
        cpu_before = time.process_time()
        clock = Stopwatch()
        for file in files:
            started = time.perf_counter()
            pages = extractor.extract(file.path, file.content_type.value)
            chunks = chunk_pages(pages, settings.chunk_size, settings.chunk_overlap)
            vectors = embedder.embed_sync([chunk.text for chunk in chunks])
            rows = [
                (file.path.name, c.ordinal, c.page_start, c.page_end, c.text, _f32(v))
                for c, v in zip(chunks, vectors, strict=True)
            ]
            sink.write(file.path.name, rows)
            latencies.append(time.perf_counter() - started)
        seconds = clock.seconds
        cpu = {"loop": time.process_time() - cpu_before}
        server.stop(backend)
    cpu.update(server.used)
    pages_total = sum(f.pages for f in files)
    return Result(system, database, None, len(files), pages_total, seconds, latencies, cpu=cpu)


def _f32(vector: Sequence[float]) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


# -- Sheaf end to end ---------------------------------------------------------------------


async def _sheaf(
    ctx: Context,
    corpus: str,
    files: list[CorpusFile],
    database: str,
    workers: int,
    within: float | None = None,
) -> Result:
    ctx.progress(f"Sheaf, {corpus}, {database}, {workers} worker(s)")
    run_dir = ctx.workdir / f"sheaf-{time.monotonic_ns()}"
    run_dir.mkdir()
    with _database_url(ctx, database, run_dir) as url:
        port = free_port()
        settings = {
            "SHEAF_DATABASE_URL": url,
            "SHEAF_BLOB_DIR": str(run_dir / "blobs"),
            "SHEAF_PORT": str(port),
            "SHEAF_WORKERS": str(workers),
            "SHEAF_LOG_FORMAT": "json",
            **LEXICAL,
        }
        label = f"overhead-{_slug(corpus)}-{database}-w{workers}"
        meter = CpuMeter()
        with _running_sheaf(settings, run_dir, workers) as sheaf:
            api = f"http://127.0.0.1:{port}"
            await sheaf.ready(api)
            meter.start(sheaf.pids(ctx, url))
            try:
                with ctx.spied(sheaf.up.pid, label):
                    sent = await upload_all(api, [f.path for f in files], UPLOAD_CONCURRENCY)
                    await wait_done(api, len(files), within=within or 120 + 5 * len(files))
            except Exception as exc:
                raise RuntimeError(f"{exc}\nSheaf's log ends with:\n{sheaf.tail()}") from exc
            meter.stop(sheaf.pids(ctx, url))
        documents = await read_back(url, list(sent))
    result = _summarise(database, workers, files, sent, documents)
    result.cpu = meter.used
    return result


@contextlib.contextmanager
def _database_url(ctx: Context, database: str, run_dir: Path) -> Iterator[str]:
    if database == "sqlite":
        yield f"sqlite+aiosqlite:///{run_dir / 'sheaf.db'}"
        return
    with fresh_database(ctx.postgres_admin_dsn, "sheaf") as dsn:
        yield sqlalchemy_url(dsn)


@contextlib.contextmanager
def _running_sheaf(settings: dict[str, str], run_dir: Path, workers: int) -> Iterator[_Running]:
    running = _Running(SheafProcess(["up"], settings, run_dir, run_dir / "sheaf.log"), workers)
    try:
        yield running
    finally:
        running.up.stop()


@dataclass
class _Running:
    """`sheaf up`: the API (and the supervisor) in one process, the workers its children."""

    up: SheafProcess
    workers: int

    async def ready(self, url: str) -> None:
        await wait_ready(url, self.up)
        # Ready means warm: each worker has started its extraction children (which import
        # every parser, seconds of CPU on this machine), as the bare loop has its imports.
        await wait_log(self.up, "extraction processes ready", self.workers)

    def pids(self, ctx: Context, database_url: str) -> dict[int, str]:
        """Process id → role, for CPU accounting: API, workers and database server."""
        roles = {self.up.pid: "API"}
        roles.update(dict.fromkeys(children(self.up.pid), "workers"))
        if database_url.startswith("postgresql"):
            name = database_url.rpartition("/")[2]
            roles.update(dict.fromkeys(backend_pids(ctx.postgres_admin_dsn, name), "PostgreSQL"))
        return roles

    def tail(self) -> str:
        return self.up.tail()


def _summarise(
    database: str,
    workers: int,
    files: list[CorpusFile],
    sent: dict[str, float],
    documents: list[Document],
) -> Result:
    done = [d for d in documents if d.status is Status.COMPLETED and d.completed_at]
    ends = [d.completed_at.timestamp() for d in done if d.completed_at]
    seconds = max(ends) - min(sent.values())
    latencies = [d.completed_at.timestamp() - sent[d.id] for d in done if d.completed_at]
    stage_means: dict[str, float] = {}
    for doc in done:
        attempt = doc.history[-1]
        parts = {
            "upload": doc.created_at.timestamp() - sent[doc.id],
            "queued": attempt.started_at.timestamp() - doc.created_at.timestamp(),
            **{stage: attempt.stage_seconds.get(stage, 0.0) for stage in STAGES},
            "processing": attempt.stage_seconds.get("total", 0.0),
        }
        if attempt.ended_at is not None:
            parts["attempt"] = (attempt.ended_at - attempt.started_at).total_seconds()
        for stage, value in parts.items():
            stage_means[stage] = stage_means.get(stage, 0.0) + value / len(done)
    first_start = min(a.started_at.timestamp() for d in done for a in d.history)
    return Result(
        "Sheaf",
        database,
        workers,
        len(done),
        sum(d.page_count or 0 for d in done),
        seconds,
        latencies,
        failed=len(files) - len(done),
        stage_means=stage_means,
        first_lease=first_start - min(sent.values()),
    )


# -- report -------------------------------------------------------------------------------


def _report(ctx: Context, corpus: str, files: list[CorpusFile], results: list[Result]) -> None:
    pages = sum(f.pages for f in files)
    bare = {r.database: r for r in results if r.system == BARE}
    rows = []
    for r in results:
        reference = bare[r.database]
        rows.append(
            [
                r.system,
                r.database,
                r.workers if r.workers is not None else "—",
                r.documents,
                r.docs_per_second,
                r.pages_per_second,
                _ms(percentile(r.latencies, 50)),
                _ms(percentile(r.latencies, 95)),
                _ms(percentile(r.latencies, 99)),
                r.first_lease,
                r.failed,
                percent(ratio(r.docs_per_second, reference.docs_per_second)),
            ]
        )
    ctx.table(
        f"{corpus} corpus: {len(files)} documents, {pages} pages",
        [
            "system",
            "database",
            "workers",
            "docs",
            "docs/s",
            "pages/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "first lease s",
            "failed",
            "Sheaf ÷ bare",
        ],
        rows,
    )
    ctx.note(
        "Latency: Sheaf rows from the upload's start to `completed_at`; bare-loop rows are "
        "the time one document takes inside the loop. `first lease s`: from the first "
        "upload's start to the first lease, the time an idle worker takes to notice it "
        "(LISTEN/NOTIFY on PostgreSQL, a watch on the database files on SQLite); it counts "
        "against Sheaf's throughput."
    )
    _report_cpu(ctx, corpus, results)
    _report_stages(ctx, corpus, results)
    _report_verdict(ctx, corpus, results)


def _report_cpu(ctx: Context, corpus: str, results: list[Result]) -> None:
    """CPU per document: what the work costs, whatever else the machine is doing."""
    bare = {r.database: r for r in results if r.system == BARE}
    rows = []
    for r in results:
        per_doc = {role: 1000 * seconds / r.documents for role, seconds in r.cpu.items()}
        total = sum(per_doc.values())
        reference = bare[r.database]
        reference_total = 1000 * sum(reference.cpu.values()) / reference.documents
        name = r.system if r.workers is None else f"Sheaf, {r.workers} worker(s)"
        rows.append(
            [
                f"{name}, {r.database}",
                per_doc.get("loop", per_doc.get("workers")),
                per_doc.get("API"),
                per_doc.get("PostgreSQL"),
                total,
                ratio(total, reference_total),
            ]
        )
    ctx.table(
        f"{corpus}: CPU time per document (ms, user + system)",
        ["run", "loop / workers", "API", "PostgreSQL server", "total", "total ÷ bare"],
        rows,
    )
    ctx.note(
        "CPU time is what each document costs the machine. It is steadier than wall-clock "
        "time under load, but contention inflates it too, more for Sheaf's processes and "
        "threads than for the one loop. SQLite's work is inside the processes that call it."
    )


def _report_stages(ctx: Context, corpus: str, results: list[Result]) -> None:
    order = ["upload", "queued", *STAGES, "processing", "attempt"]
    rows = []
    for r in results:
        if r.workers is None:
            rows.append(
                [f"{r.system}, {r.database}", "—", "—", *(["—"] * 5), _ms(median(r.latencies)), "—"]
            )
            continue
        rows.append(
            [
                f"Sheaf, {r.database}, {r.workers} worker(s)",
                *(_ms(r.stage_means.get(s)) for s in order),
            ]
        )
    ctx.table(
        f"{corpus}: where a document's time goes (mean ms per document; Sheaf's attempt history)",
        ["run", *order],
        rows,
    )
    ctx.note(
        "`queued`: upload committed → lease granted; `processing`: the pipeline under the "
        "lease (the stages plus what lies between them); `attempt`: lease granted → "
        "completion committed. Stages overlap across the documents a worker runs at once "
        "(SHEAF_CONCURRENCY), so they add up to more than the wall-clock time per document."
    )


def _report_verdict(ctx: Context, corpus: str, results: list[Result]) -> None:
    bare = {r.database: r for r in results if r.system == BARE}
    for r in results:
        if r.workers != 1:
            continue
        reference = bare[r.database]
        share = r.docs_per_second / reference.docs_per_second
        projected = _cpu_bound_share(r, reference)
        if corpus == "PDF-heavy":
            verdict = "met" if share >= 0.95 else f"MISSED by {100 * (0.95 - share):.0f} points"
            ctx.note(
                f"Target (PDF-heavy, 1 worker, {r.database}): Sheaf ≥ 95% of the bare loop's "
                f"throughput — measured {percent(share)}: {verdict}. If CPU were the only "
                f"limit (each process a core of its own), the CPU times above would allow "
                f"{percent(projected)}."
            )
            continue
        overhead_ms = 1000 / r.docs_per_second - 1000 / reference.docs_per_second
        cpu_ms = 1000 * (sum(r.cpu.values()) / r.documents)
        bare_cpu_ms = 1000 * (sum(reference.cpu.values()) / reference.documents)
        ctx.note(
            f"Per-document overhead (tiny text, 1 worker, {r.database}): "
            f"{overhead_ms:.1f} ms of wall-clock time per document over the bare loop "
            f"({1000 / r.docs_per_second:.1f} ms vs {1000 / reference.docs_per_second:.1f} ms), "
            f"and {cpu_ms - bare_cpu_ms:.1f} ms of CPU time ({cpu_ms:.1f} ms vs "
            f"{bare_cpu_ms:.1f} ms)."
        )


def _cpu_bound_share(sheaf: Result, bare: Result) -> float:
    """Sheaf's throughput over the bare loop's if only CPU limited them, from their CPU times.

    The bare loop is serial: a document costs its loop and server time together. Sheaf's
    worker and its API plus database server run in parallel, so the busier side sets the
    pace.
    """
    bare_seconds = sum(bare.cpu.values()) / bare.documents
    worker = sheaf.cpu.get("workers", 0.0) / sheaf.documents
    others = (sheaf.cpu.get("API", 0.0) + sheaf.cpu.get("PostgreSQL", 0.0)) / sheaf.documents
    return bare_seconds / max(worker, others)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000 * seconds


def _slug(text: str) -> str:
    return text.lower().replace(" ", "-")
