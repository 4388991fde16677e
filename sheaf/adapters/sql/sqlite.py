"""SQLite, the embedded default: the lease contract as plain statements under BEGIN IMMEDIATE.

Several worker processes may share one database file. WAL lets readers run beside the one
writer, and every write transaction opens with `BEGIN IMMEDIATE`, which takes the write
lock before the first read: each lease operation's read-decide-write sequence is therefore
atomic across processes (the job `FOR UPDATE SKIP LOCKED` does on PostgreSQL), and a
conflict becomes a wait of at most `BUSY_TIMEOUT_MS` instead of a deferred transaction
failing to upgrade its lock halfway. Read-only transactions begin DEFERRED so they never
queue behind writers.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

from sqlalchemy import (
    ColumnElement,
    Connection,
    Float,
    Integer,
    RowMapping,
    TextClause,
    column,
    delete,
    event,
    func,
    insert,
    literal_column,
    or_,
    select,
    table,
    text,
    update,
)
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from sheaf.adapters.sql.schema import attempts, chunks, documents
from sheaf.adapters.sql.store import (
    DEFAULT_SEARCH_CACHE_BYTES,
    LEASE_CLEARED,
    READ_ONLY,
    SqlDocumentStore,
    close_attempt,
    complete_locked,
    fetch_row,
    filter_clause,
    live_among,
    live_chunks,
    shielded,
    update_document,
)
from sheaf.domain.models import (
    TERMINAL_STATUSES,
    AcquireOutcome,
    AcquireResult,
    AttemptOutcome,
    Dispatch,
    ErrorInfo,
    ErrorKind,
    Lease,
    ReleaseOutcome,
    ReleaseResult,
    SearchFilter,
    Status,
)
from sheaf.domain.search import repeated

WATCH_SECONDS = 0.05  # how often an idle worker looks for commits (`watch_queue`)
BUSY_TIMEOUT_MS = 10_000  # how long a writer waits for another process's write lock
_PRAGMAS = (
    f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",  # first: the others may need the lock
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",  # a committed upload or completion survives power loss
    "PRAGMA foreign_keys = ON",
)
_CLOCK = text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")
# The FTS5 table of migration 0008: external content over `chunks`, kept by triggers.
_FTS = table("chunks_fts", column("rowid", Integer))
_BM25 = literal_column("bm25(chunks_fts)", Float)  # FTS5's BM25: lower (more negative) is better
FTS5_K1 = 1.2  # bm25()'s defaults, as FTS5 sets them
FTS5_IDF_FLOOR = 1e-6
BOUND_SLACK = 1e-9  # a bound rounded down must never prune a chunk that could rank
FTS_FIRST_ROWS = 2000  # matches below which the join ranks at once (`_bm25`)
FTS_FIRST_DEPTH = 100  # how deep FTS5 ranks alone before the liveness check (`_bm25`)
FTS_FIRST_GROWTH = 8
FTS_FIRST_MAX_DEPTH = 6400  # beyond this, rank by the join: the collection is a small part


def create_sqlite_engine(url: URL, pool_size: int) -> AsyncEngine:
    """An engine whose transactions SQLAlchemy begins itself (the SQLAlchemy recipe)."""
    engine = create_async_engine(url, pool_size=pool_size)
    event.listen(engine.sync_engine, "connect", _configure_connection)
    event.listen(engine.sync_engine, "begin", _begin)
    return engine


def _configure_connection(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # the driver must not emit its own BEGIN
    cursor = dbapi_connection.cursor()
    for pragma in _PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


def _begin(conn: Connection) -> None:
    read_only = conn.get_execution_options().get(READ_ONLY, False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


class SqliteDocumentStore(SqlDocumentStore):
    def __init__(
        self, engine: AsyncEngine, *, search_cache_bytes: int = DEFAULT_SEARCH_CACHE_BYTES
    ) -> None:
        super().__init__(engine, search_cache_bytes=search_cache_bytes)
        self._writer = asyncio.Lock()

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction at a time per process, queued here in order.

        SQLite has one writer anyway; without the queue, this process's connections met at
        `BEGIN IMMEDIATE` and waited in SQLite's busy handler, which sleeps 1, 2, 5, 10 ...
        up to 100 ms between tries, so a write freed in 1 ms could be taken 50 ms later.
        Other processes (the API, other workers) still wait in the busy handler."""
        async with self._writer, super()._write() as conn:
            yield conn

    async def _now(self, conn: AsyncConnection) -> datetime:
        raw = (await conn.execute(_CLOCK)).scalar_one()
        return datetime.fromisoformat(raw).replace(tzinfo=UTC)

    async def watch_queue(self, arrived: asyncio.Event, stop: asyncio.Event) -> None:
        """SQLite cannot notify, but every commit writes the database's files: the
        write-ahead log grows or is rewound, or the database file itself changes. A `stat`
        of both every `WATCH_SECONDS` runs no query and takes no lock (measured with `sheaf
        up`: an idle worker uses 0.6% of a core, against 0.4% without a watch and 1.1% when
        it read `PRAGMA data_version` as often). A change wakes the claim loop, so an idle
        worker claims a new upload within about `WATCH_SECONDS` instead of a poll interval.
        Commits that queue nothing (renewals, chunk writes) wake it too: then one claim
        finds nothing, at most once per `WATCH_SECONDS`, and only while the worker has a
        free slot."""
        database = self.engine.url.database
        if not database:
            return
        files = (Path(database), Path(f"{database}-wal"))
        seen = _signature(files)
        while not stop.is_set():
            await asyncio.sleep(WATCH_SECONDS)
            if (now := _signature(files)) != seen:
                seen = now
                arrived.set()

    async def _keyword_ranking(
        self,
        conn: AsyncConnection,
        collection: str,
        terms: Mapping[str, int],
        k: int,
        filters: SearchFilter | None,
    ) -> list[tuple[int, float]]:
        """FTS5's `bm25()` over the chunks matching any term; the full-text match drives
        the query and each match is kept only if it is a live chunk of the collection.

        FTS5 takes its statistics (chunk count, average length, document frequency) over
        the whole FTS table: every collection, and staged or superseded chunks until they
        go. They change scores slightly, never which chunks are found (but see
        `_informative`). `bm25()` sums over the phrases of the match, so a word the query
        says twice is OR-ed in twice and weighs twice (`query_terms`).

        FTS5 scores every chunk its match finds, so a common word would have it score a
        large part of the collection. MaxScore avoids most of that (Turtle and Flood,
        1995), with each term's most possible contribution (`_bound`):
        - when every term is common, the chunks holding all of them are ranked first; if
          the k-th of them beats the most a chunk missing a term could score, that is all;
        - else the chunks holding one of the rarest terms (enough of them to fill the top
          k) are ranked, scored by every term; if the k-th beats the most the other terms
          could add up to, that is all;
        - else the chunks holding only the other terms are ranked apart and the two
          rankings merged.
        Two terms (the usual query) are split exactly instead (`_two_terms`).
        The ranking is the one the plain match of every term gives (a test compares them).
        """
        if len(terms) > 1:
            total, holding = await _statistics(conn, terms)
            terms = _informative(terms, total, holding)
        if len(terms) == 1:  # said n times: n times the score of one phrase, at half the work
            [(term, weight)] = terms.items()
            return await self._bm25(conn, collection, f'"{term}"', k, filters, scale=weight)
        bounds = {term: _bound(total, holding[term], weight) for term, weight in terms.items()}
        rank = functools.partial(self._bm25, conn, collection, k=k, filters=filters)
        if len(terms) == 2:
            return await _two_terms(rank, terms, holding, bounds, k)
        if min(holding[term] for term in terms) >= k:
            found = await rank(_phrases(terms, " AND "), rows=min(holding.values()))
            if _beats(found, k, sum(bounds.values()) - min(bounds.values())):
                return found
        rarest_first = sorted(terms, key=lambda term: -bounds[term])
        cut = next(
            (n for n in range(1, len(terms)) if sum(holding[t] for t in rarest_first[:n]) >= k),
            None,
        )
        if cut is None:
            return await rank(_any(terms), rows=sum(holding[term] for term in terms))
        essential = {term: terms[term] for term in rarest_first[:cut]}
        rest = {term: terms[term] for term in rarest_first[cut:]}
        held = sum(holding[term] for term in essential)
        found = await rank(_essential_match(terms, essential), scale=0.5, rows=held)
        if _beats(found, k, sum(bounds[term] for term in rest)):
            return found
        held = sum(holding[term] for term in rest)
        found += await rank(f"({_any(rest)}) NOT ({_any(essential)})", rows=held)  # ess.: tf 0
        return sorted(found, key=lambda pair: (-pair[1], pair[0]))[:k]

    async def _bm25(
        self,
        conn: AsyncConnection,
        collection: str,
        match: str,
        k: int,
        filters: SearchFilter | None,
        *,
        scale: float = 1.0,
        rows: int | None = None,
    ) -> list[tuple[int, float]]:
        """The k live chunks of the collection that `match` finds, best `bm25()` first,
        scores times `scale` (one half for a match that names every phrase twice); `rows`
        is at most how many chunks the match finds, when the caller knows.

        FTS5 ranks alone first, `FTS_FIRST_DEPTH` deep, and only those rows are checked for
        being live chunks of the collection: joined in the ranking, that check (a lookup of
        the chunk and of its document per match) cost more than `bm25()` itself. When k of
        them pass, they are the top k (every chunk further down scores no more); else the
        ranking goes deeper, and finally to the join. With filters, or a match known to
        find few chunks (their join costs less than the extra statements), the join at once."""
        few = rows is not None and rows < FTS_FIRST_ROWS
        if not few and (filters is None or filters.empty):
            found = await _ranked_alone(conn, collection, match, k)
            if found is not None:
                return [(chunk_id, scale * score) for chunk_id, score in found]
        chunk = chunks.c
        query = (
            select(chunk.id, (-_BM25).label("score"))
            .select_from(_FTS.join(live_chunks(), chunk.id == _FTS.c.rowid))
            .where(_fts_match(match), chunk.collection == collection)
            .order_by(_BM25, chunk.id)
            .limit(k)
        )
        allowed = filter_clause(filters)
        if allowed is not None:
            query = query.where(allowed)
        return [(row.id, scale * float(row.score)) for row in await conn.execute(query)]

    @shielded
    async def acquire_document_lease(
        self, document_id: str, worker_id: str, lease_seconds: float
    ) -> AcquireResult:
        async with self._write() as conn:
            now = await self._now(conn)
            row = await fetch_row(conn, document_id, lock=False)
            if row is None:
                return AcquireResult(AcquireOutcome.MISSING)
            refusal = _refusal(row, now)
            if refusal is not None:
                return refusal
            lease = await _grant(conn, row, worker_id, lease_seconds, now)
        return AcquireResult(
            AcquireOutcome.ACQUIRED,
            lease,
            dispatch_seq=lease.dispatch_seq,
            status=Status.PROCESSING,
        )

    @shielded
    async def renew_document_lease(
        self, document_id: str, lease_token: str, lease_seconds: float, stage: str
    ) -> bool:
        d = documents.c
        async with self._write() as conn:
            now = await self._now(conn)
            held = (d.id == document_id) & (d.lease_token == lease_token)
            renewal = update(documents).where(held, d.status == Status.PROCESSING)
            expires = now + timedelta(seconds=lease_seconds)
            values = {"lease_expires_at": expires, "current_stage": stage, "updated_at": now}
            if (await conn.execute(renewal.values(**values))).rowcount == 0:
                return False
            on_attempt = update(attempts).where(attempts.c.lease_token == lease_token)
            await conn.execute(on_attempt.values(stage=stage))
            return True

    @shielded
    async def release_document_lease(
        self,
        document_id: str,
        lease_token: str,
        outcome: ReleaseOutcome,
        error: ErrorInfo | None = None,
        retry_delay: float = 0.0,
    ) -> ReleaseResult:
        async with self._write() as conn:
            now = await self._now(conn)
            row = await fetch_row(conn, document_id, lock=False)
            if not _holds(row, lease_token):
                return _release_result(row, applied=False)
            if outcome is ReleaseOutcome.SUCCESS:
                await complete_locked(conn, document_id, lease_token, now, None)
            else:
                await _drop_staged(conn, document_id, lease_token)
                assert row is not None  # _holds checked it
                values = _given_back(row, outcome, error, retry_delay, now)
                await update_document(conn, document_id, **values)
                await close_attempt(conn, lease_token, now, AttemptOutcome(outcome.value), error)
            return _release_result(await fetch_row(conn, document_id, lock=False), applied=True)

    @shielded
    async def find_expired_leases(self, limit: int) -> list[Dispatch]:
        if limit <= 0:
            return []
        d = documents.c
        async with self._write() as conn:
            now = await self._now(conn)
            expired = (d.status == Status.PROCESSING) & (d.lease_expires_at <= now)
            query = select(documents).where(expired).order_by(d.lease_expires_at).limit(limit)
            rows = (await conn.execute(query)).mappings().all()
            return [await _reclaim(conn, row, now) for row in rows]

    @shielded
    async def claim_queued_documents(
        self, worker_id: str, lease_seconds: float, limit: int, ready_for: float = 0.0
    ) -> list[Lease]:
        if limit <= 0:
            return []
        d = documents.c
        async with self._write() as conn:
            now = await self._now(conn)
            since = now - timedelta(seconds=max(ready_for, 0.0))
            query = (
                select(documents)
                .where(
                    _ready(now),
                    d.attempts < d.max_attempts,
                    func.coalesce(d.not_before, d.created_at) <= since,
                )
                .order_by(func.coalesce(d.not_before, d.created_at), d.created_at)
                .limit(limit)
            )
            rows = (await conn.execute(query)).mappings().all()
            return [await _grant(conn, row, worker_id, lease_seconds, now) for row in rows]

    @shielded
    async def claim_stale_dispatches(self, older_than: float, limit: int) -> list[Dispatch]:
        if limit <= 0:
            return []
        d = documents.c
        async with self._write() as conn:
            now = await self._now(conn)
            threshold = now - timedelta(seconds=older_than)
            stale = or_(d.last_dispatched_at.is_(None), d.last_dispatched_at <= threshold)
            query = (
                select(d.id, d.collection, d.dispatch_seq, d.not_before)
                .where(_ready(now), stale)
                .order_by(d.last_dispatched_at.nulls_first(), d.created_at)
                .limit(limit)
            )
            rows = (await conn.execute(query)).all()
            bump = {
                "dispatch_seq": d.dispatch_seq + 1,
                "last_dispatched_at": now,
                "updated_at": now,
            }
            ids = [row.id for row in rows]
            await conn.execute(update(documents).where(d.id.in_(ids)).values(**bump))
        return [
            Dispatch(r.id, r.collection, r.dispatch_seq + 1, not_before=r.not_before) for r in rows
        ]


