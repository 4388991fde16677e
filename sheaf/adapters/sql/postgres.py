"""PostgreSQL: the lease contract is six PL/pgSQL functions, called here by name.

The functions live in `sql/procedures/postgres/` (installed by the migrations); Python only
binds arguments and maps result rows, so the atomic claim is one statement on the server
(`FOR UPDATE SKIP LOCKED`) and the clock is the server's `clock_timestamp()`.

Each function is one statement, atomic on its own, so it runs in autocommit: one round trip
per lease operation, where `BEGIN`, the call and `COMMIT` took three (and a pre-ping on
checkout three more). The statement's implicit transaction also scopes the
`SET LOCAL lock_timeout` of the acquire. No round trip checks a pooled connection either:
a connection the server closed while it sat in the pool is already marked closed by
asyncpg and is replaced at checkout (`_replace_closed`); one lost between checkout and
reply is discarded and the call sent once more on a fresh connection (`_rows`).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Executable, Row, TextualSelect, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from sheaf.adapters.sql.schema import UTCDateTime
from sheaf.adapters.sql.store import (
    DEFAULT_SEARCH_CACHE_BYTES,
    SqlDocumentStore,
    shielded,
    translated_errors,
)
from sheaf.domain.models import (
    AcquireOutcome,
    AcquireResult,
    Completion,
    Dispatch,
    ErrorInfo,
    Lease,
    ReleaseOutcome,
    ReleaseResult,
    Status,
)
from sheaf.errors import LeaseLost


def create_postgres_engine(url: URL, pool_size: int) -> AsyncEngine:
    """No `pool_pre_ping`: its ping costs three round trips per checkout (BEGIN, `;`,
    ROLLBACK under asyncpg); `_replace_closed` catches the same dead connections for free."""
    engine = create_async_engine(url, pool_size=pool_size)
    event.listen(engine.sync_engine, "checkout", _replace_closed)
    return engine


def _replace_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """A pooled connection the server closed (restart, `pg_terminate_backend`, idle
    timeout) is replaced, never handed out: asyncpg marked it closed when the event loop
    read the server's goodbye, so no round trip is needed to know. The pool answers a
    `DisconnectionError` here by opening a new connection."""
    if dbapi_connection.driver_connection.is_closed():
        raise sa_exc.DisconnectionError("the server closed this pooled connection")


def _call(function: str, *arguments: str) -> TextualSelect:
    """`SELECT * FROM function(:a, :b)` with its timestamp columns read as aware UTC."""
    params = ", ".join(f":{name}" for name in arguments)
    # Only the fixed names above reach this f-string; values are always bound.
    return text(f"SELECT * FROM {function}({params})").columns(
        not_before=UTCDateTime, lease_expires_at=UTCDateTime
    )


_ACQUIRE = _call("acquire_document_lease", "document_id", "worker_id", "lease_seconds")
_RENEW = text("SELECT renew_document_lease(:document_id, :lease_token, :lease_seconds, :stage)")
_RELEASE = _call(
    "release_document_lease",
    "document_id",
    "lease_token",
    "outcome",
    "error_code",
    "error",
    "retry_delay",
)
_FIND_EXPIRED = _call("find_expired_leases", "limit")
_CLAIM_QUEUED = _call(
    "claim_queued_documents_v2", "worker_id", "lease_seconds", "limit", "ready_for_seconds"
)
_CLAIM_STALE = _call("claim_stale_dispatches", "older_than", "limit")
_COMPLETE = text(
    "SELECT complete_document_lease(:document_id, :lease_token, :page_count, "
    ":embedding_model, :embedding_dimensions, :stage_seconds)"
)
_CLOCK = text("SELECT clock_timestamp() AS now").columns(now=UTCDateTime)


class _ConnectionLost(Exception):
    """The connection broke under a statement; it has been discarded."""

    def __init__(self, error: sa_exc.DBAPIError) -> None:
        super().__init__(str(error))
        self.error = error


def _connection_broken(exc: sa_exc.DBAPIError) -> bool:
    """Whether `exc` condemns the connection rather than the statement.

    Besides disconnects SQLAlchemy recognises, any asyncpg interface error counts: after a
    `pg_terminate_backend` asyncpg has been seen to answer "cannot switch to state …;
    another operation is in progress" on a connection it still calls open, and such a
    connection must be discarded, never reused.
    """
    return exc.connection_invalidated or isinstance(exc, sa_exc.InterfaceError)


class PostgresDocumentStore(SqlDocumentStore):
    def __init__(
        self, engine: AsyncEngine, *, search_cache_bytes: int = DEFAULT_SEARCH_CACHE_BYTES
    ) -> None:
        super().__init__(engine, search_cache_bytes=search_cache_bytes)
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def _now(self, conn: AsyncConnection) -> datetime:
        now: datetime = (await conn.execute(_CLOCK)).scalar_one()
        return now

    async def _rows(self, statement: Executable, **arguments: Any) -> list[Row[Any]]:
        """The rows of one lease function, called in autocommit: one round trip.

        A connection lost under the call is discarded and the call sent once more on a
        fresh one. Sending it again is safe: a statement whose connection died before its
        commit changed nothing, and in the rare case that the commit happened but its
        reply was lost, the second call meets the state the first left, exactly as a
        worker's own retry would (a renewal renews again; a release or acquire finds the
        lease already gone or held and says so; a claim leases other rows, and the lease
        nobody learnt of expires and is recovered by the sweeper).
        """
        with translated_errors():
            try:
                return await self._autocommit_rows(statement, arguments)
            except _ConnectionLost as lost:
                try:
                    return await self._autocommit_rows(statement, arguments)
                except _ConnectionLost as again:
                    raise again.error from lost.error

    async def _autocommit_rows(
        self, statement: Executable, arguments: dict[str, Any]
    ) -> list[Row[Any]]:
        async with self._autocommit.connect() as conn:
            try:
                return list((await conn.execute(statement, arguments)).all())
            except sa_exc.DBAPIError as exc:
                if not _connection_broken(exc):
                    raise
                if not conn.invalidated:  # never back into the pool, whatever its state
                    await conn.invalidate()
                raise _ConnectionLost(exc) from exc

    @shielded
    async def acquire_document_lease(
        self, document_id: str, worker_id: str, lease_seconds: float
    ) -> AcquireResult:
        (row,) = await self._rows(
            _ACQUIRE,
            document_id=document_id,
            worker_id=worker_id,
            lease_seconds=float(lease_seconds),
        )
        outcome = AcquireOutcome(row.outcome)
        status = None if row.status is None else Status(row.status)
        if outcome is not AcquireOutcome.ACQUIRED:
            return AcquireResult(outcome, None, row.not_before, row.dispatch_seq, status)
        lease = Lease(
            document_id=document_id,
            collection=row.collection,
            token=row.lease_token,
            worker_id=worker_id,
            expires_at=row.lease_expires_at,
            attempt=row.attempt,
            dispatch_seq=row.dispatch_seq,
            blob_key=row.blob_key,
            content_type=row.content_type,
        )
        return AcquireResult(outcome, lease, dispatch_seq=row.dispatch_seq, status=status)

    @shielded
    async def renew_document_lease(
        self, document_id: str, lease_token: str, lease_seconds: float, stage: str
    ) -> bool:
        arguments = {"lease_seconds": float(lease_seconds), "stage": stage}
        (row,) = await self._rows(
            _RENEW, document_id=document_id, lease_token=lease_token, **arguments
        )
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
            document_id=document_id,
            lease_token=lease_token,
            outcome=outcome.value,
            error_code=None if error is None else error.code,
            error=None if error is None else error.message,
            retry_delay=float(retry_delay),
        )
        status = None if row.status is None else Status(row.status)
        return ReleaseResult(row.applied, status, row.not_before, row.dispatch_seq)

    @shielded
    async def complete(self, lease: Lease, completion: Completion) -> None:
        """The completion transaction as one function call (migration 0005)."""
        (row,) = await self._rows(
            _COMPLETE,
            document_id=lease.document_id,
            lease_token=lease.token,
            page_count=completion.page_count,
            embedding_model=completion.embedding_model,
            embedding_dimensions=completion.embedding_dimensions,
            stage_seconds=json.dumps(completion.stage_seconds),
        )
        if not row[0]:
            raise LeaseLost(
                f"the lease on document {lease.document_id} is no longer held by this token"
            )

    @shielded
    async def find_expired_leases(self, limit: int) -> list[Dispatch]:
        return [_dispatch(row) for row in await self._rows(_FIND_EXPIRED, limit=limit)]

    @shielded
    async def claim_queued_documents(
        self, worker_id: str, lease_seconds: float, limit: int, ready_for: float = 0.0
    ) -> list[Lease]:
        rows = await self._rows(
            _CLAIM_QUEUED,
            worker_id=worker_id,
            lease_seconds=float(lease_seconds),
            limit=limit,
            ready_for_seconds=float(ready_for),
        )
        return [
            Lease(
                document_id=row.document_id,
                collection=row.collection,
                token=row.lease_token,
                worker_id=worker_id,
                expires_at=row.lease_expires_at,
                attempt=row.attempt,
                dispatch_seq=row.dispatch_seq,
                blob_key=row.blob_key,
                content_type=row.content_type,
            )
            for row in rows
        ]

    @shielded
    async def claim_stale_dispatches(self, older_than: float, limit: int) -> list[Dispatch]:
        rows = await self._rows(_CLAIM_STALE, older_than=float(older_than), limit=limit)
        return [_dispatch(row) for row in rows]


def _dispatch(row: Row[Any]) -> Dispatch:
    return Dispatch(
        document_id=row.document_id,
        collection=row.collection,
        dispatch_seq=row.dispatch_seq,
        status=Status(row.status),
        not_before=row.not_before,
    )
