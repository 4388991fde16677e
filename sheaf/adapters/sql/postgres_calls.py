"""One round trip per PL/pgSQL function call, over the store's own connection pool.

Each lease function is one statement and atomic on its own, so it runs in autocommit:
`BEGIN`, the call and `COMMIT` took three round trips, and `pool_pre_ping` three more
(BEGIN, `;`, ROLLBACK under asyncpg). The call goes straight to the pooled connection's
asyncpg driver (`FunctionCalls.rows`): SQLAlchemy's statement and result machinery cost
more client CPU per call than the driver and the server together (about 0.25 of 0.35 ms),
and a lease call has nothing to compile or map. asyncpg prepares each statement once per
connection and runs it outside any transaction block: autocommit. The pool, its size and
its checkout events stay SQLAlchemy's, shared with every other store operation.

Dead connections are never reused:
- one the server closed while it sat in the pool (restart, `pg_terminate_backend`, idle
  timeout) was already marked closed by asyncpg when the event loop read the server's
  goodbye; `replace_closed`, a checkout listener, has the pool open a new one instead, no
  round trip needed;
- one lost under a call is invalidated (closed, never returned to the pool) and the call
  sent once more on a fresh connection; a second loss is `StoreUnavailable`. Any asyncpg
  interface error condemns the connection: after a `pg_terminate_backend` asyncpg has been
  seen to answer "cannot switch to state …; another operation is in progress" on a
  connection it still called open.

Sending a call again is safe under the lease contract: a statement whose connection died
before its commit changed nothing, and in the rare case that the commit happened but the
reply was lost, the second call meets the state the first left, exactly as a worker's own
retry would (a renewal renews again; a release or acquire finds the lease gone or held and
says so; a claim leases other rows, and the lease nobody learnt of expires and is
recovered by the sweeper).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from sheaf.adapters.sql.store import translate_error, translate_state
from sheaf.errors import SheafError, StoreUnavailable

_BROKEN_STATES = ("08", "57P01", "57P02", "57P03")  # connection exceptions; shutdown


def replace_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Checkout listener: a pooled connection the server closed is never handed out."""
    if dbapi_connection.driver_connection.is_closed():
        raise sa_exc.DisconnectionError("the server closed this pooled connection")


class ConnectionLost(Exception):
    """The connection broke under a call; it has been discarded."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class FunctionCalls:
    """Autocommit calls on `engine`'s pooled asyncpg connections; see the module docstring."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def rows(self, sql: str, *arguments: Any) -> list[asyncpg.Record]:
        """The rows of `sql` (positional `$n` parameters); errors as `sheaf.errors` types."""
        try:
            try:
                return await self._once(sql, arguments)
            except ConnectionLost as lost:
                try:
                    return await self._once(sql, arguments)
                except ConnectionLost as again:
                    raise again.error from lost.error
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            error = _translate(exc)
            if error is None:
                raise
            raise error from exc
        except (sa_exc.DBAPIError, sa_exc.TimeoutError) as exc:  # from the pool's checkout
            translated = translate_error(exc)
            if translated is None:
                raise
            raise translated from exc

    async def _once(self, sql: str, arguments: Sequence[Any]) -> list[asyncpg.Record]:
        pooled = await self._engine.raw_connection()
        try:
            driver: asyncpg.Connection = pooled.driver_connection
            try:
                rows: list[asyncpg.Record] = await driver.fetch(sql, *arguments)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                if driver.is_closed() or _broken(exc):
                    await greenlet_spawn(pooled.invalidate, exc)
                    raise ConnectionLost(exc) from exc
                raise
            return rows
        finally:
            await greenlet_spawn(pooled.close)  # back to the pool, unless invalidated


def _broken(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.InterfaceError | OSError):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return state.startswith(_BROKEN_STATES)


def _translate(exc: BaseException) -> SheafError | None:
    if isinstance(exc, asyncpg.InterfaceError | OSError):
        return StoreUnavailable(f"database connection failed: {exc}")
    return translate_state(getattr(exc, "sqlstate", None) or "", str(exc))