async def _statistics(
    conn: AsyncConnection, terms: Mapping[str, int]
) -> tuple[int, dict[str, int]]:
    """FTS5's own statistics for `bm25()`: the rows of the index, and how many hold each
    term. Each count reads only the index's document list of one term, not the chunks."""
    counts = ", ".join(
        f"(SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH :t{n})" for n in range(len(terms))
    )
    statement = text(f"SELECT (SELECT count(*) FROM chunks_fts_docsize), {counts}")
    phrases = {f"t{n}": f'"{term}"' for n, term in enumerate(terms)}
    found = (await conn.execute(statement, phrases)).one()
    return int(found[0]), {term: int(count) for term, count in zip(terms, found[1:], strict=True)}


async def _two_terms(
    rank: Callable[..., Awaitable[list[tuple[int, float]]]],
    terms: Mapping[str, int],
    holding: Mapping[str, int],
    bounds: Mapping[str, float],
    k: int,
) -> list[tuple[int, float]]:
    """MaxScore over the three parts of two terms' matches: the chunks holding both
    (scored by both), then those holding only the rarer term, then only the commoner, each
    part scored by its one term (the other's tf is 0, so that is its whole score) and
    ranked only while its bound could still beat the k-th score found. Each chunk is
    scored once, with as few phrases as its score needs."""
    rare, common = sorted(terms, key=lambda term: -bounds[term])
    found = await rank(_phrases(terms, " AND "), rows=min(holding.values()))
    for term, other in ((rare, common), (common, rare)):
        if _beats(found, k, bounds[term]):
            break
        alone = await rank(f'"{term}" NOT "{other}"', scale=terms[term], rows=holding[term])
        found = sorted([*found, *alone], key=lambda pair: (-pair[1], pair[0]))[:k]
    return found


