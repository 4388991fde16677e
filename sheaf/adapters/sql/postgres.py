"""PostgreSQL: the lease contract is six PL/pgSQL functions, called here by name.

The functions live in `sql/procedures/postgres/` (installed by the migrations); Python only
binds arguments and maps result rows, so the atomic claim is one statement on the server
(`FOR UPDATE SKIP LOCKED`) and the clock is the server's `clock_timestamp()`. Each call is
one round trip in autocommit (`sheaf.adapters.sql.postgres_calls`), which also scopes the
`SET LOCAL lock_timeout` of the acquire to that one statement.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import Executable, Float, Integer, TextClause, bindparam, event, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from sheaf.adapters.sql.postgres_calls import FunctionCalls, replace_closed
from sheaf.adapters.sql.postings import DEFAULT_KEYWORD_CACHE_BYTES, PostingsCache
from sheaf.adapters.sql.schema import UTCDateTime, chunks
from sheaf.adapters.sql.store import (
    DEFAULT_SEARCH_CACHE_BYTES,
    SqlDocumentStore,
    allowed_documents,
    filter_clause,
    lease_lost,
    live_chunks,
    shielded,
)
from sheaf.aio import wait_any, wait_event
from sheaf.domain.models import (
    AcquireOutcome,
    AcquireResult,
    Completion,
    Dispatch,
    ErrorInfo,
    Lease,
    ReleaseOutcome,
    ReleaseResult,
    SearchFilter,
    Status,
)
from sheaf.domain.search import BM25_B, BM25_K1, repeated

log = logging.getLogger(__name__)


def create_postgres_engine(url: URL, pool_size: int) -> AsyncEngine:
    """No `pool_pre_ping` (three round trips per checkout): `replace_closed` catches the
    connections the server closed, for free (see `sheaf.adapters.sql.postgres_calls`)."""
    engine = create_async_engine(url, pool_size=pool_size)
    event.listen(engine.sync_engine, "checkout", replace_closed)
    return engine


# The embedding-cache lookup as one index seek per hash, whatever the statistics say
# (migration 0007, docs/leases.md). With `content_sha256 IN (…)`, or with all three
# equalities in one WHERE, the generic plan of a table that was empty when it was last
# analysed reads every chunk of the collection and model through
# ix_chunks_collection_model (its cost ties with ix_chunks_content's there). Here the
# innermost query has the hash alone to go by (OFFSET 0 keeps the outer filters out of
# it), so only ix_chunks_content can serve it; the first row of the collection and model
# is all the cache needs.
CACHE_LOOKUP = text(
    "SELECT h.hash AS content_sha256, c.embedding "
    "FROM unnest(CAST(:hashes AS VARCHAR[])) AS h (hash) "
    "CROSS JOIN LATERAL ("
    "SELECT same.embedding FROM ("
    "SELECT chunks.embedding, chunks.collection, chunks.model FROM chunks "
    "WHERE chunks.content_sha256 = h.hash OFFSET 0"
    ") AS same WHERE same.collection = :collection AND same.model = :model LIMIT 1"
    ") AS c"
)


def cache_lookup(collection: str, model: str, content_hashes: Sequence[str]) -> TextClause:
    return CACHE_LOOKUP.bindparams(
        bindparam("hashes", list(content_hashes)),
        bindparam("collection", collection),
        bindparam("model", model),
    )


def _call(function: str, arguments: int) -> str:
    """`SELECT * FROM function($1, …)`; only the fixed names below reach the f-string."""
    return f"SELECT * FROM {function}({', '.join(f'${n + 1}' for n in range(arguments))})"


_ACQUIRE = _call("acquire_document_lease", 3)  # document, worker, lease seconds
_RENEW = "SELECT renew_document_lease($1, $2, $3, $4)"  # document, token, seconds, stage
_RELEASE = _call("release_document_lease", 6)  # document, token, outcome, code, error, delay
_FIND_EXPIRED = _call("find_expired_leases", 1)  # limit
_CLAIM_QUEUED = _call("claim_queued_documents_v2", 4)  # worker, seconds, limit, ready for
_CLAIM_STALE = _call("claim_stale_dispatches", 2)  # older than, limit
_COMPLETE = "SELECT complete_document_lease($1, $2, $3, $4, $5, $6)"  # see migration 0005
QUEUED_CHANNEL = "sheaf_queued"  # NOTIFY'd by migration 0006's trigger
LISTEN_RETRY_SECONDS = 1.0
MAX_LISTEN_RETRY_SECONDS = 30.0
_CLOCK = text("SELECT clock_timestamp() AS now").columns(now=UTCDateTime)
# BM25 from the tsvector statistics of migration 0008 (`chunks.text_search`, GIN-indexed):
# the query's lexemes (english configuration, as the column) become an OR tsquery that
# the GIN index answers, each weighing as often as the query says it (its positions in
# the query's own tsvector: the words of `query_terms`, repeated by their weight); among
# the collection's live chunks that match, tf is a lexeme's number of positions, dl a
# chunk's number of distinct lexemes (length(tsvector)), df the
# matching chunks that hold the lexeme, N the collection's live chunks
# (documents.chunk_count) and avgdl the mean dl over the matching chunks (a mean over all
# chunks would read every chunk of the collection on every search). `found` keeps only
# the query's lexemes of a chunk (setweight + ts_filter, in C) before unnest turns them
# into rows; the arithmetic is float8 (numeric's ln is slow). Statistics come from all
# live chunks of the collection; the filters only choose among them (see
# `_keyword_ranking`). Lexemes with a quote or backslash are left out: they cannot be
# quoted in a tsquery.
_KEYWORD = f"""
WITH terms AS (
    SELECT t.lexeme, coalesce(array_length(t.positions, 1), 1)::float8 AS qtf
    FROM unnest(to_tsvector('english'::regconfig, :query)) AS t
    WHERE t.lexeme !~ '[''\\\\]'
),
wanted AS (
    SELECT string_agg(quote_literal(lexeme), ' | ')::tsquery AS query,
        array_agg(lexeme) AS lexemes
    FROM terms
),
matched AS MATERIALIZED (
    SELECT c.id, length(c.text_search)::float8 AS dl,
        ts_filter(setweight(c.text_search, 'A', (SELECT lexemes FROM wanted)), '{{a}}') AS found
    FROM chunks AS c
    JOIN documents AS d
        ON d.id = c.document_id AND d.status = 'completed' AND d.chunks_token = c.lease_token
    WHERE c.collection = :collection
        AND c.text_search @@ (SELECT query FROM wanted)
),
frequencies AS MATERIALIZED (
    SELECT m.id, m.dl, t.lexeme, coalesce(array_length(t.positions, 1), 1)::float8 AS tf
    FROM matched AS m CROSS JOIN LATERAL unnest(m.found) AS t
),
holding AS (SELECT lexeme, count(*)::float8 AS df FROM frequencies GROUP BY lexeme),
sizes AS (
    SELECT
        (SELECT coalesce(sum(chunk_count), 0)::float8 FROM documents
         WHERE collection = :collection AND status = 'completed') AS n,
        (SELECT greatest(avg(dl), 1) FROM matched) AS avgdl
)
SELECT f.id, sum(
    q.qtf * ln(1 + (greatest(s.n, h.df) - h.df + 0.5) / (h.df + 0.5))
    * f.tf * {BM25_K1 + 1} / (f.tf + {BM25_K1} * (1 - {BM25_B} + {BM25_B} * f.dl / s.avgdl))
) AS score
FROM frequencies AS f JOIN holding AS h USING (lexeme) JOIN terms AS q USING (lexeme)
    CROSS JOIN sizes AS s
