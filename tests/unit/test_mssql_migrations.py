"""The migrations on SQL Server, rendered without a server or a driver: DDL and procedures.

Alembic renders each revision's DDL with SQLAlchemy's stock SQL Server dialect (no DBAPI
needed), and the SQL each revision executes is recorded by a stand-in connection.
"""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from alembic import op
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy.dialects import mssql as mssql_dialect

from sheaf.adapters.sql.migrate import MigrationLocked, session_lock
from sheaf.adapters.sql.snapshots import read_snapshot, snapshot_names

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
STOCK_DIALECT: Any = mssql_dialect.dialect  # SQLAlchemy's own, untyped upstream


def migration(name: str = "0001_initial") -> ModuleType:
    path = ROOT / "sql" / "migrations" / "versions" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"migration_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FIRST_PROCEDURES = snapshot_names("0001", "mssql")  # what 0001 installs
REVISIONS = sorted(p.stem for p in (ROOT / "sql" / "migrations" / "versions").glob("0*.py"))


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
    assert executed[0] == "SELECT SCHEMA_NAME()"
    assert len(FIRST_PROCEDURES) == 6
    assert executed[1:] == [read_snapshot("0001", "mssql", name) for name in FIRST_PROCEDURES]


def test_the_downgrade_drops_the_procedures(monkeypatch: pytest.MonkeyPatch) -> None:
    _, executed = render_on_mssql(monkeypatch, "downgrade")
    assert executed == [f"DROP PROCEDURE IF EXISTS dbo.{name}" for name in FIRST_PROCEDURES]


def test_revision_0004_adds_the_v2_claim_and_no_index_on_sql_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ddl, executed = render_on_mssql(monkeypatch, "upgrade", "0004_claim_ready_for")
    assert executed == [read_snapshot("0004", "mssql", "claim_queued_documents_v2")]
    assert "CREATE INDEX" not in ddl  # ix_documents_ready (0001) already serves the claim
    _, executed = render_on_mssql(monkeypatch, "downgrade", "0004_claim_ready_for")
    assert executed == ["DROP PROCEDURE IF EXISTS dbo.claim_queued_documents_v2"]


@pytest.mark.parametrize("script", REVISIONS)
def test_each_revision_installs_its_own_snapshots_on_sql_server(
    monkeypatch: pytest.MonkeyPatch, script: str
) -> None:
    """What a revision EXECs is the text frozen beside it, never sql/procedures/ today."""
    revision = script.split("_", 1)[0]
    _, executed = render_on_mssql(monkeypatch, "upgrade", script)
    procedures = [sql for sql in executed if "CREATE OR ALTER PROCEDURE" in sql]
    expected = [read_snapshot(revision, "mssql", n) for n in snapshot_names(revision, "mssql")]
    assert procedures == expected


# -- the migration lock on SQL Server (issue 16, point 1) -------------------------------------


class LockSession:
    """A sync connection on SQL Server that records what the migration lock sends.

    `granted` is what sp_getapplock returns: 0 or 1 granted, negative not.
    """

    def __init__(self, granted: int) -> None:
        self.dialect = SimpleNamespace(name="mssql")
        self.invalidated = False
        self.granted = granted
        self.sent: list[str] = []

    def execute(self, statement: Any, parameters: dict[str, Any] | None = None) -> Any:
        sql = " ".join(str(statement).split())
        self.sent.append(sql if not parameters else f"{sql} {parameters}")
        return SimpleNamespace(scalar_one=lambda: self.granted)

    def commit(self) -> None:
        self.sent.append("COMMIT")

    def rollback(self) -> None:
        self.sent.append("ROLLBACK")


def test_the_migration_lock_is_the_sessions_and_held_around_the_migration() -> None:
    session = LockSession(granted=1)
    with session_lock(session, timeout=1.5):  # type: ignore[arg-type]
        session.sent.append("MIGRATION")
    get, commit, migration, rollback, release, last_commit = session.sent
    assert "EXEC @result = sp_getapplock @Resource = N'sheaf-migrations'" in get
    assert "@LockOwner = N'Session'" in get  # not 'Transaction': no transaction is open yet
    assert "@LockTimeout = :timeout_ms" in get
    assert get.endswith("SELECT @result AS result {'timeout_ms': 1500}")  # the code is read
    assert (commit, migration, rollback, last_commit) == (
        "COMMIT",
        "MIGRATION",
        "ROLLBACK",
        "COMMIT",
    )
    assert release.startswith("EXEC sp_releaseapplock @Resource = N'sheaf-migrations'")
    assert "@LockOwner = N'Session'" in release


@pytest.mark.parametrize(("code", "why"), [(-1, "not granted"), (-3, "deadlock"), (-999, "-999")])
def test_a_refused_migration_lock_stops_the_migration(code: int, why: str) -> None:
    session = LockSession(granted=code)
    refused = pytest.raises(MigrationLocked, match=f"another `sheaf db upgrade`.*{why}.*after 2 s")
    with refused, session_lock(session, timeout=2):  # type: ignore[arg-type]
        session.sent.append("MIGRATION")
    assert "MIGRATION" not in session.sent
    assert not any("sp_releaseapplock" in sql for sql in session.sent)


def test_a_failed_migration_still_releases_the_lock() -> None:
    session = LockSession(granted=0)
    with pytest.raises(RuntimeError), session_lock(session, timeout=1):  # type: ignore[arg-type]
        raise RuntimeError("DDL failed")
    assert session.sent[-3] == "ROLLBACK"
    assert "sp_releaseapplock" in session.sent[-2]
    assert session.sent[-1] == "COMMIT"