def _informative(
    terms: Mapping[str, int], total: int, holding: Mapping[str, int]
) -> Mapping[str, int]:
    """The terms without those in half the indexed chunks or more, unless all are such.

    FTS5's BM25 gives a term in at least half the rows an inverse document frequency of
    1e-6 (it clamps the negative value of its formula), so such a term (a stop word: FTS5
    keeps them) changes no score, yet OR-ing it into the match makes FTS5 score every
    chunk that holds it, which is nearly all of them. Leaving it out changes no ranking
    among the chunks that hold another term; it only stops chunks that hold nothing but
    such terms from being found, and a query of such terms alone still finds them.
    """
    informative = {term: weight for term, weight in terms.items() if 2 * holding[term] < total}
    return informative or terms


def _bound(total: int, holding: int, weight: int) -> float:
    """The most a term can add to a chunk's `bm25()`: FTS5's idf (floored at 1e-6, as
    FTS5 does) times k1 + 1, the limit of its term-frequency factor, per repetition."""
    idf = math.log((total - holding + 0.5) / (holding + 0.5))
    return weight * max(idf, FTS5_IDF_FLOOR) * (FTS5_K1 + 1) * (1 + BOUND_SLACK)


def _essential_match(terms: Mapping[str, int], essential: Mapping[str, int]) -> str:
    """A match that finds the chunks holding an `essential` term and scores every term:
    `(e OR …) AND (e OR … OR r OR r …)`. `bm25()` sums over every phrase of the match,
    so the essential ones, named in both halves, count twice; naming the rest twice as
    well makes every score exactly double the whole match's."""
    second = {term: weight * (1 if term in essential else 2) for term, weight in terms.items()}
    return f"({_any(essential)}) AND ({_any(second)})"


