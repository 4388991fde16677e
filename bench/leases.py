"""Lease machinery: claim + release cycles per second on PostgreSQL, three systems side by side.

Each system gets a fresh database of its own on the same server, seeded before every
measurement with the same number of ready jobs (`Plan.rows`), vacuumed, analysed and
checkpointed. Claimers (1, 4, 16) are separate spawned processes, each with one
connection, started together at a common instant after a few warm-up cycles; the rate is
the cycles finished in the window over its length. Afterwards every job id handed out is
checked: no job may be claimed twice, neither in the claimers' records nor in the
system's own history (Sheaf's `attempts`, procrastinate's `started` events), and the
number of finished jobs in the database must equal the number of claims.

The systems are described in `bench.lease_clients`.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path

import psycopg
from procrastinate.schema import SchemaManager

from bench.harness import Context, percent, percentile, ratio
from bench.lease_clients import BARE_SCHEMA, Assignment, Outcome, serve
from bench.postgres import fresh_database, sqlalchemy_url, unavailable_reason
from sheaf.adapters.sql.migrate import upgrade

NAME = "leases"
TITLE = "2. Lease machinery: claim + release cycles per second on PostgreSQL"


@dataclass(frozen=True)
class Plan:
    rows: int  # ready jobs seeded before each measurement
    seconds: float  # measured window per cell
    claimers: tuple[int, ...] = (1, 4, 16)
    warmup_cycles: int = 3


QUICK = Plan(rows=20_000, seconds=3.0)
FULL = Plan(rows=50_000, seconds=10.0)


@dataclass(frozen=True)
class System:
    key: str  # the claimer in bench.lease_clients
    label: str
    schema: str  # which database it runs on: bare, procrastinate, sheaf


SYSTEMS = (
    System("bare", "bare reference", "bare"),
    System("procrastinate", "procrastinate fetch + finish", "procrastinate"),
    System("sheaf", "Sheaf claim + release(success)", "sheaf"),
    System("sheaf-complete", "Sheaf claim + complete()", "sheaf"),
)

_SEED = {
    "bare": [
        "TRUNCATE bare_jobs RESTART IDENTITY",
        "INSERT INTO bare_jobs (status) SELECT 'queued' FROM generate_series(1, %(rows)s)",
        "VACUUM ANALYZE bare_jobs",
    ],
    "procrastinate": [
        "TRUNCATE procrastinate_events, procrastinate_periodic_defers, procrastinate_jobs, "
        "procrastinate_workers RESTART IDENTITY CASCADE",
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
        "SELECT 'default', 'bench', '{}'::jsonb FROM generate_series(1, %(rows)s)",
        "VACUUM ANALYZE procrastinate_jobs",
        "VACUUM ANALYZE procrastinate_events",
    ],
    "sheaf": [
        "TRUNCATE chunks, attempts, documents",
        # What create_document inserts (sheaf.adapters.sql.store._new_row), in one statement.
        "INSERT INTO documents (id, collection, filename, content_type, size_bytes, sha256, "
        "blob_key, status, attempts, max_attempts, dispatch_seq, last_dispatched_at, "
        "chunk_count, created_at, updated_at) "
        "SELECT gen_random_uuid()::text, 'bench', 'doc-' || i || '.txt', 'text/plain', 100, "
        "md5(i::text) || md5((-i)::text), 'bench/' || i, 'queued', 0, 3, 1, "
        "clock_timestamp(), 0, clock_timestamp(), clock_timestamp() "
        "FROM generate_series(1, %(rows)s) AS i",
        "VACUUM ANALYZE documents",
        "VACUUM ANALYZE attempts",
    ],
}
_CHECKS = {
    "bare": ("SELECT count(*) FROM bare_jobs WHERE status = 'done'", None),
    "procrastinate": (
        "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",
        "SELECT count(*) FROM (SELECT job_id FROM procrastinate_events WHERE type = 'started' "
        "GROUP BY job_id HAVING count(*) > 1) AS twice",
    ),
    "sheaf": (
        "SELECT count(*) FROM documents WHERE status = 'completed'",
        "SELECT count(*) FROM (SELECT document_id FROM attempts "
        "GROUP BY document_id HAVING count(*) > 1) AS twice",
    ),
}


@dataclass
class Cell:
    system: System
    claimers: int
    cycles: int
    seconds: float
    claim_seconds: list[float]
    claimed_twice: int  # by the claimers' own records
    history_twice: int | None  # by the system's history, where it has one
    finished_in_db: int
    claimed: int
    ran_dry: bool
    errors: list[str]

    @property
    def rate(self) -> float:
        return self.cycles / self.seconds if self.seconds > 0 else 0.0

    @property
    def verified(self) -> str:
        ok = self.claimed_twice == 0 and not self.history_twice
        ok = ok and self.finished_in_db == self.claimed and not self.errors
        return "yes" if ok else "NO"


async def run(ctx: Context) -> None:
    reason = unavailable_reason(ctx.postgres_admin_dsn)
    if reason is not None:
        ctx.note(f"Skipped: {reason}")
        return
    plan = QUICK if ctx.quick else FULL
    ctx.note(
        f"{plan.rows:,} ready jobs seeded before each cell; {plan.seconds:g} s measured per "
        f"cell after {plan.warmup_cycles} warm-up cycles per claimer; each claimer a spawned "
        "process with one connection; every statement its own transaction (autocommit)."
    )
    schemas = sorted({s.schema for s in SYSTEMS})
    with _Databases(ctx, schemas) as databases, _ClaimerPool(max(plan.claimers)) as pool:
        await databases.install()
        _explain_claims(ctx, databases, plan)
        cells = []
        for claimers in plan.claimers:  # systems interleaved: each level sees the same load
            for system in SYSTEMS:
                ctx.progress(f"{system.label}, {claimers} claimer(s)")
                dsn = databases.dsn[system.schema]
                _seed(dsn, system.schema, plan.rows)
                profile = _profile_path(ctx, system, claimers)
                outcomes = pool.run(system.key, dsn, claimers, plan, profile)
                cells.append(_verify(system, claimers, dsn, outcomes, plan))
    _report(ctx, cells, plan)


# -- databases ----------------------------------------------------------------------------


class _Databases:
    """One fresh database per schema, dropped at the end."""

    def __init__(self, ctx: Context, schemas: list[str]) -> None:
        self._ctx = ctx
        self._schemas = schemas
        self._stack = contextlib.ExitStack()
        self.dsn: dict[str, str] = {}

    def __enter__(self) -> _Databases:
        for schema in self._schemas:
            label = schema.replace("-", "_")
            self.dsn[schema] = self._stack.enter_context(
                fresh_database(self._ctx.postgres_admin_dsn, label)
            )
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    async def install(self) -> None:
        for schema, dsn in self.dsn.items():
            if schema == "bare":
                _execute(dsn, [BARE_SCHEMA])
            elif schema == "procrastinate":
                _execute(dsn, [SchemaManager.get_schema()])
            else:
                await asyncio.to_thread(upgrade, sqlalchemy_url(dsn))


def _execute(dsn: str, statements: list[str], **params: object) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement, params or None)  # type: ignore[arg-type]


def _seed(dsn: str, schema: str, rows: int) -> None:
    _execute(dsn, [*_SEED[schema], "CHECKPOINT"], rows=rows)


def _explain_claims(ctx: Context, databases: _Databases, plan: Plan) -> None:
    """The plans PostgreSQL runs inside the claim functions, via auto_explain.

    auto_explain logs the statements nested in a PL/pgSQL function; with its log level
    set to NOTICE the plans come back to this client instead of the server's log.
    """
    for schema, call in (
        ("sheaf", "SELECT * FROM claim_queued_documents_v2('explain', 60, 1, 0)"),
        ("procrastinate", "SELECT * FROM procrastinate_fetch_job_v2(NULL, NULL)"),
    ):
        dsn = databases.dsn[schema]
        _seed(dsn, schema, plan.rows)
        notices: list[str] = []
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.add_notice_handler(partial(_collect, notices))
                for setting in (
                    "LOAD 'auto_explain'",
                    "SET auto_explain.log_min_duration = 0",
                    "SET auto_explain.log_analyze = on",
                    "SET auto_explain.log_buffers = on",
                    "SET auto_explain.log_timing = on",
                    "SET auto_explain.log_nested_statements = on",
                    "SET auto_explain.log_level = 'notice'",
                ):
                    conn.execute(setting)  # type: ignore[call-overload]
                conn.execute("BEGIN")
                conn.execute(call)  # type: ignore[call-overload]
                conn.execute("ROLLBACK")
        except psycopg.Error as exc:
            ctx.note(f"No plan for {schema}: {exc}")
            continue
        plans = [n for n in notices if "Query Text" in n and ("LIMIT" in n or "FOR UPDATE" in n)]
        shown = plans[0] if plans else "\n\n".join(notices)
        print(f"Plan of the claim on `{schema}` ({plan.rows:,} ready rows):\n\n```\n{shown}\n```\n")


def _collect(into: list[str], notice: psycopg.errors.Diagnostic) -> None:
    into.append(notice.message_primary or "")


# -- claimer processes --------------------------------------------------------------------


class _ClaimerPool:
    """`size` spawned claimer processes, reused for every cell."""

    def __init__(self, size: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipes: list[Connection] = []
        self._procs = []
        for _ in range(size):
            parent, child = context.Pipe()
            proc = context.Process(target=serve, args=(child,), daemon=True)
            proc.start()
            self._pipes.append(parent)
            self._procs.append(proc)

    def __enter__(self) -> _ClaimerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for pipe in self._pipes:
            pipe.send(None)
        for proc in self._procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()

    def run(
        self, system: str, dsn: str, claimers: int, plan: Plan, profile: Path | None
    ) -> tuple[float, list[Outcome]]:
        pipes = self._pipes[:claimers]
        for n, pipe in enumerate(pipes):
            job = Assignment(
                system=system,
                dsn=dsn,
                owner=f"bench-claimer-{n}",
                seconds=plan.seconds,
                warmup_cycles=plan.warmup_cycles,
                profile=profile if n == 0 else None,
            )
            pipe.send(job)
        for pipe in pipes:
            if pipe.recv() != "ready":
                raise RuntimeError("a claimer process answered out of turn")
        start_at = time.time() + 0.5
        for pipe in pipes:
            pipe.send(start_at)
        return start_at, [pipe.recv() for pipe in pipes]


def _profile_path(ctx: Context, system: System, claimers: int) -> Path | None:
    if ctx.profile_dir is None or claimers != 1 or system.key == "bare":
        return None
    ctx.profile_dir.mkdir(parents=True, exist_ok=True)
    return ctx.profile_dir / f"leases-{system.key}-{system.schema}-claimer.txt"


# -- verification and report ----------------------------------------------------------


def _verify(
    system: System, claimers: int, dsn: str, run: tuple[float, list[Outcome]], plan: Plan
) -> Cell:
    start_at, outcomes = run
    claimed = [job for o in outcomes for job in o.claimed]
    twice = sum(n - 1 for n in Counter(claimed).values() if n > 1)
    finished_query, twice_query = _CHECKS[system.schema]
    with psycopg.connect(dsn, autocommit=True) as conn:
        finished = _scalar(conn, finished_query)
        history_twice = None if twice_query is None else _scalar(conn, twice_query)
    ends = [o.finished_at for o in outcomes if o.cycles]
    return Cell(
        system=system,
        claimers=claimers,
        cycles=sum(o.cycles for o in outcomes),
        seconds=(max(ends) - start_at) if ends else plan.seconds,
        claim_seconds=[s for o in outcomes for s in o.claim_seconds],
        claimed_twice=twice,
        history_twice=history_twice,
        finished_in_db=finished,
        claimed=len(claimed),
        ran_dry=any(o.ran_dry for o in outcomes),
        errors=[o.error for o in outcomes if o.error],
    )


def _scalar(conn: psycopg.Connection, query: str) -> int:
    row = conn.execute(query).fetchone()  # type: ignore[call-overload]
    assert row is not None
    return int(row[0])


def _find(cells: list[Cell], schema: str, key: str, claimers: int) -> Cell:
    return next(
        c for c in cells if (c.system.schema, c.system.key, c.claimers) == (schema, key, claimers)
    )


def _report(ctx: Context, cells: list[Cell], plan: Plan) -> None:
    rows = []
    for cell in cells:
        procrastinate = _find(cells, "procrastinate", "procrastinate", cell.claimers)
        bare = _find(cells, "bare", "bare", cell.claimers)
        rows.append(
            [
                cell.system.label,
                cell.claimers,
                cell.cycles,
                cell.rate,
                1000 * percentile(cell.claim_seconds, 50),
                1000 * percentile(cell.claim_seconds, 99),
                f"{cell.claimed_twice}/{_or_dash(cell.history_twice)}",
                cell.verified,
                percent(ratio(cell.rate, procrastinate.rate)),
                percent(ratio(cell.rate, bare.rate)),
            ]
        )
    ctx.table(
        f"claim + release cycles, {plan.rows:,} ready jobs per system",
        [
            "system",
            "claimers",
            "cycles",
            "cycles/s",
            "claim p50 ms",
            "claim p99 ms",
            "claimed twice (claimers/history)",
            "verified",
            "÷ procrastinate",
            "÷ bare",
        ],
        rows,
    )
    for cell in cells:
        for error in cell.errors[:1]:
            ctx.note(f"{cell.system.label} at {cell.claimers}: a claimer failed:\n```\n{error}```")
        if cell.ran_dry:
            ctx.note(f"{cell.system.label} at {cell.claimers}: the queue ran dry in the window.")
    _report_targets(ctx, cells, plan)


def _report_targets(ctx: Context, cells: list[Cell], plan: Plan) -> None:
    rows = []
    for claimers in plan.claimers:
        procrastinate = _find(cells, "procrastinate", "procrastinate", claimers)
        bare = _find(cells, "bare", "bare", claimers)
        for schema, key in (("sheaf", "sheaf"), ("sheaf", "sheaf-complete")):
            sheaf = _find(cells, schema, key, claimers)
            vs_procrastinate = sheaf.rate / procrastinate.rate if procrastinate.rate else 0.0
            vs_bare = sheaf.rate / bare.rate if bare.rate else 0.0
            rows.append(
                [
                    sheaf.system.label,
                    claimers,
                    sheaf.rate,
                    procrastinate.rate,
                    bare.rate,
                    _verdict(vs_procrastinate, 1.0),
                    _verdict(vs_bare, 0.8),
                ]
            )
    ctx.table(
        "targets: Sheaf ≥ procrastinate, and ≥ 80% of the bare reference",
        [
            "Sheaf",
            "claimers",
            "Sheaf/s",
            "procrastinate/s",
            "bare/s",
            "≥ procrastinate",
            "≥ 80% bare",
        ],
        rows,
    )


def _verdict(share: float, target: float) -> str:
    if share >= target:
        return f"met ({percent(share)})"
    return f"MISSED ({percent(share)}, short by {percent(target - share)})"


def _or_dash(value: int | None) -> str:
    return "—" if value is None else str(value)
