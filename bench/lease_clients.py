"""The claimers of the lease benchmark: one class per system, and the process that runs them.

Every claimer does the same cycle, one job at a time, over one connection of its own:
claim the next job, then release it as done. What a cycle costs is what the system does
for it:

- `bare`: the reference. One table; the claim is a single `UPDATE … WHERE id = (SELECT …
  FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING`, the release a single UPDATE that checks the
  token. asyncpg, prepared statements, no pool.
- `procrastinate`: its own SQL functions through its own connector (psycopg 3, a pool of
  one): `procrastinate_fetch_job_v2` then `procrastinate_finish_job_v1` — the queries of
  `procrastinate.sql.queries`, exactly as its worker sends them.
- `sheaf`: Sheaf's real store (SQLAlchemy + asyncpg, a pool of one):
  `claim_queued_documents(limit=1)` then `release_document_lease(success)` — the full
  contract: a new fencing token, attempts and dispatch_seq, the attempt history row, the
  completion's chunk swap. `sheaf-complete` releases with `complete()` instead, the
  transaction a worker commits after writing chunks.

Claimers run in spawned processes (`serve`), kept for the whole benchmark so that
interpreter start-up never lands in a measurement.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import asyncpg
from procrastinate import PsycopgConnector
from procrastinate import sql as procrastinate_sql

from bench.harness import profile_text
from bench.postgres import sqlalchemy_url
from sheaf.adapters.sql import open_store
from sheaf.adapters.sql.store import SqlDocumentStore
from sheaf.domain.models import Completion, Lease, ReleaseOutcome

LEASE_SECONDS = 60.0

BARE_SCHEMA = """
CREATE TABLE bare_jobs (
    id bigserial PRIMARY KEY,
    status text NOT NULL DEFAULT 'queued',
    token uuid,
    owner text,
    claimed_at timestamptz,
    finished_at timestamptz
);
CREATE INDEX bare_jobs_queued ON bare_jobs (id) WHERE status = 'queued';
"""
BARE_CLAIM = """
UPDATE bare_jobs
SET status = 'running', token = gen_random_uuid(), owner = $1, claimed_at = clock_timestamp()
WHERE id = (
    SELECT id FROM bare_jobs WHERE status = 'queued' ORDER BY id
    FOR UPDATE SKIP LOCKED LIMIT 1
)
RETURNING id, token
"""
BARE_RELEASE = """
UPDATE bare_jobs SET status = 'done', token = NULL, finished_at = clock_timestamp()
WHERE id = $1 AND token = $2
"""


class Claimer(Protocol):
    async def claim(self) -> tuple[str, Any] | None:
        """The next job's id and whatever `release` needs, or None when none is left."""

    async def release(self, handle: Any) -> None: ...

    async def close(self) -> None: ...


class BareClaimer:
    def __init__(self, conn: asyncpg.Connection, owner: str) -> None:
        self._conn = conn
        self._owner = owner

    @classmethod
    async def open(cls, dsn: str, owner: str) -> BareClaimer:
        return cls(await asyncpg.connect(dsn), owner)

    async def claim(self) -> tuple[str, Any] | None:
        row = await self._conn.fetchrow(BARE_CLAIM, self._owner)
        return None if row is None else (str(row["id"]), (row["id"], row["token"]))

    async def release(self, handle: Any) -> None:
        status = await self._conn.execute(BARE_RELEASE, *handle)
        if status != "UPDATE 1":
            raise RuntimeError(f"bare release of {handle[0]} changed nothing ({status})")

    async def close(self) -> None:
        await self._conn.close()


class ProcrastinateClaimer:
    def __init__(self, connector: PsycopgConnector, worker_id: int) -> None:
        self._connector = connector
        self._worker_id = worker_id

    @classmethod
    async def open(cls, dsn: str, owner: str) -> ProcrastinateClaimer:
        connector = PsycopgConnector(conninfo=dsn, min_size=1, max_size=1)
        await connector.open_async()
        row = await connector.execute_query_one_async(procrastinate_sql.queries["register_worker"])
        return cls(connector, row["worker_id"])

    async def claim(self) -> tuple[str, Any] | None:
        row = await self._connector.execute_query_one_async(
            procrastinate_sql.queries["fetch_job"], queues=None, worker_id=self._worker_id
        )
        return None if row["id"] is None else (str(row["id"]), row["id"])

    async def release(self, handle: Any) -> None:
        await self._connector.execute_query_async(
            procrastinate_sql.queries["finish_job"],
            job_id=handle,
            status="succeeded",
            delete_job=False,
        )

    async def close(self) -> None:
        await self._connector.close_async()


