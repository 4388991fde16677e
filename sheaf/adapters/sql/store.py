"""What the SQL backends share: repository operations, chunk writes, completion and search.

`SqlDocumentStore` holds one SQLAlchemy async engine. Its subclasses supply the database
clock and the six lease operations (`sqlite.py`: statements under `BEGIN IMMEDIATE`;
`postgres.py`: the PL/pgSQL functions of `sql/procedures/postgres/`). Every transaction
here reads the database clock once, after it holds the row it changes, and binds that
value: Python never decides a time, and SQLite compares timestamps in one storage format.
Database errors leave this module only as `sheaf.errors` types (see `translate_error`).
"""

from __future__ import annotations

import asyncio
import functools
import json
from abc import ABC, abstractmethod
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from dataclasses import fields
from datetime import datetime, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt
from sqlalchemy import (
    ColumnElement,
    Executable,
    Join,
    RowMapping,
    Select,
    and_,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sheaf.adapters.sql.schema import attempts, documents
from sheaf.adapters.sql.schema import chunks as chunk_table
from sheaf.adapters.sql.vectors import VectorCache, best_of
from sheaf.domain.chunking import content_hash
from sheaf.domain.models import (
    AcquireResult,
    Activity,
    Attempt,
    AttemptOutcome,
    Chunk,
    Cleanup,
    Completion,
    Dispatch,
    Document,
    EmbeddedChunk,
    EndedAttempt,
    ErrorInfo,
    ErrorKind,
    InFlight,
    Lease,
    NewDocument,
    ReleaseOutcome,
    ReleaseResult,
    SearchFilter,
    SearchHit,
    Stats,
    Status,
)
from sheaf.domain.search import LIKE_ESCAPE, bm25_rank, glob_to_like, query_terms
from sheaf.errors import LeaseLost, SheafError, StoreUnavailable, TransientError

# Execution option marking transactions that only read (SQLite then begins DEFERRED).
READ_ONLY = "sheaf_read_only"
LEASE_CLEARED: dict[str, Any] = {"lease_owner": None, "lease_token": None, "lease_expires_at": None}
INDEX_STAGE = "index"  # the pipeline stage in which chunks are written
SEARCH_BATCH_ROWS = 2048  # bounds the memory of one streamed search step
DEFAULT_SEARCH_CACHE_BYTES = 512 * 1024 * 1024  # ~130,000 vectors of 1,024 dimensions
_KEYS_PER_QUERY = 500  # stays far below every driver's bound-parameter limit
# SQL Server: the two lookups by key seek their index whatever the statistics say (0007).
CACHE_LOOKUP_HINT = "WITH (INDEX (ix_chunks_content), FORCESEEK)"
DUPLICATE_CHECK_HINT = "WITH (INDEX (ix_documents_collection_sha256), FORCESEEK)"

_CONFLICT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})  # serialization, deadlock, lock
# Server full, shutting down, database missing; plus every code of classes 08 and 28
# (connection failure, authentication) - all met while connecting, none a bug in a query.
_UNAVAILABLE_SQLSTATES = frozenset({"53300", "57P01", "57P02", "57P03", "3D000"})
_UNAVAILABLE_CLASSES = ("08", "28")
_SQLITE_BUSY = ("database is locked", "database is busy", "database table is locked")


def translate_error(exc: BaseException) -> SheafError | None:
    """The `sheaf.errors` type a driver error means, or None when it is a bug to surface.

    Unreachable or lost connections are `StoreUnavailable`; conflicts that succeed when
    tried again (deadlock, serialization failure, lock timeout, SQLite busy) are
    `TransientError`. Everything else (constraint violations, SQL errors) stays as is.
    """
    if isinstance(exc, sa_exc.DBAPIError):
        state = getattr(exc.orig, "sqlstate", None) or ""
        message = str(exc.orig)
        if exc.connection_invalidated:
            return StoreUnavailable(f"database connection failed: {message}")
        if "unable to open database file" in message:
            return StoreUnavailable(f"database file cannot be opened: {message}")
        return translate_state(state, message)
    if isinstance(exc, OSError):  # refused, reset, timed out while connecting
        return StoreUnavailable(f"database unreachable: {exc}")
    if isinstance(exc, sa_exc.TimeoutError):
        return TransientError("no database connection free in the pool", code="pool_timeout")
    return None


def translate_state(state: str, message: str) -> SheafError | None:
    """The `sheaf.errors` type of a database error by its SQLSTATE (and, for SQLite, which
    has none, by its message); None when it is a bug to surface."""
    if state in _UNAVAILABLE_SQLSTATES or state.startswith(_UNAVAILABLE_CLASSES):
        return StoreUnavailable(f"database connection failed: {message}")
    if state in _CONFLICT_SQLSTATES or any(m in message.lower() for m in _SQLITE_BUSY):
        return TransientError(f"database conflict: {message}", code="database_conflict")
    return None


