"""The real `mssql+aioodbc` engine, built without a server: URLs, row locks, strings, tokens.

Everything here runs on the ODBC stack CI installs (unixODBC, FreeTDS, pyodbc, aioodbc)
but never reaches a SQL Server; the one test that opens a socket (to 127.0.0.1, where
nothing listens) is marked `integration`. Without the ODBC libraries the module is skipped
with the reason shown (required under CI=true). The migrations' SQL Server DDL needs no
driver: tests/unit/test_mssql_migrations.py.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from sqlalchemy import event, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mssql as mssql_dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from sheaf.adapters.sql import create_engine, open_store
from sheaf.adapters.sql.mssql import (
    Backoff,
    ConnectFailed,
    LockingCompiler,
    MssqlDocumentStore,
    RetryPolicy,
    _wide_strings,
)
from sheaf.adapters.sql.mssql_auth import pack_access_token
from sheaf.adapters.sql.schema import documents
from sheaf.adapters.sql.store import fetch_row, lock_leased_row
from sheaf.errors import ConfigError
from tests.conftest import odbc_module, require_service

# Building an engine loads the driver: without libodbc the module is skipped, reason shown.
aioodbc = odbc_module("aioodbc")
pyodbc = odbc_module("pyodbc")

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ODBC18 = "driver=ODBC+Driver+18+for+SQL+Server"
# The documented forms (README): SQL login through either driver, Entra ID through Driver 18.
ODBC18_URL = f"mssql+aioodbc://sheaf:s3cret@sql.example.net:1433/sheaf?{ODBC18}&Encrypt=yes"
FREETDS_URL = "mssql+aioodbc://sheaf:s3cret@127.0.0.1:1433/sheaf?driver=FreeTDS&TDS_Version=7.4"
ENTRA_URL = f"mssql+aioodbc://@sql.example.net:1433/sheaf?{ODBC18}&Encrypt=yes"
STOCK_DIALECT: Any = mssql_dialect.dialect  # SQLAlchemy's own, untyped upstream


class OneTokenCredential:
    """An async azure-identity credential that always issues the same hour-long token."""

    async def get_token(self, *scopes: str, **_options: Any) -> AccessToken:
        assert scopes == ("https://database.windows.net/.default",)
        return AccessToken("token-1", int(time.time()) + 3600)

    async def close(self) -> None:
        pass


@pytest.fixture
async def engines() -> Any:
    """Engines the test builds, disposed afterwards (none of them ever connected)."""
    built: list[AsyncEngine] = []
    yield built
    for engine in built:
        await engine.dispose()


def build(engines: list[AsyncEngine], url: str, **options: Any) -> AsyncEngine:
    engine = create_engine(url, **options)
    engines.append(engine)
    return engine


def test_the_odbc_stack_imports() -> None:
    assert pyodbc.version
    assert callable(aioodbc.connect)
    assert isinstance(pyodbc.drivers(), list)


@pytest.mark.parametrize(
    ("url", "dsn"),
    [
        (
            ODBC18_URL,
            "DRIVER={ODBC Driver 18 for SQL Server};Server=sql.example.net,1433;"
            "Database=sheaf;UID=sheaf;PWD=s3cret;Encrypt=yes",
        ),
        (
            FREETDS_URL,
            "DRIVER={FreeTDS};Server=127.0.0.1,1433;Database=sheaf;UID=sheaf;PWD=s3cret;"
            "TDS_Version=7.4",
        ),
    ],
)
async def test_documented_urls_build_the_engine(
    engines: list[AsyncEngine], url: str, dsn: str
) -> None:
    engine = build(engines, url)
    assert (engine.dialect.name, engine.dialect.driver) == ("mssql", "aioodbc")
    assert engine.dialect.create_connect_args(engine.url) == ((), {"dsn": dsn})
    assert engine.sync_engine.dialect.statement_compiler is LockingCompiler


async def test_open_store_chooses_the_sql_server_store_without_connecting() -> None:
    store = await open_store(ODBC18_URL)
    try:
        assert isinstance(store, MssqlDocumentStore)
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "options", "complaint"),
    [
        ("mssql+aioodbc://sa:pw@db/sheaf", {}, "names its ODBC driver"),
        (f"mssql+pyodbc://sa:pw@db/sheaf?{ODBC18}", {}, "unsupported database URL scheme"),
        ("sqlite+aiosqlite:///sheaf.db", {"credential": object()}, "SQL Server only"),
        (ODBC18_URL, {"credential": object()}, "no user or password"),
        ("mssql+aioodbc://@db/sheaf?driver=FreeTDS", {"credential": object()}, "FreeTDS"),
    ],
)
def test_wrong_urls_are_config_errors(url: str, options: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        create_engine(url, **options)


# -- row locks and strings ----------------------------------------------------------------------


class Capture:
    """A connection that records the SQL it is given and finds one row."""

    def __init__(self, dialect: Any) -> None:
        self.dialect = dialect
        self.sql: list[str] = []

    async def execute(self, statement: Any) -> Any:
        self.sql.append(" ".join(str(statement.compile(dialect=self.dialect)).split()))
        row = {"id": "d"}
        return SimpleNamespace(
            first=lambda: row, mappings=lambda: SimpleNamespace(one_or_none=lambda: row)
        )


async def test_the_stores_row_locks_become_updlock_rowlock(engines: list[AsyncEngine]) -> None:
    """Stock SQLAlchemy drops FOR UPDATE on SQL Server; the fenced writes need the lock."""
    conn = Capture(build(engines, ODBC18_URL).sync_engine.dialect)
    await lock_leased_row(conn, "d", "token")  # type: ignore[arg-type]
    await fetch_row(conn, "d", lock=True)  # type: ignore[arg-type]
    await fetch_row(conn, "d", lock=False)  # type: ignore[arg-type]
    locked, fetched, plain = conn.sql
    assert "FROM documents WITH (UPDLOCK, ROWLOCK) WHERE documents.id = ?" in locked
    assert "FROM documents WITH (UPDLOCK, ROWLOCK) WHERE" in fetched
    assert "WITH" not in plain


async def test_skip_locked_adds_readpast_and_nowait_is_refused(
    engines: list[AsyncEngine],
) -> None:
    dialect = build(engines, ODBC18_URL).sync_engine.dialect
    query = select(documents.c.id).limit(5).order_by(documents.c.created_at)
    skipping = str(query.with_for_update(skip_locked=True).compile(dialect=dialect))
    assert "FROM documents WITH (UPDLOCK, ROWLOCK, READPAST)" in skipping
    with pytest.raises(NotImplementedError):
        query.with_for_update(nowait=True).compile(dialect=dialect)
    assert "WITH" not in str(query.compile(dialect=STOCK_DIALECT()))  # stock: nothing


async def test_strings_are_bound_as_nvarchar(engines: list[AsyncEngine]) -> None:
    engine = build(engines, FREETDS_URL)
    assert event.contains(engine.sync_engine, "do_setinputsizes", _wide_strings)
    dialect = engine.sync_engine.dialect
    dbapi = dialect.dbapi
    assert dbapi is not None
    sizes = {"short": dbapi.SQL_VARCHAR, "long": (dbapi.SQL_VARCHAR, 0, 0)}
    sizes["number"] = dbapi.SQL_DECIMAL
    _wide_strings(sizes, None, "", (), SimpleNamespace(dialect=dialect))
    assert sizes == {
        "short": pyodbc.SQL_WVARCHAR,
        "long": (pyodbc.SQL_WVARCHAR, 0, 0),
        "number": pyodbc.SQL_DECIMAL,
    }


# -- Entra ID ---------------------------------------------------------------------------------


async def test_an_entra_engine_attaches_the_token_when_it_connects(
    engines: list[AsyncEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    class Refused(Exception):
        pass

    async def connect(**kwargs: Any) -> Any:
        calls.append(kwargs)
        raise Refused  # no server here: what matters is what the driver was given

    monkeypatch.setattr(aioodbc, "connect", connect)
    engine = build(engines, ENTRA_URL, credential=OneTokenCredential())
    with pytest.raises(Refused):
        async with engine.connect():
            pass
    (kwargs,) = calls
    assert kwargs["dsn"] == (
        "DRIVER={ODBC Driver 18 for SQL Server};Server=sql.example.net,1433;"
        "Database=sheaf;Encrypt=yes;"  # SQLAlchemy's Trusted_Connection=Yes is gone
        "ConnectRetryCount=0"  # no driver reconnect with the token it was opened with
    )
    assert kwargs["attrs_before"] == {1256: pack_access_token("token-1")}


# -- a real driver error ---------------------------------------------------------------------


@pytest.mark.integration
async def test_an_absent_server_is_store_unavailable_after_the_connect_retries() -> None:
    """FreeTDS's own error for a closed port (127.0.0.1 only) is retried, then reported."""
    if "FreeTDS" not in pyodbc.drivers():
        require_service("FreeTDS", "the ODBC driver is not installed (apt-get install tdsodbc)")
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    url = f"mssql+aioodbc://sa:pw@127.0.0.1:{port}/sheaf?driver=FreeTDS&TDS_Version=7.4"
    store = await open_store(url)
    assert isinstance(store, MssqlDocumentStore)
    store.retry_policy = RetryPolicy(outages=Backoff(3, 0.01, 0.02), sleep=sleep)
    try:
        with pytest.raises(ConnectFailed, match=r"3 attempts.*\(20009\)"):
            await store.ping()
    finally:
        await store.close()
    assert len(slept) == 2


async def test_a_connection_whose_exec_failed_is_discarded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failed procedure may leave its transaction open; the pool must not get it back."""
    invalidated: list[bool] = []

    class FailingConnection:  # no execution_options: autocommit is the pool's, not per call
        async def execute(self, *_args: Any) -> Any:
            message = (
                "[42S22] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]"
                "Invalid column name 'x'. (207) (SQLExecDirectW)"
            )
            raise sa_exc.DBAPIError.instance(
                "EXEC", {}, pyodbc.ProgrammingError("42S22", message), pyodbc.Error
            )

        async def invalidate(self) -> None:
            invalidated.append(True)

    @asynccontextmanager
    async def connected(engine: AsyncEngine) -> AsyncIterator[Any]:
        assert engine is store._procedures  # the autocommit engine of the lease calls
        yield FailingConnection()

    store = await open_store(ODBC18_URL)
    assert isinstance(store, MssqlDocumentStore)
    monkeypatch.setattr(store, "_connected", connected)
    try:
        with pytest.raises(sa_exc.ProgrammingError):  # a bug: surfaced, not translated
            await store.renew_document_lease("d", "t", 30.0, "embed")
    finally:
        await store.close()
    assert invalidated == [True]