class SheafClaimer:
    def __init__(self, store: SqlDocumentStore, owner: str, *, complete: bool) -> None:
        self._store = store
        self._owner = owner
        self._complete = complete

    @classmethod
    async def open(cls, dsn: str, owner: str, *, complete: bool = False) -> SheafClaimer:
        return cls(await open_store(sqlalchemy_url(dsn), pool_size=1), owner, complete=complete)

    async def claim(self) -> tuple[str, Any] | None:
        leases = await self._store.claim_queued_documents(self._owner, LEASE_SECONDS, 1)
        return (leases[0].document_id, leases[0]) if leases else None

    async def release(self, handle: Any) -> None:
        lease: Lease = handle
        if self._complete:
            await self._store.complete(lease, _COMPLETION)
            return
        result = await self._store.release_document_lease(
            lease.document_id, lease.token, ReleaseOutcome.SUCCESS
        )
        if not result.applied:
            raise RuntimeError(f"Sheaf release of {lease.document_id} was not applied")

    async def close(self) -> None:
        await self._store.close()


_COMPLETION = Completion(
    page_count=1,
    chunk_count=0,
    stage_seconds={"total": 0.0},
    embedding_model="bench",
    embedding_dimensions=8,
)


async def open_claimer(system: str, dsn: str, owner: str) -> Claimer:
    if system == "bare":
        return await BareClaimer.open(dsn, owner)
    if system == "procrastinate":
        return await ProcrastinateClaimer.open(dsn, owner)
    return await SheafClaimer.open(dsn, owner, complete=system == "sheaf-complete")


# -- the claimer process ----------------------------------------------------------------


@dataclass
class Outcome:
    """What one claimer did in one measurement."""

    cycles: int = 0  # claim + release pairs finished inside the measured window
    finished_at: float = 0.0  # wall clock when its last measured cycle ended
    claim_seconds: list[float] = field(default_factory=list)
    claimed: list[str] = field(default_factory=list)  # every job id it got, warm-up included
    ran_dry: bool = False  # the queue was empty before the window ended
    error: str | None = None


@dataclass(frozen=True)
class Assignment:
    system: str
    dsn: str
    owner: str
    seconds: float
    warmup_cycles: int
    profile: Path | None = None


def serve(pipe: Connection) -> None:
    """Child process main: run each assignment the parent sends until it sends None."""
    while (assignment := pipe.recv()) is not None:
        asyncio.run(_session(assignment, pipe))


async def _session(job: Assignment, pipe: Connection) -> None:
    """Connect and warm up, say ready, wait for the common start, measure, report."""
    outcome = Outcome()
    claimer: Claimer | None = None
    try:
        claimer = await open_claimer(job.system, job.dsn, job.owner)
        for _ in range(job.warmup_cycles):  # plans cached, pool filled, pages in memory
            await _cycle(claimer, outcome, measured=False)
    except Exception:
        outcome.error = traceback.format_exc()
    pipe.send("ready")  # also after a failure: the parent waits for every claimer
    start_at: float = await asyncio.to_thread(pipe.recv)
    try:
        if claimer is not None and outcome.error is None:
            await asyncio.sleep(max(0.0, start_at - time.time()))
            await _measure(claimer, outcome, start_at + job.seconds, job.profile)
    except Exception:
        outcome.error = traceback.format_exc()
    finally:
        if claimer is not None:
            await claimer.close()
    pipe.send(outcome)


async def _measure(claimer: Claimer, outcome: Outcome, end: float, profile: Path | None) -> None:
    profiler = None
    if profile is not None:
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="enabled")
        profiler.start()
    while time.time() < end:
        if not await _cycle(claimer, outcome, measured=True):
            outcome.ran_dry = True
            break
    if profiler is not None and profile is not None:
        profiler.stop()
        await asyncio.to_thread(profile.write_text, profile_text(profiler))


async def _cycle(claimer: Claimer, outcome: Outcome, *, measured: bool) -> bool:
    started = time.perf_counter()
    job = await claimer.claim()
    claimed = time.perf_counter()
    if job is None:
        return False
    job_id, handle = job
    outcome.claimed.append(job_id)
    await claimer.release(handle)
    if measured:
        outcome.cycles += 1
        outcome.claim_seconds.append(claimed - started)
        outcome.finished_at = time.time()
    return True