def _beats(found: Sequence[tuple[int, float]], k: int, bound: float) -> bool:
    """Whether `found` fills the top k and its k-th score beats `bound`."""
    return len(found) == k and found[-1][1] > bound


def _any(terms: Mapping[str, int]) -> str:
    return _phrases(terms, " OR ")


def _phrases(terms: Mapping[str, int], operator: str) -> str:
    """Each term as an FTS5 phrase, as often as it weighs, joined by `operator`."""
    return operator.join(f'"{term}"' for term in repeated(terms))  # \w+: no quotes inside


async def _ranked_alone(
    conn: AsyncConnection, collection: str, match: str, k: int
) -> list[tuple[int, float]] | None:
    """The top k of `_bm25` from FTS5's ranking alone, checked for liveness afterwards;
    None when a ranking `FTS_FIRST_MAX_DEPTH` deep still holds fewer than k of them."""
    depth = max(FTS_FIRST_DEPTH, 2 * k)
    rowid = _FTS.c.rowid
    while depth <= FTS_FIRST_MAX_DEPTH:
        query = select(rowid, (-_BM25).label("score")).where(_fts_match(match))
        ranked = (await conn.execute(query.order_by(_BM25, rowid).limit(depth))).all()
        live = await live_among(conn, collection, [row.rowid for row in ranked])
        found = [(row.rowid, float(row.score)) for row in ranked if row.rowid in live]
        if len(found) >= k or len(ranked) < depth:  # k found, or every match seen
            return found[:k]
        depth *= FTS_FIRST_GROWTH
    return None


