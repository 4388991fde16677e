"""SQL Server and Azure SQL: the lease contract is T-SQL procedures, each call one EXEC.

The procedures live in `sql/procedures/mssql/` (installed by the migrations); Python binds
arguments and maps result rows, so each claim is one `UPDATE … WITH (UPDLOCK, READPAST,
ROWLOCK, READCOMMITTEDLOCK) … OUTPUT … INTO` on the server and the clock is the server's
`SYSUTCDATETIME()`; a completion is one EXEC too (`complete_document_lease`, 0007). Each
procedure owns its transaction, so it runs on a connection of the procedures' own pool,
in autocommit from the moment it is opened (its CATCH block may then roll back without
unbalancing a caller's transaction), with every argument bound with its type: one round
trip per call. The shared operations of `store.py` run in ordinary transactions.

What this module adds to SQLAlchemy's `mssql+aioodbc` dialect:
- `with_for_update()` becomes `WITH (UPDLOCK, ROWLOCK)`; stock SQLAlchemy drops it on SQL
  Server, which would leave `store.py`'s fenced writes (chunks, completion) unlocked;
- strings are bound as NVARCHAR, matching the NVARCHAR columns of the migrations, so text in
  any script arrives intact and comparisons with indexed columns stay seeks;
- SQL Server error numbers become Sheaf errors, and failures are retried with backoff and
  jitter where that is safe (see `RetryPolicy`).

Error numbers come from the driver's message (pyodbc reports "… (1205) (SQLExecDirectW)").
"""

from __future__ import annotations

