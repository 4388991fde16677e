"""The real `mssql+aioodbc` engine, built without a server: URLs, row locks, strings, tokens.

Everything here runs on the ODBC stack CI installs (unixODBC, FreeTDS, pyodbc, aioodbc)
but never reaches a SQL Server; the one test that opens a socket (to 127.0.0.1, where
nothing listens) is marked `integration`.
"""

from __future__ import annotations

import importlib.util
import io
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import aioodbc
import pyodbc
import pytest
from alembic import op
from alembic.migration import MigrationContext
from alembic.operations import Operations
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
from tests.conftest import require_service

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
        "Database=sheaf;Encrypt=yes"  # SQLAlchemy's Trusted_Connection=Yes is gone
    )
    assert kwargs["attrs_before"] == {1256: pack_access_token("token-1")}


# -- the migration on SQL Server ---------------------------------------------------------------


def migration(name: str = "0001_initial") -> ModuleType:
    path = ROOT / "sql" / "migrations" / "versions" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"migration_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FIRST_PROCEDURES = migration().PROCEDURE_NAMES  # what 0001 installs


def render_on_mssql(
    monkeypatch: pytest.MonkeyPatch, step: str, revision: str = "0001_initial"
) -> tuple[str, list[str]]:
    """The DDL `step` ("upgrade"/"downgrade") emits on SQL Server, and the SQL it executes."""
    ddl = io.StringIO()
    dialect = STOCK_DIALECT(deprecate_large_types=True)
    context = MigrationContext.configure(
        dialect=dialect, opts={"as_sql": True, "output_buffer": ddl}
    )
    executed: list[str] = []

    def exec_driver_sql(sql: str) -> Any:
        executed.append(sql)
        return SimpleNamespace(scalar=lambda: "dbo")

    bind = SimpleNamespace(dialect=dialect, exec_driver_sql=exec_driver_sql)
    with Operations.context(context):
        monkeypatch.setattr(op, "get_bind", lambda: bind)
        getattr(migration(revision), step)()
    return " ".join(ddl.getvalue().split()), executed


def test_the_migration_builds_the_sql_server_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    ddl, executed = render_on_mssql(monkeypatch, "upgrade")
    assert "filename NVARCHAR(512) NOT NULL" in ddl
    assert " VARCHAR(" not in ddl  # every string is NVARCHAR: any script survives
    assert "text NVARCHAR(max) NOT NULL" in ddl
    assert "embedding VARBINARY(max) NOT NULL" in ddl
    assert "collection NVARCHAR(128) COLLATE Latin1_General_100_BIN2 NOT NULL" in ddl
    assert "ready_at AS (COALESCE(not_before, created_at)) PERSISTED" in ddl
    assert "CREATE INDEX ix_documents_ready ON documents (status, ready_at, created_at)" in ddl
    assert (
        "CREATE UNIQUE INDEX uq_documents_collection_sha256_live ON documents "
        "(collection, sha256) WHERE status <> 'deleted'"
    ) in ddl
    assert "ix_documents_status_lease_expires ON documents (status, lease_expires_at)" in ddl
    procedures = ROOT / "sql" / "procedures" / "mssql"
    assert executed[0] == "SELECT SCHEMA_NAME()"
    assert executed[1:] == [
        (procedures / f"{name}.sql").read_text(encoding="utf-8") for name in FIRST_PROCEDURES
    ]


def test_the_downgrade_drops_the_procedures(monkeypatch: pytest.MonkeyPatch) -> None:
    _, executed = render_on_mssql(monkeypatch, "downgrade")
    assert executed == [f"DROP PROCEDURE IF EXISTS dbo.{name}" for name in FIRST_PROCEDURES]


def test_revision_0004_adds_the_v2_claim_and_no_index_on_sql_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ddl, executed = render_on_mssql(monkeypatch, "upgrade", "0004_claim_ready_for")
    v2 = ROOT / "sql" / "procedures" / "mssql" / "claim_queued_documents_v2.sql"
    assert executed == [v2.read_text(encoding="utf-8")]
    assert "CREATE INDEX" not in ddl  # ix_documents_ready (0001) already serves the claim
    _, executed = render_on_mssql(monkeypatch, "downgrade", "0004_claim_ready_for")
    assert executed == ["DROP PROCEDURE IF EXISTS dbo.claim_queued_documents_v2"]


def test_every_procedure_file_is_installed_by_exactly_one_revision() -> None:
    later = {"claim_queued_documents_v2"}  # 0004
    files = {p.stem for p in (ROOT / "sql" / "procedures" / "mssql").glob("*.sql")}
    assert files == set(FIRST_PROCEDURES) | later
    assert not set(FIRST_PROCEDURES) & later


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

    class FailingConnection:
        async def execution_options(self, **options: Any) -> None:
            assert options == {"isolation_level": "AUTOCOMMIT"}

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
    async def connected() -> AsyncIterator[Any]:
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