def _fts_match(match: str) -> TextClause:
    return text("chunks_fts MATCH :match").bindparams(match=match)


def _ready(now: datetime) -> ColumnElement[bool]:
    d = documents.c
    return (d.status == Status.QUEUED) & or_(d.not_before.is_(None), d.not_before <= now)


def _refusal(row: RowMapping, now: datetime) -> AcquireResult | None:
    """Why `row` cannot be leased now, or None when it can (the contract's order of checks)."""
    status, seq = Status(row["status"]), row["dispatch_seq"]
    if status in TERMINAL_STATUSES:
        return AcquireResult(AcquireOutcome.TERMINAL, dispatch_seq=seq, status=status)
    not_before = row["not_before"]
    if status is Status.QUEUED and not_before is not None and not_before > now:
        return AcquireResult(
            AcquireOutcome.NOT_READY, not_before=not_before, dispatch_seq=seq, status=status
        )
    free = status is Status.QUEUED or row["lease_expires_at"] <= now
    if free and row["attempts"] < row["max_attempts"]:
        return None
    return AcquireResult(AcquireOutcome.HELD, dispatch_seq=seq, status=status)


async def _grant(
    conn: AsyncConnection, row: RowMapping, worker_id: str, lease_seconds: float, now: datetime
) -> Lease:
    """Lease a row `_refusal` accepted: new token, one more attempt, a running attempt row."""
    if row["status"] == Status.PROCESSING:  # taking over a lease that expired
        await _retire(conn, row, now)
    lease = Lease(
        document_id=row["id"],
        collection=row["collection"],
        token=str(uuid4()),
        worker_id=worker_id,
        expires_at=now + timedelta(seconds=lease_seconds),
        attempt=row["attempts"] + 1,
        dispatch_seq=row["dispatch_seq"],
        blob_key=row["blob_key"],
        content_type=row["content_type"],
    )
    await update_document(
        conn,
        lease.document_id,
        status=Status.PROCESSING,
        lease_token=lease.token,
        lease_owner=worker_id,
        lease_expires_at=lease.expires_at,
        attempts=lease.attempt,
        started_at=row["started_at"] or now,
        current_stage="queued",
        updated_at=now,
    )
    attempt = {"document_id": lease.document_id, "number": lease.attempt, "started_at": now}
    running = {"outcome": AttemptOutcome.RUNNING, "stage": "queued", "worker_id": worker_id}
    await conn.execute(insert(attempts).values(**attempt, **running, lease_token=lease.token))
    return lease