import asyncio
import enum
import functools
import json
import random
import re
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import (
    Executable,
    Float,
    Integer,
    Row,
    Select,
    TextualSelect,
    Unicode,
    UnicodeText,
    bindparam,
    event,
    select,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.mssql.base import MSSQLCompiler
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.types import TypeEngine

from sheaf.adapters.sql.mssql_auth import AccessTokens, require_tokenless_url, token_connector
from sheaf.adapters.sql.schema import UTCDateTime, chunks
from sheaf.adapters.sql.store import (
    DEFAULT_SEARCH_CACHE_BYTES,
    SqlDocumentStore,
    fetch_row,
    filter_clause,
    lease_lost,
    live_chunks,
    scan_keyword_ranking,
    shielded,
    translate_error,
    update_document,
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
    SearchFilter,
    Status,
)
from sheaf.domain.retry import retry_delay
from sheaf.errors import ConfigError, SheafError, StoreUnavailable, TransientError

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

T = TypeVar("T")
P = ParamSpec("P")

# -- SQL Server errors ------------------------------------------------------------------------


class Failure(enum.Enum):
    """What a SQL Server error means for the caller, whatever its number."""

    DEADLOCK = "deadlock"  # chosen as deadlock victim: the transaction was rolled back
    LOCK_TIMEOUT = "lock_timeout"  # SET LOCK_TIMEOUT expired waiting for a lock
    THROTTLED = "throttled"  # Azure SQL refused the request before running it
    CONNECTION = "connection"  # the connection or the database went away mid-way
    LOGIN = "login"  # the server refused the sign-in


DEADLOCK_ERRORS = frozenset({1205})
LOCK_TIMEOUT_ERRORS = frozenset({1222})
# Resource governance: worker or session limits (10928, 10929, 10936), "service busy"
# (40501), not enough resources (49918-49920), no lock memory left (1204: the statement
# failed and XACT_ABORT rolled its transaction back).
THROTTLED_ERRORS = frozenset({1204, 10928, 10929, 10936, 40501, 49918, 49919, 49920})
# Azure failover and reconfiguration (40197, 40613, 4221, 40143), a service error to be
# tried again (40540), a database being moved or resumed (4060, 42108, 42109), a session
# the service ended (40549 long transaction, 40550 too many locks), a server in script
# upgrade mode refusing logins for a moment (18401), the network (64, 121, 233, 10053,
# 10054, 10060, 11001), and FreeTDS's own connection errors (20002-20009).
CONNECTION_ERRORS = frozenset(
    {4060, 4221, 40143, 40197, 40540, 40549, 40550, 40613, 42108, 42109, 18401}
    | {64, 121, 233, 10053, 10054, 10060, 11001}
    | {20002, 20003, 20004, 20006, 20009}
)
LOGIN_ERRORS = frozenset({18452, 18456})
_CHECKED_IN_ORDER = (  # a message may carry several numbers: the first match decides
    (DEADLOCK_ERRORS, Failure.DEADLOCK),
    (LOCK_TIMEOUT_ERRORS, Failure.LOCK_TIMEOUT),
    (THROTTLED_ERRORS, Failure.THROTTLED),
    (CONNECTION_ERRORS, Failure.CONNECTION),  # before LOGIN: Azure pairs 4060 with 18456
    (LOGIN_ERRORS, Failure.LOGIN),
)
_CONNECTION_SQLSTATES = ("08", "HYT00", "HYT01")  # connection class; login/connect timeout
# pyodbc appends each diagnostic record's native error as "(N)", followed by the ODBC
# function name, the next record ("; [SQLSTATE] …") or the end of the message.
_NATIVE_ERROR = re.compile(r"\((-?\d+)\)(?=\s*(?:\(SQL\w*\)|;|$))")


def server_errors(exc: BaseException) -> frozenset[int]:
    """The SQL Server (or FreeTDS) error numbers a driver error reports."""
    _, message = _diagnostics(exc)
    return frozenset(int(number) for number in _NATIVE_ERROR.findall(message))


def classify(exc: BaseException | None) -> Failure | None:
    """The `Failure` a driver error is, or None when it is not one (a bug, a constraint)."""
    if isinstance(exc, OSError):
        return Failure.CONNECTION
    if not isinstance(exc, sa_exc.DBAPIError):
        return None
    numbers = server_errors(exc)
    for known, failure in _CHECKED_IN_ORDER:
        if numbers & known:
            return failure
    state, _ = _diagnostics(exc)
    if exc.connection_invalidated or state.startswith(_CONNECTION_SQLSTATES):
        return Failure.CONNECTION
    if state == "28000":
        return Failure.LOGIN
    return None


def translate_mssql_error(exc: BaseException) -> SheafError | None:
    """The `sheaf.errors` type a driver error means; None leaves it as it is."""
    failure = classify(exc)
    if failure is None:
        return translate_error(exc)  # the shared rules: pool timeout, and nothing else here
    _, message = _diagnostics(exc)
    if failure is Failure.DEADLOCK:
        return TransientError(f"deadlock victim: {message}", code="database_conflict")
    if failure is Failure.LOCK_TIMEOUT:
        return TransientError(f"lock wait timed out: {message}", code="lock_timeout")
    if failure is Failure.THROTTLED:
        return TransientError(f"SQL Server is throttling: {message}", code="database_busy")
    return StoreUnavailable(f"SQL Server unavailable: {message}")


def _diagnostics(exc: BaseException) -> tuple[str, str]:
    """(SQLSTATE, message) of a pyodbc error, possibly wrapped by SQLAlchemy."""
    error = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    args: tuple[Any, ...] = getattr(error, "args", ())
    if len(args) >= 2 and isinstance(args[0], str):
        return args[0], str(args[1])
    return "", str(error)


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except (sa_exc.DBAPIError, sa_exc.TimeoutError, OSError) as exc:
        error = translate_mssql_error(exc)
        if error is None:
            raise
        raise error from exc


class ConnectFailed(StoreUnavailable):
    """No connection could be opened; the connect's own retries are already spent."""


# -- retries ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backoff:
    attempts: int  # tries in all, the first one included
    base_seconds: float
    cap_seconds: float

    def delay(self, attempt: int, rng: random.Random) -> float:
        return retry_delay(attempt, self.base_seconds, self.cap_seconds, rng)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Which failures are tried again, how often, and how long apart.

    Connecting is always safe to repeat: it is retried through throttling and outages.
    A statement is rerun when the server guarantees it changed nothing: a deadlock victim's
    transaction was rolled back, and a throttled request never ran. After a lost
    connection the outcome is unknown (the commit may have happened), so only operations
    that are safe to repeat (`idempotent`: reads, renewals) run again.
    """

    conflicts: Backoff = Backoff(attempts=5, base_seconds=0.05, cap_seconds=1.0)
    # Azure failovers and reconfigurations take seconds to about a minute.
    outages: Backoff = Backoff(attempts=6, base_seconds=1.0, cap_seconds=20.0)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)

    def on_connect(self, failure: Failure | None) -> Backoff | None:
        return self.outages if failure in (Failure.THROTTLED, Failure.CONNECTION) else None

    def on_statement(self, failure: Failure | None, *, idempotent: bool) -> Backoff | None:
        if failure is Failure.DEADLOCK:
            return self.conflicts
        if failure is Failure.THROTTLED or (failure is Failure.CONNECTION and idempotent):
            return self.outages
        return None


async def with_retries(
    operation: Callable[[], Awaitable[T]], policy: RetryPolicy, *, idempotent: bool
) -> T:
    """Run `operation` (one whole transaction) again while `policy` allows it."""
    attempt = 1
    while True:
        try:
            return await operation()
        except ConnectFailed:
            raise  # already retried while connecting
        except SheafError as error:
            backoff = policy.on_statement(classify(error.__cause__), idempotent=idempotent)
            if backoff is None or attempt >= backoff.attempts:
                raise
            await policy.sleep(backoff.delay(attempt, policy.rng))
            attempt += 1


# -- the engine ---------------------------------------------------------------------------------

# What indexes on computed columns and filtered indexes require of every session that
# writes the table; Microsoft's ODBC drivers set it, FreeTDS may not.
_ANSI_SESSION = (
    "SET ANSI_NULLS, ANSI_PADDING, ANSI_WARNINGS, ARITHABORT, CONCAT_NULL_YIELDS_NULL, "
    "QUOTED_IDENTIFIER ON; SET NUMERIC_ROUNDABORT OFF"
)


def validate_mssql_url(url: URL) -> None:
    if "driver" not in url.query and "odbc_connect" not in url.query:
        raise ConfigError(
            "a SQL Server URL names its ODBC driver: ?driver=ODBC+Driver+18+for+SQL+Server "
            "or ?driver=FreeTDS&TDS_Version=7.4"
        )


# Connections are replaced after 20 minutes: below the Azure SQL gateway's 30-minute idle
# timeout, and below every Entra ID access token's lifetime (60 minutes or more), which the
# server checks at sign-in only. No pre-ping: a connection that died anyway fails its first
# statement, is invalidated, and the failure is retried as `RetryPolicy` allows.
POOL_RECYCLE_SECONDS = 1200


def create_mssql_engine(
    url: URL,
    pool_size: int,
    credential: AsyncTokenCredential | None = None,
    *,
    autocommit: bool = False,
) -> AsyncEngine:
    """The `mssql+aioodbc` engine; with `credential`, it signs in with Entra ID tokens.

    `autocommit`: the engine of the lease procedures, each of which owns its transaction.
    Its connections are put in autocommit once, when opened, and never switched back and
    forth; nothing is rolled back when they return to the pool (a connection whose EXEC
    failed is discarded instead, see `MssqlDocumentStore._call_once`).
    """
    options: dict[str, Any] = {
        "pool_size": pool_size,
        "pool_recycle": POOL_RECYCLE_SECONDS,
        "deprecate_large_types": True,  # NVARCHAR(max)/VARBINARY(max), never TEXT/IMAGE
    }
    if autocommit:
        options.update(isolation_level="AUTOCOMMIT", pool_reset_on_return=None)
    if credential is not None:
        require_tokenless_url(url)
        options["async_creator"] = _token_creator(url, AccessTokens(credential))
    engine = create_async_engine(url, **options)
    engine.sync_engine.dialect.statement_compiler = LockingCompiler
    event.listen(engine.sync_engine, "connect", set_session_options)
    event.listen(engine.sync_engine, "do_setinputsizes", _wide_strings)
    return engine


def _token_creator(url: URL, tokens: AccessTokens) -> Callable[[], Awaitable[Any]]:
    """Connect as SQLAlchemy would from `url`, plus the access token (see mssql_auth)."""
    import aioodbc

    _, connect_kwargs = url.get_dialect()().create_connect_args(url)
    return token_connector(connect_kwargs, tokens, aioodbc.connect)


_ROW_LOCK = "WITH (UPDLOCK, ROWLOCK)"


class LockingCompiler(MSSQLCompiler):
    """Renders `select(...).with_for_update()` as `WITH (UPDLOCK, ROWLOCK)` table hints.

    UPDLOCK takes the lock an UPDATE would and holds it to the end of the transaction:
    the read-check-write of `store.py` (is the token still ours? then write) cannot
    interleave with another writer. `skip_locked=True` adds READPAST. Other variants have
    no rendering here and fail loudly rather than silently not locking.
    """

    def translate_select_structure(self, select_stmt: Any, **kwargs: Any) -> Any:
        restructure: Callable[..., Any] = super().translate_select_structure  # untyped upstream
        select_stmt = restructure(select_stmt, **kwargs)
        lock = select_stmt._for_update_arg
        if lock is None:
            return select_stmt
        if lock.nowait or lock.read or lock.key_share or lock.of:
            raise NotImplementedError(f"no SQL Server rendering for {lock!r}")
        hint = "WITH (UPDLOCK, ROWLOCK, READPAST)" if lock.skip_locked else _ROW_LOCK
        for table in select_stmt.get_final_froms():
            select_stmt = select_stmt.with_hint(table, hint)
        return select_stmt


def set_session_options(dbapi_connection: Any, _record: Any) -> None:
    """A pool "connect" listener: the ANSI options every writing session needs (above)."""
    cursor = dbapi_connection.cursor()
    cursor.execute(_ANSI_SESSION)
    cursor.close()


SQL_INTEGER, SQL_DOUBLE = 4, 8  # ODBC's SQL data type codes (sql.h), as pyodbc's constants


def _wide_strings(
    inputsizes: dict[Any, Any], _cursor: Any, statement: str, _parameters: Any, context: Any
) -> None:
    """Bind every string as NVARCHAR (SQLAlchemy binds `String` as VARCHAR on pyodbc), and
    the numbers of a procedure call as the ODBC types of its parameters (SQLAlchemy passes
    Python's `float` for both, which leaves a NULL argument for the driver to describe)."""
    dbapi = context.dialect.dbapi
    narrow, wide = dbapi.SQL_VARCHAR, dbapi.SQL_WVARCHAR
    procedure = statement.startswith("EXEC dbo.")
    for bind, dbtype in inputsizes.items():
        if dbtype == narrow:
            inputsizes[bind] = wide
        elif isinstance(dbtype, tuple) and dbtype and dbtype[0] == narrow:
            inputsizes[bind] = (wide, *dbtype[1:])
        elif procedure and isinstance(bind.type, Integer):
            inputsizes[bind] = (SQL_INTEGER, 0, 0)
        elif procedure and isinstance(bind.type, Float):
            inputsizes[bind] = (SQL_DOUBLE, 0, 0)


# -- the store ----------------------------------------------------------------------------------


# The type of each procedure argument, bound with it: the driver then never asks the server
# to describe a parameter (a NULL argument carries no type of its own).
_ARGUMENT_TYPES: dict[str, TypeEngine[Any]] = {
    **dict.fromkeys(("document_id", "lease_token"), Unicode(37)),
    **dict.fromkeys(("worker_id",), Unicode(256)),
    **dict.fromkeys(("stage", "outcome"), Unicode(32)),
    **dict.fromkeys(("error_code",), Unicode(64)),
    **dict.fromkeys(("embedding_model",), Unicode(128)),
    **dict.fromkeys(("error", "stage_seconds"), UnicodeText()),
    **dict.fromkeys(("lease_seconds", "retry_delay", "older_than", "ready_for_seconds"), Float()),
    **dict.fromkeys(("limit", "page_count", "embedding_dimensions"), Integer()),
}


def _procedure(name: str, *arguments: str, timed: bool = False) -> TextualSelect:
    """`EXEC dbo.name @a = :a, …` with typed binds; only the fixed names below reach it.

    A textual *select* (a bare `text()` is never given input sizes by SQLAlchemy), whose
    timestamp columns, when `timed`, read as aware UTC datetimes.
    """
    params = ", ".join(f"@{argument} = :{argument}" for argument in arguments)
    binds = [bindparam(argument, type_=_ARGUMENT_TYPES[argument]) for argument in arguments]
    statement = text(f"EXEC dbo.{name} {params}").bindparams(*binds)
    if timed:
        return statement.columns(not_before=UTCDateTime, lease_expires_at=UTCDateTime)
    return statement.columns()


_ACQUIRE = _procedure(
    "acquire_document_lease", "document_id", "worker_id", "lease_seconds", timed=True
)
_RENEW = _procedure("renew_document_lease", "document_id", "lease_token", "lease_seconds", "stage")
_RELEASE = _procedure(
    "release_document_lease",
    "document_id",
    "lease_token",
    "outcome",
    "error_code",
    "error",
    "retry_delay",
    timed=True,
)
_COMPLETE = _procedure(
    "complete_document_lease",
    "document_id",
    "lease_token",
    "page_count",
    "embedding_model",
    "embedding_dimensions",
    "stage_seconds",
)
_FIND_EXPIRED = _procedure("find_expired_leases", "limit", timed=True)
_CLAIM_QUEUED = _procedure(
    "claim_queued_documents_v2",
    "worker_id",
    "lease_seconds",
    "limit",
    "ready_for_seconds",
    timed=True,
)
_CLAIM_STALE = _procedure("claim_stale_dispatches", "older_than", "limit", timed=True)
# A purge removes a document's chunks at most this many rows per statement, as the
# procedures do: one statement never takes the ~5,000 locks at which SQL Server escalates
# to a lock on the whole chunks table (migration 0007, docs/leases.md).
CHUNK_DELETE_BATCH = 1000
_DELETE_CHUNKS = text(
    f"DELETE TOP ({CHUNK_DELETE_BATCH}) FROM dbo.chunks WHERE document_id = :document_id"
).bindparams(bindparam("document_id", type_=Unicode(37)))
_CLOCK = text("SELECT CAST(SYSUTCDATETIME() AS DATETIME2(6)) AS now").columns(now=UTCDateTime)
# Keyword search (revision 0008): whether chunks has an active full-text index, and the
# full-text ranking. CONTAINSTABLE's RANK (0-1000) orders the matches of an OR of the
# query's words in all their inflected forms; its statistics span the whole table.
FULLTEXT_ACTIVE = (
    "SELECT CAST(OBJECTPROPERTYEX(OBJECT_ID(N'dbo.chunks'), 'TableHasActiveFulltextIndex') "
    "AS INT) AS active"
)
CONTAINS_RANKING = (
    "SELECT ft.[KEY] AS id, CAST(ft.[RANK] AS FLOAT) AS score "
    "FROM CONTAINSTABLE(dbo.chunks, [text], :condition) AS ft"
)


def contains_query(
    collection: str, terms: Sequence[str], k: int, filters: SearchFilter | None
) -> Select[tuple[int, float]]:
    """The k best full-text matches among the live chunks of the collection."""
    ranked = (
        text(CONTAINS_RANKING)
        .bindparams(condition=contains_condition(terms))
        .columns(id=Integer, score=Float)
        .subquery("ranked")
    )
    query = (
        select(ranked.c.id, ranked.c.score)
        .select_from(ranked.join(live_chunks(), chunks.c.id == ranked.c.id))
        .where(chunks.c.collection == collection)
        .order_by(ranked.c.score.desc(), ranked.c.id)
        .limit(k)
    )
    allowed = filter_clause(filters)
    return query if allowed is None else query.where(allowed)


def contains_condition(terms: Sequence[str]) -> str:
    """The CONTAINS search condition: any of the words, in any inflected form. The words
    are `\\w+` runs (`sheaf.domain.search.query_terms`), so no quote can close the string."""
    return " OR ".join(f'FORMSOF(INFLECTIONAL, "{term}")' for term in terms)


def _retried(
    method: Callable[Concatenate[SqlDocumentStore, P], Coroutine[Any, Any, T]],
    *,
    idempotent: bool,
) -> Callable[Concatenate[MssqlDocumentStore, P], Coroutine[Any, Any, T]]:
    """A shared operation of `store.py`, run again as `RetryPolicy` allows."""

    @functools.wraps(method)
    async def run(self: MssqlDocumentStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        operation = functools.partial(method, self, *args, **kwargs)
        return await with_retries(operation, self.retry_policy, idempotent=idempotent)

    return run


class MssqlDocumentStore(SqlDocumentStore):
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        procedures: AsyncEngine | None = None,
        retry_policy: RetryPolicy | None = None,
        search_cache_bytes: int = DEFAULT_SEARCH_CACHE_BYTES,
    ) -> None:
        """`procedures`: the autocommit engine of the lease calls (`create_mssql_engine(…,
        autocommit=True)`); without one, `engine` switches to autocommit per call."""
        super().__init__(engine, search_cache_bytes=search_cache_bytes)
        self._procedures = procedures or engine.execution_options(isolation_level="AUTOCOMMIT")
        self.retry_policy = retry_policy or RetryPolicy()
        self._fulltext: bool | None = None  # read once, at the first keyword search

    async def _keyword_ranking(
        self,
        conn: AsyncConnection,
        collection: str,
        terms: Mapping[str, int],
        k: int,
        filters: SearchFilter | None,
    ) -> list[tuple[int, float]]:
        """CONTAINSTABLE where chunks has a full-text index, else the scan of
        `scan_keyword_ranking`; either way only live chunks of the collection count.

        The full-text index is populated in the background (CHANGE_TRACKING AUTO): a
        just-completed document can be missing from keyword results for a moment, while
        the join on `documents.chunks_token` keeps every result a live chunk. RANK weighs
        each word of the OR once; the scan weighs a repeated word more, as SQLite and
        PostgreSQL do (`query_terms`).
        """
        if self._fulltext is None:
            self._fulltext = bool((await conn.execute(text(FULLTEXT_ACTIVE))).scalar())
        if not self._fulltext:
            return await scan_keyword_ranking(conn, collection, terms, k, filters)
        query = contains_query(collection, list(terms), k, filters)  # each word weighs once
        return [(row.id, float(row.score)) for row in await conn.execute(query)]

    async def close(self) -> None:
        await super().close()
        await self._procedures.dispose()

    async def _now(self, conn: AsyncConnection) -> datetime:
        now: datetime = (await conn.execute(_CLOCK)).scalar_one()
        return now

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        with _translated():
            async with self._connected() as conn, conn.begin():
                yield conn

    def _read(self) -> Any:
        return self._write()  # READ_ONLY only matters to SQLite's BEGIN

    @asynccontextmanager
    async def _connected(self, engine: AsyncEngine | None = None) -> AsyncIterator[AsyncConnection]:
        conn = await self._connect(engine or self._engine)
        try:
            yield conn
        finally:
            await conn.close()

    async def _connect(self, engine: AsyncEngine) -> AsyncConnection:
        """A pooled connection; opening one is retried through throttling and failovers."""
        attempt = 1
        while True:
            conn = engine.connect()
            try:
                return await conn.start()
            except (sa_exc.DBAPIError, OSError) as exc:
                failure = classify(exc)
                if failure is None:
                    raise
                backoff = self.retry_policy.on_connect(failure)
                if backoff is None or attempt >= backoff.attempts:
                    _, message = _diagnostics(exc)
                    raise ConnectFailed(
                        f"cannot connect to SQL Server ({attempt} attempts): {message}"
                    ) from exc
                await self.retry_policy.sleep(backoff.delay(attempt, self.retry_policy.rng))
                attempt += 1

    async def _call(
        self, statement: Executable, *, idempotent: bool = False, **arguments: Any
    ) -> list[Row[Any]]:
        operation = functools.partial(self._call_once, statement, arguments)
        return await with_retries(operation, self.retry_policy, idempotent=idempotent)

    @shielded
    async def _call_once(self, statement: Executable, arguments: dict[str, Any]) -> list[Row[Any]]:
        """One EXEC on an autocommit connection: the procedure commits or rolls back itself.

        XACT_ABORT rolls back on run-time errors but not on compile errors (a bug, or a
        schema the procedure does not match), which can leave the procedure's transaction
        open; a rollback from the client is a no-op in autocommit mode. So a connection
        whose EXEC failed is discarded, never returned to the pool still holding locks.
        """
        with _translated():
            async with self._connected(self._procedures) as conn:
                try:
                    return list((await conn.execute(statement, arguments)).all())
                except BaseException:
                    await conn.invalidate()
                    raise

    # -- the lease contract ---------------------------------------------------------------

    async def acquire_document_lease(
        self, document_id: str, worker_id: str, lease_seconds: float
    ) -> AcquireResult:
        (row,) = await self._call(
            _ACQUIRE,
            document_id=document_id,
            worker_id=worker_id,
            lease_seconds=float(lease_seconds),
        )
        outcome = AcquireOutcome(row.outcome)
        status = None if row.status is None else Status(row.status)
        if outcome is not AcquireOutcome.ACQUIRED:
            return AcquireResult(outcome, None, row.not_before, row.dispatch_seq, status)
        lease = _lease(row, document_id=document_id, worker_id=worker_id)
        return AcquireResult(outcome, lease, dispatch_seq=row.dispatch_seq, status=status)

    async def renew_document_lease(
        self, document_id: str, lease_token: str, lease_seconds: float, stage: str
    ) -> bool:
        (row,) = await self._call(
            _RENEW,
            idempotent=True,  # renewing twice is renewing once
            document_id=document_id,
            lease_token=lease_token,
            lease_seconds=float(lease_seconds),
            stage=stage,
        )
        return bool(row.renewed)

    async def release_document_lease(
        self,
        document_id: str,
        lease_token: str,
        outcome: ReleaseOutcome,
        error: ErrorInfo | None = None,
        retry_delay: float = 0.0,
    ) -> ReleaseResult:
        (row,) = await self._call(
            _RELEASE,
            document_id=document_id,
            lease_token=lease_token,
            outcome=outcome.value,
            error_code=None if error is None else error.code,
            error=None if error is None else error.message,
            retry_delay=float(retry_delay),
        )
        status = None if row.status is None else Status(row.status)
        return ReleaseResult(bool(row.applied), status, row.not_before, row.dispatch_seq)

    async def complete(self, lease: Lease, completion: Completion) -> None:
        """The completion transaction as one EXEC (migration 0007), as on PostgreSQL."""
        (row,) = await self._call(
            _COMPLETE,
            document_id=lease.document_id,
            lease_token=lease.token,
            page_count=completion.page_count,
            embedding_model=completion.embedding_model,
            embedding_dimensions=completion.embedding_dimensions,
            stage_seconds=json.dumps(completion.stage_seconds),
        )
        if not row.completed:
            raise lease_lost(lease.document_id)

    async def find_expired_leases(self, limit: int) -> list[Dispatch]:
        if limit <= 0:
            return []
        return [_dispatch(row) for row in await self._call(_FIND_EXPIRED, limit=limit)]

    async def claim_queued_documents(
        self, worker_id: str, lease_seconds: float, limit: int, ready_for: float = 0.0
    ) -> list[Lease]:
        if limit <= 0:
            return []
        rows = await self._call(
            _CLAIM_QUEUED,
            worker_id=worker_id,
            lease_seconds=float(lease_seconds),
            limit=limit,
            ready_for_seconds=float(ready_for),
        )
        return [_lease(row, document_id=row.document_id, worker_id=worker_id) for row in rows]

    async def claim_stale_dispatches(self, older_than: float, limit: int) -> list[Dispatch]:
        if limit <= 0:
            return []
        rows = await self._call(_CLAIM_STALE, older_than=float(older_than), limit=limit)
        return [_dispatch(row) for row in rows]

    # -- the shared operations, each one transaction, with SQL Server's retries ----------------

    write_chunks = _retried(SqlDocumentStore.write_chunks, idempotent=False)
    create_document = _retried(SqlDocumentStore.create_document, idempotent=False)
    # A tombstone, a reset of a failed row and a purge each compare before they change.
    delete_document = _retried(SqlDocumentStore.delete_document, idempotent=True)
    retry_document = _retried(SqlDocumentStore.retry_document, idempotent=True)

    @shielded
    async def _purge_once(self, document_id: str) -> None:
        """`store.py`'s purge, with the chunks deleted in bounded batches."""
        async with self._write() as conn:
            row = await fetch_row(conn, document_id, lock=True)
            if row is None or row["status"] != Status.DELETED:
                return
            arguments = {"document_id": document_id}
            while (await conn.execute(_DELETE_CHUNKS, arguments)).rowcount >= CHUNK_DELETE_BATCH:
                pass
            await update_document(conn, document_id, purged_at=await self._now(conn))

    async def purge_document(self, document_id: str) -> None:
        operation = functools.partial(self._purge_once, document_id)
        await with_retries(operation, self.retry_policy, idempotent=True)

    get_document = _retried(SqlDocumentStore.get_document, idempotent=True)
    list_documents = _retried(SqlDocumentStore.list_documents, idempotent=True)
    stats = _retried(SqlDocumentStore.stats, idempotent=True)
    collection_counts = _retried(SqlDocumentStore.collection_counts, idempotent=True)
    pending_cleanups = _retried(SqlDocumentStore.pending_cleanups, idempotent=True)
    known_blob_keys = _retried(SqlDocumentStore.known_blob_keys, idempotent=True)
    document_chunks = _retried(SqlDocumentStore.document_chunks, idempotent=True)
    cached_embeddings = _retried(SqlDocumentStore.cached_embeddings, idempotent=True)
    search = _retried(SqlDocumentStore.search, idempotent=True)
    keyword_search = _retried(SqlDocumentStore.keyword_search, idempotent=True)
    collection_exists = _retried(SqlDocumentStore.collection_exists, idempotent=True)
    activity = _retried(SqlDocumentStore.activity, idempotent=True)
    ping = _retried(SqlDocumentStore.ping, idempotent=True)


def _lease(row: Row[Any], *, document_id: str, worker_id: str) -> Lease:
    return Lease(
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


def _dispatch(row: Row[Any]) -> Dispatch:
    return Dispatch(
        document_id=row.document_id,
        collection=row.collection,
        dispatch_seq=row.dispatch_seq,
        status=Status(row.status),
        not_before=row.not_before,
    )