@contextmanager
def translated_errors() -> Iterator[None]:
    try:
        yield
    except (sa_exc.DBAPIError, sa_exc.TimeoutError, OSError) as exc:
        error = translate_error(exc)
        if error is None:
            raise
        raise error from exc


P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S", bound="SqlDocumentStore")
CLOSE_WAIT_SECONDS = 10.0  # how long `close` lets operations already started finish


def shielded(
    method: Callable[Concatenate[S, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """Let a started operation finish its transaction even when the caller is cancelled.

    Cancelling SQLAlchemy mid-statement invalidates the connection; with aiosqlite the
    closed connection can linger as a zombie that keeps SQLite's write lock until the
    garbage collector runs, stalling every process that shares the file (a worker
    cancels its heartbeat mid-renewal all the time). Shielded, the transaction commits or
    rolls back normally, and the caller still receives its `CancelledError` at once.
    """

    @functools.wraps(method)
    async def run(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        task = asyncio.ensure_future(method(self, *args, **kwargs))
        self._in_flight.add(task)
        task.add_done_callback(self._settled)
        return await asyncio.shield(task)

    return run


class SqlDocumentStore(ABC):
    """`sheaf.ports.DocumentStore` on one SQL database; build it with `open_store(url)`."""

    def __init__(
        self, engine: AsyncEngine, *, search_cache_bytes: int = DEFAULT_SEARCH_CACHE_BYTES
    ) -> None:
        self._engine = engine
        self._reader = engine.execution_options(**{READ_ONLY: True})
        self._in_flight: set[asyncio.Future[Any]] = set()
        self._vectors = VectorCache(search_cache_bytes) if search_cache_bytes > 0 else None

    def _settled(self, task: asyncio.Future[Any]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled():
            task.exception()  # a caller that was cancelled no longer reads the outcome

    @property
    def engine(self) -> AsyncEngine:
        """For tools and tests that need raw SQL; services use the port methods only."""
        return self._engine

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction (`BEGIN IMMEDIATE` on SQLite), committed on success."""
        with translated_errors():
            async with self._engine.begin() as conn:
                yield conn

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        with translated_errors():
            async with self._reader.begin() as conn:
                yield conn

    @abstractmethod
    async def _now(self, conn: AsyncConnection) -> datetime:
        """The database clock, read inside the caller's transaction."""

    # -- the lease contract: one implementation per dialect -------------------------------

    @abstractmethod
    async def acquire_document_lease(
        self, document_id: str, worker_id: str, lease_seconds: float
    ) -> AcquireResult: ...

    @abstractmethod
    async def renew_document_lease(
        self, document_id: str, lease_token: str, lease_seconds: float, stage: str
    ) -> bool: ...

    @abstractmethod
    async def release_document_lease(
        self,
        document_id: str,
        lease_token: str,
        outcome: ReleaseOutcome,
        error: ErrorInfo | None = None,
        retry_delay: float = 0.0,
    ) -> ReleaseResult: ...

    @abstractmethod
    async def find_expired_leases(self, limit: int) -> list[Dispatch]: ...

    @abstractmethod
    async def claim_queued_documents(
        self, worker_id: str, lease_seconds: float, limit: int, ready_for: float = 0.0
    ) -> list[Lease]: ...

    @abstractmethod
    async def claim_stale_dispatches(self, older_than: float, limit: int) -> list[Dispatch]: ...

    # -- writes fenced by the lease token -------------------------------------------------

    @shielded
    async def write_chunks(self, lease: Lease, chunks: Sequence[EmbeddedChunk]) -> None:
        """Stage chunks under the lease, and record `index` as the stage the worker is in:
        the heartbeat reports stages only every few seconds, and this transaction holds
        the row anyway (the stage's UPDATE is also the lease check, one statement fewer
        in a transaction that holds SQLite's write lock)."""
        async with self._write() as conn:
            await record_stage(conn, lease.document_id, lease.token, INDEX_STAGE)
            if chunks:
                await conn.execute(insert(chunk_table), [_chunk_row(lease, c) for c in chunks])

    @shielded
    async def complete(self, lease: Lease, completion: Completion) -> None:
        async with self._write() as conn:
            await lock_leased_row(conn, lease.document_id, lease.token)
            now = await self._now(conn)
            await complete_locked(conn, lease.document_id, lease.token, now, completion)

    # -- repository ---------------------------------------------------------------------

    @shielded
    async def create_document(self, doc: NewDocument) -> tuple[Document, bool]:
        try:
            async with self._write() as conn:
                existing = await _live_twin(conn, doc.collection, doc.sha256)
                if existing is not None:
                    return existing, False
                await conn.execute(insert(documents).values(**_new_row(doc, await self._now(conn))))
                created = await fetch_document(conn, doc.id, history=False)
        except sa_exc.IntegrityError:
            # A concurrent upload of the same content committed first: answer with its row.
            async with self._read() as conn:
                twin = await _live_twin(conn, doc.collection, doc.sha256)
            if twin is None:
                raise
            return twin, False
        assert created is not None  # inserted in this very transaction
        return created, True

    @shielded
    async def get_document(self, document_id: str, *, history: bool = True) -> Document | None:
        async with self._read() as conn:
            return await fetch_document(conn, document_id, history=history)

    @shielded
    async def list_documents(
        self,
        collection: str | None,
        status: Status | None,
        after: str | None,
        limit: int,
    ) -> list[Document]:
        d = documents.c
        query = select(documents).order_by(d.created_at.desc(), d.id.desc()).limit(limit)
        query = query.where(d.status != Status.DELETED if status is None else d.status == status)
        if collection is not None:
            query = query.where(d.collection == collection)
        async with self._read() as conn:
            if after is not None:
                cursor = await conn.execute(select(d.created_at, d.id).where(d.id == after))
                anchor = cursor.one_or_none()
                if anchor is None:  # an unknown cursor names no position: nothing follows it
                    return []
                older = d.created_at < anchor.created_at
                query = query.where(
                    or_(older, (d.created_at == anchor.created_at) & (d.id < after))
                )
            rows = (await conn.execute(query)).mappings().all()
        return [to_document(row) for row in rows]

    @shielded
    async def delete_document(self, document_id: str) -> Document | None:
        async with self._write() as conn:
            row = await fetch_row(conn, document_id, lock=True)
            if row is None:
                return None
            if row["status"] != Status.DELETED:
                now = await self._now(conn)
                tombstone = {"status": Status.DELETED, "deleted_at": now, "updated_at": now}
                await update_document(conn, document_id, **tombstone, **LEASE_CLEARED)
                if row["lease_token"] is not None:
                    await close_attempt(conn, row["lease_token"], now, AttemptOutcome.SUPERSEDED)
            return await fetch_document(conn, document_id, history=True)

    @shielded
    async def retry_document(self, document_id: str) -> Document | None:
        async with self._write() as conn:
            row = await fetch_row(conn, document_id, lock=True)
            if row is None:
                return None
            if row["status"] == Status.FAILED:
                now = await self._now(conn)
                await update_document(conn, document_id, **_retried(row, now))
            return await fetch_document(conn, document_id, history=True)

    @shielded
    async def collection_counts(self) -> dict[str, dict[str, int]]:
        d = documents.c
        query = (
            select(d.collection, d.status, func.count())
            .where(d.status != Status.DELETED)
            .group_by(d.collection, d.status)
        )
        found: dict[str, dict[str, int]] = {}
        async with self._read() as conn:
            for collection, status, count in await conn.execute(query):
                found.setdefault(collection, {})[status] = count
        return found

    @shielded
    async def stats(self) -> Stats:
        d = documents.c
        counts = {status.value: 0 for status in Status}
        async with self._read() as conn:
            now = await self._now(conn)
            for status, count in await conn.execute(
                select(d.status, func.count()).group_by(d.status)
            ):
                counts[status] = count
            ready = (d.status == Status.QUEUED) & or_(d.not_before.is_(None), d.not_before <= now)
            oldest_query = select(func.min(func.coalesce(d.not_before, d.created_at))).where(ready)
            oldest = (await conn.execute(oldest_query)).scalar_one()
            live = (d.status == Status.PROCESSING) & (d.lease_expires_at > now)
            held = (await conn.execute(select(func.count()).where(live))).scalar_one()
        age = None if oldest is None else max(0.0, (now - oldest).total_seconds())
        return Stats(counts=counts, oldest_ready_age_seconds=age, leases_held=held)

    @shielded
    async def activity(self, window_seconds: float, limit: int) -> Activity:
        """Two indexed reads in one transaction: attempts ended in the window
        (`ix_attempts_ended_at`), and the processing rows with their running attempt."""
        async with self._read() as conn:
            now = await self._now(conn)
            since = now - timedelta(seconds=window_seconds)
            ended = (await conn.execute(_ended_query(since, limit + 1))).all()
            running = (await conn.execute(_in_flight_query(limit))).all()
        return Activity(
            now=now,
            ended=tuple(_ended(row) for row in ended[:limit]),
            in_flight=tuple(_in_flight(row) for row in running),
            complete=len(ended) <= limit,
        )

    @shielded
    async def pending_cleanups(self, limit: int) -> list[Cleanup]:
        d = documents.c
        query = (
            select(d.id, d.blob_key)
            .where(d.status == Status.DELETED, d.purged_at.is_(None))
            .order_by(d.deleted_at, d.id)
            .limit(limit)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [Cleanup(document_id=row.id, blob_key=row.blob_key) for row in rows]

    @shielded
    async def purge_document(self, document_id: str) -> None:
        """Only tombstones are purged: a live document's chunks are never touched here."""
        async with self._write() as conn:
            row = await fetch_row(conn, document_id, lock=True)
            if row is None or row["status"] != Status.DELETED:
                return
            await conn.execute(delete(chunk_table).where(chunk_table.c.document_id == document_id))
            await update_document(conn, document_id, purged_at=await self._now(conn))

    @shielded
    async def known_blob_keys(self, keys: Sequence[str]) -> set[str]:
        d = documents.c
        wanted = sorted(set(keys))
        found: set[str] = set()
        async with self._read() as conn:
            for start in range(0, len(wanted), _KEYS_PER_QUERY):
                batch = wanted[start : start + _KEYS_PER_QUERY]
                query = select(d.blob_key).where(d.blob_key.in_(batch), d.purged_at.is_(None))
                found.update((await conn.execute(query)).scalars())
        return found

    @shielded
    async def document_chunks(self, document_id: str) -> list[Chunk]:
        c = chunk_table.c
        query = (
            select(c.ordinal, c.text, c.page_start, c.page_end)
            .select_from(_live_chunks())
            .where(c.document_id == document_id)
            .order_by(c.ordinal)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [Chunk(r.ordinal, r.text, r.page_start, r.page_end) for r in rows]

    @shielded
    async def cached_embeddings(
        self, collection: str, model: str, content_hashes: Sequence[str]
    ) -> dict[str, tuple[float, ...]]:
        wanted = sorted(set(content_hashes))
        found: dict[str, tuple[float, ...]] = {}
        async with self._read() as conn:
            for start in range(0, len(wanted), _KEYS_PER_QUERY):
                query = self._cache_lookup(
                    collection, model, wanted[start : start + _KEYS_PER_QUERY]
                )
                for row in await conn.execute(query):
                    vector = np.frombuffer(row.embedding, dtype="<f4")
                    found[row.content_sha256] = tuple(vector.tolist())  # one C loop
        return found

    @shielded
    async def search(
        self,
        collection: str,
        vector: Sequence[float],
        model: str,
        k: int,
        filters: SearchFilter | None = None,
    ) -> list[SearchHit]:
        """Exact cosine over every live chunk: from the process's vector cache when the
        space fits its budget (`sheaf.adapters.sql.vectors`), else streamed from the
        database `SEARCH_BATCH_ROWS` vectors at a time. Filters narrow the cache's rows
        to the allowed documents' blocks, or the streamed query's rows."""
        query = np.asarray(vector, dtype=np.float32)
        if k <= 0 or query.size == 0:
            return []
        key = (collection, model, int(query.size))
        allowed = filter_clause(filters)
        async with self._read() as conn:
            ranked = None
            if self._vectors is not None:
                documents_allowed = await allowed_documents(conn, collection, filters)
                ranked = await self._vectors.search(
                    conn, key, query, k, _live_chunks(), documents_allowed
                )
            if ranked is None:
                ranked = await _scan(conn, key, query, k, allowed)
            return await _hits(conn, ranked)

    @shielded
    async def keyword_search(
        self, collection: str, query: str, k: int, filters: SearchFilter | None = None
    ) -> list[SearchHit]:
        """BM25 over the live chunks, by the dialect's full-text index (`_keyword_ranking`)."""
        terms = query_terms(query)
        if k <= 0 or not terms:
            return []
        async with self._read() as conn:
            ranked = await self._keyword_ranking(conn, collection, terms, k, filters)
            return await _hits(conn, ranked)

    @abstractmethod
    async def _keyword_ranking(
        self,
        conn: AsyncConnection,
        collection: str,
        terms: Mapping[str, int],
        k: int,
        filters: SearchFilter | None,
    ) -> list[tuple[int, float]]:
        """The k best (chunk id, BM25 score) pairs of live chunks, best first."""

    @shielded
    async def collection_exists(self, collection: str) -> bool:
        d = documents.c
        query = select(d.id).where(d.collection == collection).limit(1)
        async with self._read() as conn:
            return (await conn.execute(query)).first() is not None

    def _cache_lookup(
        self, collection: str, model: str, content_hashes: Sequence[str]
    ) -> Executable:
        """The embedding-cache statement: `content_sha256` and `embedding` per stored hash."""
        return cache_lookup(collection, model, content_hashes)

    async def watch_queue(self, arrived: asyncio.Event, stop: asyncio.Event) -> None:
        """No wake-ups here: PostgreSQL and SQLite override this; SQL Server workers poll, or
        are woken by Service Bus."""
        return

    @shielded
    async def ping(self) -> None:
        async with self._read() as conn:
            await conn.execute(text("SELECT 1"))

    async def caches_loaded(self) -> None:
        """Return once the search caches load nothing in the background (benchmarks and
        tests wait for this before they measure the cached path)."""
        return  # only PostgreSQL's keyword postings load in the background

    async def close(self) -> None:
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=CLOSE_WAIT_SECONDS)
        await self._engine.dispose()


# -- helpers shared with the dialect modules ------------------------------------------------


async def fetch_row(conn: AsyncConnection, document_id: str, *, lock: bool) -> RowMapping | None:
    """The `documents` row; `lock` takes its row lock (a no-op under SQLite's write lock)."""
    query = select(documents).where(documents.c.id == document_id)
    if lock:
        query = query.with_for_update()
    return (await conn.execute(query)).mappings().one_or_none()


async def fetch_document(
    conn: AsyncConnection, document_id: str, *, history: bool
) -> Document | None:
    row = await fetch_row(conn, document_id, lock=False)
    if row is None:
        return None
    past: list[Attempt] = []
    if history:  # chronological: numbers restart after a retry, ids never do
        query = select(attempts).where(attempts.c.document_id == document_id)
        rows = (await conn.execute(query.order_by(attempts.c.id))).mappings()
        past = [_attempt(r) for r in rows]
    return to_document(row, past)


def lease_lost(document_id: str) -> LeaseLost:
    return LeaseLost(f"the lease on document {document_id} is no longer held by this token")


def _leased(document_id: str, token: str) -> ColumnElement[bool]:
    """The document's row while `token` holds its lease."""
    d = documents.c
    return (d.id == document_id) & (d.lease_token == token) & (d.status == Status.PROCESSING)


async def lock_leased_row(conn: AsyncConnection, document_id: str, token: str) -> None:
    """Lock the row while `token` still holds its lease, else raise `LeaseLost`."""
    query = select(documents.c.id).where(_leased(document_id, token))
    if (await conn.execute(query.with_for_update())).first() is None:
        raise lease_lost(document_id)


async def record_stage(conn: AsyncConnection, document_id: str, token: str, stage: str) -> None:
    """Set the stage on the row while `token` still holds its lease (the UPDATE locks the
    row, as `lock_leased_row` does), else raise `LeaseLost`; and on its attempt, as a
    renewal does."""
    leased = _leased(document_id, token)
    staged = await conn.execute(update(documents).where(leased).values(current_stage=stage))
    if staged.rowcount != 1:
        raise lease_lost(document_id)
    a = attempts.c
    await conn.execute(update(attempts).where(a.lease_token == token).values(stage=stage))


async def complete_locked(
    conn: AsyncConnection,
    document_id: str,
    token: str,
    now: datetime,
    completion: Completion | None,
) -> None:
    """The completion transaction's body, for a row already locked under `token`.

    Chunks staged under any other token go, so only this attempt's chunks become live.
    """
    c = chunk_table.c
    await conn.execute(
        delete(chunk_table).where(c.document_id == document_id, c.lease_token != token)
    )
    count_query = select(func.count()).where(c.document_id == document_id)
    chunk_count = (await conn.execute(count_query)).scalar_one()
    values: dict[str, Any] = {
        "status": Status.COMPLETED,
        "completed_at": now,
        "updated_at": now,
        "chunk_count": chunk_count,
        "chunks_token": token,
        "current_stage": None,
        "last_error": None,
        "error_code": None,
        "error_kind": None,
        **LEASE_CLEARED,
    }
    if completion is not None:
        values["page_count"] = completion.page_count
        values["embedding_model"] = completion.embedding_model
        values["embedding_dimensions"] = completion.embedding_dimensions
    await update_document(conn, document_id, **values)
    stage_seconds = None if completion is None else completion.stage_seconds
    await close_attempt(conn, token, now, AttemptOutcome.COMPLETED, stage_seconds=stage_seconds)


async def close_attempt(
    conn: AsyncConnection,
    token: str,
    now: datetime,
    outcome: AttemptOutcome,
    error: ErrorInfo | None = None,
    *,
    stage_seconds: dict[str, float] | None = None,
) -> None:
    """End the attempt row of `token` (only while it is still running)."""
    a = attempts.c
    values: dict[str, Any] = {"outcome": outcome, "ended_at": now}
    if error is not None:
        values.update(error_code=error.code, error=error.message)
    if stage_seconds is not None:
        values["stage_seconds"] = json.dumps(stage_seconds)
    running = (a.lease_token == token) & (a.outcome == AttemptOutcome.RUNNING)
    await conn.execute(update(attempts).where(running).values(**values))


def to_document(row: RowMapping, history: Sequence[Attempt] = ()) -> Document:
    kind = row["error_kind"]
    return Document(
        **{name: row[name] for name in _PLAIN_DOCUMENT_FIELDS},
        status=Status(row["status"]),
        error_kind=ErrorKind(kind) if kind else None,
        history=tuple(history),
    )


_PLAIN_DOCUMENT_FIELDS = tuple(
    f.name for f in fields(Document) if f.name not in {"status", "error_kind", "history"}
)


def _attempt(row: RowMapping) -> Attempt:
    seconds = row["stage_seconds"]
    return Attempt(
        number=row["number"],
        worker_id=row["worker_id"],
        lease_token=row["lease_token"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        outcome=AttemptOutcome(row["outcome"]),
        error_code=row["error_code"],
        error=row["error"],
        stage=row["stage"],
        stage_seconds=json.loads(seconds) if seconds else {},
    )


def _ended_query(since: datetime, limit: int) -> Select[Any]:
    a, d = attempts.c, documents.c
    return (
        select(a.document_id, a.number, d.max_attempts, a.worker_id, a.started_at, a.ended_at)
        .add_columns(a.outcome, a.error_code, a.stage_seconds)
        .select_from(attempts.join(documents, d.id == a.document_id))
        .where(a.ended_at >= since)
        .order_by(a.ended_at.desc(), a.id.desc())
        .limit(limit)
    )


def _in_flight_query(limit: int) -> Select[Any]:
    a, d = attempts.c, documents.c
    return (
        select(d.id, d.collection, d.filename, d.lease_owner, d.current_stage, a.started_at)
        .add_columns(d.updated_at, d.lease_expires_at)
        .select_from(documents.join(attempts, a.lease_token == d.lease_token))
        .where(d.status == Status.PROCESSING)
        .order_by(a.started_at, d.id)
        .limit(limit)
    )


def _ended(row: Any) -> EndedAttempt:
    return EndedAttempt(
        document_id=row.document_id,
        number=row.number,
        max_attempts=row.max_attempts,
        worker_id=row.worker_id,
        started_at=row.started_at,
        ended_at=row.ended_at,
        outcome=AttemptOutcome(row.outcome),
        error_code=row.error_code,
        stage_seconds=json.loads(row.stage_seconds) if row.stage_seconds else {},
    )


def _in_flight(row: Any) -> InFlight:
    return InFlight(
        document_id=row.id,
        collection=row.collection,
        filename=row.filename,
        worker_id=row.lease_owner,
        stage=row.current_stage,
        started_at=row.started_at,
        heartbeat_at=row.updated_at,
        lease_expires_at=row.lease_expires_at,
    )


async def update_document(conn: AsyncConnection, document_id: str, **values: Any) -> None:
    await conn.execute(update(documents).where(documents.c.id == document_id).values(**values))


def cache_lookup(collection: str, model: str, content_hashes: Sequence[str]) -> Select[str, bytes]:
    """Stored vectors by content hash: a seek on ix_chunks_content per hash."""
    c = chunk_table.c
    return (
        select(c.content_sha256, c.embedding)
        .where(c.content_sha256.in_(content_hashes), c.collection == collection, c.model == model)
        .with_hint(chunk_table, CACHE_LOOKUP_HINT, dialect_name="mssql")
    )


def duplicate_check(collection: str, sha256: str) -> Select[str]:
    """The live document with this content in this collection: a seek on
    ix_documents_collection_sha256, whatever the status binding."""
    d = documents.c
    return (
        select(d.id)
        .where(d.collection == collection, d.sha256 == sha256, d.status != Status.DELETED)
        .with_hint(documents, DUPLICATE_CHECK_HINT, dialect_name="mssql")
    )


async def _live_twin(conn: AsyncConnection, collection: str, sha256: str) -> Document | None:
    query = duplicate_check(collection, sha256)
    twin_id = (await conn.execute(query)).scalar_one_or_none()
    return None if twin_id is None else await fetch_document(conn, twin_id, history=False)


def _new_row(doc: NewDocument, now: datetime) -> dict[str, Any]:
    return {
        **{f.name: getattr(doc, f.name) for f in fields(NewDocument)},
        "status": Status.QUEUED,
        "attempts": 0,
        "dispatch_seq": 1,
        "last_dispatched_at": now,
        "chunk_count": 0,
        "created_at": now,
        "updated_at": now,
    }


def _retried(row: RowMapping, now: datetime) -> dict[str, Any]:
    """A failed row back to its first attempt, announced by a fresh dispatch."""
    return {
        "status": Status.QUEUED,
        "attempts": 0,
        "not_before": None,
        "dispatch_seq": row["dispatch_seq"] + 1,
        "last_dispatched_at": now,
        "updated_at": now,
        "current_stage": None,
        "last_error": None,
        "error_code": None,
        "error_kind": None,
    }


def _chunk_row(lease: Lease, item: EmbeddedChunk) -> dict[str, Any]:
    vector = np.asarray(item.vector, dtype="<f4")
    return {
        "document_id": lease.document_id,
        "collection": lease.collection,
        "lease_token": lease.token,
        "ordinal": item.chunk.ordinal,
        "page_start": item.chunk.page_start,
        "page_end": item.chunk.page_end,
        "text": item.chunk.text,
        "model": item.model,
        "dimensions": int(vector.size),
        "embedding": vector.tobytes(),
        "content_sha256": content_hash(item.chunk.text),
    }


def live_chunks() -> Join:
    """Chunks joined to their document, limited to those its completion made visible."""
    return _live_chunks()


async def scan_keyword_ranking(
    conn: AsyncConnection,
    collection: str,
    terms: Mapping[str, int],
    k: int,
    filters: SearchFilter | None,
) -> list[tuple[int, float]]:
    """BM25 without a full-text index: the fallback for SQL Server without Full-Text Search.

    The live chunks of the collection whose text contains a term (LIKE: a scan of the
    collection) are read and scored by `sheaf.domain.search.bm25_rank` (whole words, no
    stemming; N and the mean length from the collection's live chunks). Exact BM25, at the
    cost of reading every candidate's text on every search.
    """
    c = chunk_table.c
    in_collection = c.collection == collection
    sizes = select(func.count(), func.avg(func.char_length(c.text) * 1.0))
    n, avgdl = (await conn.execute(sizes.select_from(_live_chunks()).where(in_collection))).one()
    contains = [
        func.lower(c.text).like(f"%{glob_to_like(term)}%", escape=LIKE_ESCAPE) for term in terms
    ]
    allowed = filter_clause(filters)
    marked = case((allowed, 1), else_=0) if allowed is not None else literal(1)
    query = (
        select(c.id, c.text, marked.label("allowed"))
        .select_from(_live_chunks())
        .where(in_collection, or_(*contains))
    )
    texts: dict[int, str] = {}
    permitted: set[int] = set()
    for row in await conn.execute(query):
        texts[row.id] = row.text
        if row.allowed:
            permitted.add(row.id)
    ranked = bm25_rank(texts, terms, int(n), float(avgdl or 0.0), permitted.__contains__)
    return ranked[:k]


def _live_chunks() -> Join:
    """Chunks joined to their document, limited to those its completion made visible."""
    d = documents.c
    return chunk_table.join(
        documents,
        (d.id == chunk_table.c.document_id)
        & (d.status == Status.COMPLETED)
        & (d.chunks_token == chunk_table.c.lease_token),
    )


def filter_clause(filters: SearchFilter | None) -> ColumnElement[bool] | None:
    """The condition on `documents` that `filters` sets; None when it sets none."""
    if filters is None or filters.empty:
        return None
    d = documents.c
    conditions: list[ColumnElement[bool]] = []
    if filters.document_ids:
        conditions.append(d.id.in_(filters.document_ids))
    if filters.filename is not None:
        pattern = glob_to_like(filters.filename).lower()
        conditions.append(func.lower(d.filename).like(pattern, escape=LIKE_ESCAPE))
    if filters.uploaded_from is not None:
        conditions.append(d.created_at >= filters.uploaded_from)
    if filters.uploaded_to is not None:
        conditions.append(d.created_at <= filters.uploaded_to)
    return and_(true(), *conditions)


async def allowed_documents(
    conn: AsyncConnection, collection: str, filters: SearchFilter | None
) -> set[str] | None:
    """The completed documents of the collection that `filters` allow; None when it sets
    no condition (every document is allowed)."""
    allowed = filter_clause(filters)
    if allowed is None:
        return None
    d = documents.c
    query = select(d.id).where(d.collection == collection, d.status == Status.COMPLETED, allowed)
    return set((await conn.execute(query)).scalars())


async def _scan(
    conn: AsyncConnection,
    key: tuple[str, str, int],
    query: npt.NDArray[np.float32],
    k: int,
    allowed: ColumnElement[bool] | None = None,
) -> list[tuple[int, float]]:
    """Exact top k over the live chunks streamed in one query, one batch in memory at once."""
    best = _TopK(k)
    statement = scan_statement(key)
    if allowed is not None:
        statement = statement.where(allowed)
    result = await conn.stream(statement)
    async for rows in result.partitions():
        chunk_ids, embeddings = zip(*rows, strict=True)  # unpacked: no attribute per row
        ids = np.array(chunk_ids, dtype=np.int64)
        matrix = np.frombuffer(b"".join(embeddings), dtype="<f4")
        best.offer(ids, _cosine(matrix.reshape(len(rows), key[2]), query))
    return best.ranked()


def scan_statement(key: tuple[str, str, int]) -> Select[tuple[int, bytes]]:
    """Every live vector of (collection, model, dimensions), fetched in batches."""
    collection, model, dimensions = key
    c = chunk_table.c
    return (
        select(c.id, c.embedding)
        .select_from(_live_chunks())
        .where(c.collection == collection, c.model == model, c.dimensions == dimensions)
        .order_by(c.id)  # ix_chunks_collection_model: rows in table order, not hash order
        .execution_options(yield_per=SEARCH_BATCH_ROWS)
    )


async def _hits(conn: AsyncConnection, ranked: list[tuple[int, float]]) -> list[SearchHit]:
    """The ranked chunks as hits, in rank order, leaving out any no longer live.

    Two lookups by key (`hit_chunks`, `hit_owners`), not one join: joined, SQLite's planner
    walked every completed document and probed its chunks (19 ms for 50 hits at 100,000
    chunks, growing with the collection) instead of fetching 50 chunks by primary key."""
    if not ranked:
        return []
    rows = {r.id: r for r in await conn.execute(hit_chunks([i for i, _ in ranked]))}
    owners = await _owners(conn, rows.values())
    hits = []
    for chunk_id, score in ranked:
        r = rows.get(chunk_id)
        owner = _live_owner(r, owners)
        if r is None or owner is None:
            continue  # deleted, superseded or not completed: not live
        hits.append(
            SearchHit(
                r.document_id, owner.filename, r.ordinal, r.page_start, r.page_end, score, r.text
            )
        )
    return hits


async def live_among(conn: AsyncConnection, collection: str, chunk_ids: Sequence[int]) -> set[int]:
    """Which of these chunks are live chunks of the collection, by the same two lookups by
    key as `_hits` (for a few hundred ids, far cheaper than joining every candidate)."""
    if not chunk_ids:
        return set()
    c = chunk_table.c
    # The collection compared here, not in the WHERE clause: there it led SQLite to the
    # collection's index, a scan of every chunk, instead of the keys.
    query = select(c.id, c.document_id, c.lease_token, c.collection).where(c.id.in_(chunk_ids))
    rows = [r for r in await conn.execute(query) if r.collection == collection]
    owners = await _owners(conn, rows)
    return {r.id for r in rows if _live_owner(r, owners) is not None}


async def _owners(conn: AsyncConnection, rows: Iterable[Any]) -> dict[str, Any]:
    found = await conn.execute(hit_owners({r.document_id for r in rows}))
    return {r.id: r for r in found}


def _live_owner(row: Any, owners: Mapping[str, Any]) -> Any:
    """The document of a chunk row if the chunk is live (its document completed with the
    chunk's token: the condition `_live_chunks` joins on), else None."""
    owner = owners.get(row.document_id) if row is not None else None
    if owner is None or owner.status != Status.COMPLETED or owner.chunks_token != row.lease_token:
        return None
    return owner


def hit_chunks(chunk_ids: Sequence[int]) -> Select[Any]:
    """The chunks of a ranking, by primary key."""
    c = chunk_table.c
    columns = (c.id, c.document_id, c.lease_token, c.ordinal, c.page_start, c.page_end, c.text)
    return select(*columns).where(c.id.in_(chunk_ids))


def hit_owners(document_ids: Iterable[str]) -> Select[Any]:
    """These documents, by primary key, with their status and the token of their live
    chunks (the status is compared by the caller: in the WHERE clause it led SQLite to its
    status index, every completed document, instead of the key)."""
    d = documents.c
    return select(d.id, d.filename, d.status, d.chunks_token).where(d.id.in_(sorted(document_ids)))


def _cosine(matrix: npt.NDArray[np.float32], query: npt.NDArray[np.float32]) -> Any:
    norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix)) * np.linalg.norm(query)
    dots = matrix @ query
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


class _TopK:
    """The k best (chunk id, score) pairs seen so far; memory stays O(k + one batch)."""

    def __init__(self, k: int) -> None:
        self._k = k
        self._ids = np.empty(0, dtype=np.int64)
        self._scores = np.empty(0, dtype=np.float32)

    def offer(self, ids: npt.NDArray[np.int64], scores: npt.NDArray[np.float32]) -> None:
        all_ids = np.concatenate([self._ids, ids])
        all_scores = np.concatenate([self._scores, scores])
        keep = np.lexsort((all_ids, -all_scores))[: self._k]  # ties: the lowest ids win
        self._ids, self._scores = all_ids[keep], all_scores[keep]

    def ranked(self) -> list[tuple[int, float]]:
        """Best first; equal scores in chunk-id order so results are deterministic."""
        return best_of(self._ids, self._scores, self._k)