async def _reclaim(conn: AsyncConnection, row: RowMapping, now: datetime) -> Dispatch:
    """Take an expired lease back: re-queue with a fresh dispatch, or fail when spent."""
    message = await _retire(conn, row, now)
    values: dict[str, Any] = {**LEASE_CLEARED, "updated_at": now, "not_before": None}
    values.update(last_error=message, error_code="lease_expired")
    if row["attempts"] < row["max_attempts"]:
        seq = row["dispatch_seq"] + 1
        values.update(status=Status.QUEUED, error_kind=ErrorKind.TRANSIENT)
        values.update(dispatch_seq=seq, last_dispatched_at=now)
    else:
        seq = row["dispatch_seq"]
        values.update(status=Status.FAILED, error_kind=ErrorKind.PERMANENT)
    await update_document(conn, row["id"], **values)
    return Dispatch(row["id"], row["collection"], seq, status=values["status"])


async def _retire(conn: AsyncConnection, row: RowMapping, now: datetime) -> str:
    """End an expired lease's attempt and drop what it staged; return why it ended."""
    message = (
        f"worker {row['lease_owner']} stopped renewing its lease during stage "
        f"{row['current_stage'] or 'unknown'} (attempt {row['attempts']} of {row['max_attempts']})"
    )
    token = row["lease_token"]
    error = ErrorInfo("lease_expired", message, ErrorKind.TRANSIENT)
    await close_attempt(conn, token, now, AttemptOutcome.EXPIRED, error)
    await _drop_staged(conn, row["id"], token)
    return message


def _given_back(
    row: RowMapping,
    outcome: ReleaseOutcome,
    error: ErrorInfo | None,
    retry_delay: float,
    now: datetime,
) -> dict[str, Any]:
    """The row's new values for a release other than success."""
    values: dict[str, Any] = {**LEASE_CLEARED, "updated_at": now}
    if outcome is ReleaseOutcome.INTERRUPTED:  # not the document's fault: the attempt is free
        return values | {
            "status": Status.QUEUED,
            "attempts": row["attempts"] - 1,
            "not_before": None,
        }
    values["last_error"] = None if error is None else error.message
    values["error_code"] = None if error is None else error.code
    if outcome is ReleaseOutcome.TRANSIENT and row["attempts"] < row["max_attempts"]:
        return values | {
            "status": Status.QUEUED,
            "error_kind": ErrorKind.TRANSIENT,
            "not_before": now + timedelta(seconds=retry_delay),
            "dispatch_seq": row["dispatch_seq"] + 1,
            "last_dispatched_at": now,
        }
    return values | {"status": Status.FAILED, "error_kind": ErrorKind(outcome.value)}


def _holds(row: RowMapping | None, token: str) -> bool:
    return row is not None and row["status"] == Status.PROCESSING and row["lease_token"] == token


def _release_result(row: RowMapping | None, *, applied: bool) -> ReleaseResult:
    if row is None:
        return ReleaseResult(applied=False)
    return ReleaseResult(applied, Status(row["status"]), row["not_before"], row["dispatch_seq"])


async def _drop_staged(conn: AsyncConnection, document_id: str, token: str) -> None:
    c = chunks.c
    await conn.execute(delete(chunks).where(c.document_id == document_id, c.lease_token == token))


def _signature(files: Sequence[Path]) -> tuple[tuple[int, int] | None, ...]:
    """Modification time and size of each file; None for one that does not exist."""
    signature: list[tuple[int, int] | None] = []
    for path in files:
        try:
            status = path.stat()
        except OSError:
            signature.append(None)
            continue
        signature.append((status.st_mtime_ns, status.st_size))
    return tuple(signature)