GROUP BY f.id
"""


class PostgresDocumentStore(SqlDocumentStore):
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        search_cache_bytes: int = DEFAULT_SEARCH_CACHE_BYTES,
        keyword_cache_bytes: int = DEFAULT_KEYWORD_CACHE_BYTES,
    ) -> None:
        super().__init__(engine, search_cache_bytes=search_cache_bytes)
        self._calls = FunctionCalls(engine)
        self._postings = None
        if keyword_cache_bytes > 0:
            self._postings = PostingsCache(keyword_cache_bytes, self._read)

    async def caches_loaded(self) -> None:
        if self._postings is not None:
            await self._postings.loaded()

    async def close(self) -> None:
        if self._postings is not None:
            await self._postings.close()
        await super().close()

    def _cache_lookup(
        self, collection: str, model: str, content_hashes: Sequence[str]
    ) -> Executable:
        return cache_lookup(collection, model, content_hashes)

    async def _now(self, conn: AsyncConnection) -> datetime:
        now: datetime = (await conn.execute(_CLOCK)).scalar_one()
        return now

    async def _rows(self, sql: str, *arguments: Any) -> list[asyncpg.Record]:
        return await self._calls.rows(sql, *arguments)

    async def watch_queue(self, arrived: asyncio.Event, stop: asyncio.Event) -> None:
        """LISTEN for the trigger of migration 0006 on a connection of its own, until `stop`;
        a lost connection is replaced, with back-off, and polling covers the gap."""
        delay = LISTEN_RETRY_SECONDS
        while not stop.is_set():
            try:
                await self._listen(arrived, stop)
                delay = LISTEN_RETRY_SECONDS
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, DBAPIError) as exc:
                log.warning(
                    "not listening for new documents; polling finds them meanwhile",
                    extra={"error": f"{type(exc).__name__}: {exc}", "retry_seconds": delay},
                )
                delay = min(delay * 2, MAX_LISTEN_RETRY_SECONDS)
            await wait_event(stop, delay * random.uniform(0.5, 1.0))

    async def _listen(self, arrived: asyncio.Event, stop: asyncio.Event) -> None:
        async with self.engine.connect() as conn:
            listener: asyncpg.Connection = (await conn.get_raw_connection()).driver_connection
            lost = asyncio.Event()

            def notified(*_: object) -> None:
                arrived.set()

            def closed(*_: object) -> None:
                lost.set()

            listener.add_termination_listener(closed)
            await listener.add_listener(QUEUED_CHANNEL, notified)
            try:
                arrived.set()  # whatever became ready while nobody listened
                await wait_any([stop, lost], None)
            finally:
                listener.remove_termination_listener(closed)
                if lost.is_set() or listener.is_closed():
                    await conn.invalidate()
                else:
                    await listener.remove_listener(QUEUED_CHANNEL, notified)
            if lost.is_set():
                raise OSError("the listening connection was closed")

    async def _keyword_ranking(
        self,
        conn: AsyncConnection,
        collection: str,
        terms: Mapping[str, int],
        k: int,
        filters: SearchFilter | None,
    ) -> list[tuple[int, float]]:
        """The collection's postings in memory score the query (`PostingsCache`) when they
        fit its budget; else every live match is scored in `_KEYWORD`. Either way the
        filters then choose among them."""
        query_text = " ".join(repeated(terms))
        if self._postings is not None:
            documents_allowed = await allowed_documents(conn, collection, filters)
            ranked = await self._postings.search(conn, collection, query_text, k, documents_allowed)
            if ranked is not None:
                return ranked
        scored = (
            text(_KEYWORD)
            .bindparams(query=query_text, collection=collection)
            .columns(id=Integer, score=Float)
            .subquery("scored")
        )
        query = (
            select(scored.c.id, scored.c.score)
            .select_from(scored.join(live_chunks(), chunks.c.id == scored.c.id))
            .order_by(scored.c.score.desc(), scored.c.id)
            .limit(k)
        )
        allowed = filter_clause(filters)
        if allowed is not None:
            query = query.where(allowed)
        return [(row.id, float(row.score)) for row in await conn.execute(query)]

    @shielded
    async def acquire_document_lease(
        self, document_id: str, worker_id: str, lease_seconds: float
    ) -> AcquireResult:
        (row,) = await self._rows(_ACQUIRE, document_id, worker_id, float(lease_seconds))
        outcome = AcquireOutcome(row["outcome"])
        status = None if row["status"] is None else Status(row["status"])
        if outcome is not AcquireOutcome.ACQUIRED:
            return AcquireResult(outcome, None, row["not_before"], row["dispatch_seq"], status)
        lease = _lease(row, document_id=document_id, worker_id=worker_id)
        return AcquireResult(outcome, lease, dispatch_seq=row["dispatch_seq"], status=status)

    @shielded
    async def renew_document_lease(
        self, document_id: str, lease_token: str, lease_seconds: float, stage: str
    ) -> bool:
        (row,) = await self._rows(_RENEW, document_id, lease_token, float(lease_seconds), stage)
        return bool(row[0])

    @shielded
    async def release_document_lease(
        self,
        document_id: str,
        lease_token: str,
        outcome: ReleaseOutcome,
        error: ErrorInfo | None = None,
        retry_delay: float = 0.0,
    ) -> ReleaseResult:
        (row,) = await self._rows(
            _RELEASE,
            document_id,
            lease_token,
            outcome.value,
            None if error is None else error.code,
            None if error is None else error.message,
            float(retry_delay),
        )
        status = None if row["status"] is None else Status(row["status"])
        return ReleaseResult(row["applied"], status, row["not_before"], row["dispatch_seq"])

    @shielded
    async def complete(self, lease: Lease, completion: Completion) -> None:
        """The completion transaction as one function call (migration 0005)."""
        (row,) = await self._rows(
            _COMPLETE,
            lease.document_id,
            lease.token,
            completion.page_count,
            completion.embedding_model,
            completion.embedding_dimensions,
            json.dumps(completion.stage_seconds),
        )
        if not row[0]:
            raise lease_lost(lease.document_id)

    @shielded
    async def find_expired_leases(self, limit: int) -> list[Dispatch]:
        return [_dispatch(row) for row in await self._rows(_FIND_EXPIRED, limit)]

    @shielded
    async def claim_queued_documents(
        self, worker_id: str, lease_seconds: float, limit: int, ready_for: float = 0.0
    ) -> list[Lease]:
        rows = await self._rows(
            _CLAIM_QUEUED, worker_id, float(lease_seconds), limit, float(ready_for)
        )
        return [_lease(row, document_id=row["document_id"], worker_id=worker_id) for row in rows]

    @shielded
    async def claim_stale_dispatches(self, older_than: float, limit: int) -> list[Dispatch]:
        rows = await self._rows(_CLAIM_STALE, float(older_than), limit)
        return [_dispatch(row) for row in rows]


def _lease(row: asyncpg.Record, *, document_id: str, worker_id: str) -> Lease:
    return Lease(
        document_id=document_id,
        collection=row["collection"],
        token=row["lease_token"],
        worker_id=worker_id,
        expires_at=row["lease_expires_at"],
        attempt=row["attempt"],
        dispatch_seq=row["dispatch_seq"],
        blob_key=row["blob_key"],
        content_type=row["content_type"],
    )


def _dispatch(row: asyncpg.Record) -> Dispatch:
    return Dispatch(
        document_id=row["document_id"],
        collection=row["collection"],
        dispatch_seq=row["dispatch_seq"],
        status=Status(row["status"]),
        not_before=row["not_before"],
    )
