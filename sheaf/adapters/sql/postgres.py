"""PostgreSQL: the lease contract is six PL/pgSQL functions, called here by name.

The functions live in `sql/procedures/postgres/` (installed by the migrations); Python only
binds arguments and maps result rows, so the atomic claim is one statement on the server
(`FOR UPDATE SKIP LOCKED`) and the clock is the server's `clock_timestamp()`. Each call runs
in its own transaction, which also scopes the `SET LOCAL lock_timeout` of the acquire.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Executable, Row, TextualSelect, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from sheaf.adapters.sql.schema import UTCDateTime
from sheaf.adapters.sql.store import SqlDocumentStore, shielded
from sheaf.domain.models import (
    AcquireOutcome,
    AcquireResult,
    Dispatch,
    ErrorInfo,
    Lease,
    ReleaseOutcome,
    ReleaseResult,
    Status,
)


def create_postgres_engine(url: URL, pool_size: int) -> AsyncEngine:
    # pre_ping: a pooled connection the server dropped is replaced, not handed out.
    return create_async_engine(url, pool_size=pool_size, pool_pre_ping=True)


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
_CLOCK = text("SELECT clock_timestamp() AS now").columns(now=UTCDateTime)


class PostgresDocumentStore(SqlDocumentStore):
    async def _now(self, conn: AsyncConnection) -> datetime:
        now: datetime = (await conn.execute(_CLOCK)).scalar_one()
        return now

    async def _rows(self, statement: Executable, **arguments: Any) -> list[Row[Any]]:
        async with self._write() as conn:
            return list((await conn.execute(statement, arguments)).all())

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
