"""The migrations build exactly `schema.py`, install the lease functions, and are idempotent.

Each backend starts from a database no test has touched; the schema is read back with
SQLAlchemy's inspector (sync drivers) and compared with the table definitions in code.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from sheaf.adapters.sql import open_store
from sheaf.adapters.sql.migrate import alembic_config, sql_dir, upgrade
from sheaf.adapters.sql.schema import metadata, on_dialect
from sheaf.adapters.sql.snapshots import read_snapshot
from sheaf.errors import ConfigError
from tests.integration.conftest import MSSQL_URL, NO_MSSQL, _create_mssql_database

pytestmark = pytest.mark.integration

LEASE_FUNCTIONS = {
    "acquire_document_lease",
    "renew_document_lease",
    "release_document_lease",
    "find_expired_leases",
    "claim_queued_documents",
    "claim_queued_documents_v2",
    "claim_stale_dispatches",
    "complete_document_lease",
    "notify_document_queued",  # the trigger function of migration 0006
}


def expected(dialect: str) -> tuple[dict[str, set[str]], dict[str, set[str | None]]]:
    """Columns and index names per table that `schema.py` promises on `dialect`."""
    tables = metadata.tables.items()
    return (
        {name: {c.name for c in t.columns if on_dialect(c, dialect)} for name, t in tables},
        {name: {i.name for i in t.indexes if on_dialect(i, dialect)} for name, t in tables},
    )


LIVE_INDEX = "uq_documents_collection_sha256_live"


def read_schema(sync_url: str) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Columns and index names per table of `schema.py`, as the database reports them."""
    engine = sa.create_engine(sync_url)
    try:
        inspector = sa.inspect(engine)
        columns = {t: {c["name"] for c in inspector.get_columns(t)} for t in metadata.tables}
        if engine.dialect.name == "sqlite":  # its inspector skips expression indexes
            named = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = :t"
            with engine.connect() as conn:
                indexes = {
                    t: {
                        str(name)
                        for (name,) in conn.execute(sa.text(named), {"t": t})
                        if not str(name).startswith("sqlite_autoindex_")
                    }
                    for t in metadata.tables
                }
        else:
            indexes = {
                t: {
                    str(i["name"])
                    for i in inspector.get_indexes(t)
                    if "duplicates_constraint" not in i
                }
                for t in metadata.tables
            }  # PostgreSQL also reports the index behind UNIQUE(lease_token): not an Index
        return columns, indexes
    finally:
        engine.dispose()


def dump(sync_url: str, query: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(sync_url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(query))]
    finally:
        engine.dispose()


@contextlib.contextmanager
def new_postgres_database(postgres_dsn: str) -> Iterator[str]:
    """A libpq DSN of a brand-new empty database on the test server, dropped afterwards."""
    admin = psycopg2.connect(postgres_dsn)
    admin.autocommit = True
    name = f"sheaf_migrate_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{postgres_dsn.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def fresh_postgres(postgres_dsn: str) -> Iterator[str]:
    with new_postgres_database(postgres_dsn) as dsn:
        yield dsn


def test_sqlite_upgrade_builds_the_schema_once(tmp_path: Path) -> None:
    path = tmp_path / "not" / "yet" / "sheaf.db"  # upgrade creates the directories
    upgrade(f"sqlite+aiosqlite:///{path}")
    sync_url = f"sqlite:///{path}"
    assert read_schema(sync_url) == expected("sqlite")
    (live_index,) = dump(sync_url, f"SELECT sql FROM sqlite_master WHERE name = '{LIVE_INDEX}'")
    keyword_index = "SELECT type, name FROM sqlite_master WHERE name LIKE 'chunks_fts%' ORDER BY 2"
    assert [row for row in dump(sync_url, keyword_index) if row[0] != "table"] == [
        ("trigger", "chunks_fts_delete"),
        ("trigger", "chunks_fts_insert"),
        ("trigger", "chunks_fts_update"),
    ]
    (fts,) = dump(sync_url, "SELECT sql FROM sqlite_master WHERE name = 'chunks_fts'")
    assert "fts5" in str(fts[0])
    assert "content='chunks'" in str(fts[0])
    assert "WHERE status <> 'deleted'" in str(live_index[0])
    everything = "SELECT type, name, sql FROM sqlite_master ORDER BY name"
    before = dump(sync_url, everything), dump(sync_url, "SELECT * FROM alembic_version")
    upgrade(f"sqlite+aiosqlite:///{path}")
    assert (dump(sync_url, everything), dump(sync_url, "SELECT * FROM alembic_version")) == before
    assert dump(sync_url, "PRAGMA journal_mode") == [("wal",)]


def test_postgres_upgrade_builds_the_schema_and_functions_once(fresh_postgres: str) -> None:
    url = fresh_postgres.replace("postgresql://", "postgresql+asyncpg://", 1)
    sync_url = fresh_postgres.replace("postgresql://", "postgresql+psycopg2://", 1)
    upgrade(url)
    assert read_schema(sync_url) == expected("postgresql")
    functions = "SELECT proname, prosrc FROM pg_proc WHERE proname = ANY(:names) ORDER BY 1"
    query = functions.replace(
        ":names", "ARRAY[" + ",".join(f"'{f}'" for f in LEASE_FUNCTIONS) + "]"
    )
    installed = dump(sync_url, query)
    assert {name for name, _ in installed} == LEASE_FUNCTIONS
    assert len(installed) == len(LEASE_FUNCTIONS)  # one signature each, no stale overloads
    (live_index,) = dump(
        sync_url, f"SELECT indexdef FROM pg_indexes WHERE indexname = '{LIVE_INDEX}'"
    )
    assert "WHERE" in str(live_index[0])
    assert "'deleted'" in str(live_index[0])
    (trigger,) = dump(sync_url, "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
    assert trigger == ("documents_queued_notify",)
    version = dump(sync_url, "SELECT * FROM alembic_version")
    upgrade(url)
    assert dump(sync_url, query) == installed
    assert dump(sync_url, "SELECT * FROM alembic_version") == version


async def test_upgrade_runs_from_a_thread_while_a_loop_runs(tmp_path: Path) -> None:
    """The CLI calls `upgrade` through `asyncio.to_thread` from inside its event loop."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'sheaf.db'}"
    await asyncio.to_thread(upgrade, url)
    store = await open_store(url)
    try:
        assert (await store.stats()).counts["queued"] == 0
    finally:
        await store.close()


def test_procedure_files_are_the_lease_functions() -> None:
    names = {path.stem for path in (sql_dir() / "procedures" / "postgres").glob("*.sql")}
    assert names == LEASE_FUNCTIONS


@pytest.mark.parametrize(
    "url",
    ["mysql+aiomysql://u@h/db", "sqlite:///sync-driver.db", "not a url", "sqlite+aiosqlite://"],
)
async def test_unsupported_database_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match=r"supported|file path"):
        await open_store(url)
    with pytest.raises(ConfigError):
        upgrade(url)


# -- frozen history (issue 16, point 2) -----------------------------------------------------

REVISIONS = [
    r.revision
    for r in reversed(list(ScriptDirectory.from_config(alembic_config()).walk_revisions()))
]
PG_PROCEDURES = (
    "SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc AS p "
    "WHERE p.pronamespace = 'public'::regnamespace ORDER BY 1"
)
PG_TRIGGERS = "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal"


def test_postgres_every_upgrade_path_ends_with_the_same_functions(postgres_dsn: str) -> None:
    """`upgrade head` from nothing, and from every earlier revision, installs the same text.

    On the way, each revision's database holds that revision's own snapshot: 0004's claim
    body is the one frozen at 0004, not the body 0005 installed later.
    """
    ends: dict[str, list[tuple[object, ...]]] = {}
    for start in [None, *REVISIONS[:-1]]:
        with new_postgres_database(postgres_dsn) as dsn:
            url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
            sync_url = dsn.replace("postgresql://", "postgresql+psycopg2://", 1)
            if start is not None:
                upgrade(url, to=start)
                if start == "0004":
                    (body,) = dump(
                        sync_url,
                        "SELECT prosrc FROM pg_proc WHERE proname = 'claim_queued_documents_v2'",
                    )
                    frozen = read_snapshot("0004", "postgresql", "claim_queued_documents_v2")
                    assert str(body[0]) in frozen
                    assert str(body[0]) not in read_snapshot(
                        "0005", "postgresql", "claim_queued_documents_v2"
                    )
            upgrade(url)
            ends[str(start)] = dump(sync_url, PG_PROCEDURES) + dump(sync_url, PG_TRIGGERS)
    fresh = ends.pop("None")
    assert {name for name, _ in fresh} >= LEASE_FUNCTIONS
    for start, end in ends.items():
        assert end == fresh, f"upgrading from {start} ends with other functions"


def test_postgres_downgrade_of_0005_puts_back_the_0004_claim(fresh_postgres: str) -> None:
    url = fresh_postgres.replace("postgresql://", "postgresql+asyncpg://", 1)
    sync_url = fresh_postgres.replace("postgresql://", "postgresql+psycopg2://", 1)
    body = "SELECT prosrc FROM pg_proc WHERE proname = 'claim_queued_documents_v2'"
    upgrade(url, to="0004")
    at_0004 = dump(sync_url, body)
    upgrade(url, to="0005")
    assert dump(sync_url, body) != at_0004
    config = alembic_config()
    config.attributes["database_url"] = url
    command.downgrade(config, "0004")
    assert dump(sync_url, body) == at_0004


MSSQL_PROCEDURES = (
    "SELECT o.name, m.definition FROM sys.sql_modules AS m "
    "JOIN sys.objects AS o ON o.object_id = m.object_id WHERE o.type = 'P' ORDER BY o.name"
)


def test_mssql_every_upgrade_path_ends_with_the_same_procedures() -> None:
    """The same on SQL Server (SHEAF_TEST_MSSQL_URL): one database per starting revision."""
    if not MSSQL_URL:
        pytest.skip(NO_MSSQL)
    base = sa.make_url(MSSQL_URL)
    ends: dict[str, list[tuple[object, ...]]] = {}
    for start in [None, *REVISIONS[:-1]]:
        name = f"{base.database}_history_{start or 'none'}"
        sync = base.set(drivername="mssql+pyodbc", database=name)
        _create_mssql_database(sync)
        try:
            url = base.set(database=name).render_as_string(hide_password=False)
            if start is not None:
                upgrade(url, to=start)
            upgrade(url)
            ends[str(start)] = dump(sync.render_as_string(hide_password=False), MSSQL_PROCEDURES)
        finally:
            master = sa.create_engine(sync.set(database="master"), isolation_level="AUTOCOMMIT")
            with master.connect() as conn:
                conn.exec_driver_sql(
                    f"ALTER DATABASE [{name}] SET SINGLE_USER WITH ROLLBACK IMMEDIATE; "
                    f"DROP DATABASE [{name}]"
                )
            master.dispose()
    fresh = ends.pop("None")
    assert fresh
    for start, end in ends.items():
        assert end == fresh, f"upgrading from {start} ends with other procedures"


# -- revision 0007 ------------------------------------------------------------------------------

ROW_ID_TYPES = (
    "SELECT table_name, data_type FROM information_schema.columns "
    "WHERE column_name = 'id' AND table_name IN ('attempts', 'chunks') ORDER BY 1"
)
SEQUENCE_TYPES = "SELECT sequencename, data_type::text FROM pg_sequences ORDER BY 1"


def test_postgres_0007_widens_row_ids_and_downgrades(fresh_postgres: str) -> None:
    url = fresh_postgres.replace("postgresql://", "postgresql+asyncpg://", 1)
    sync_url = fresh_postgres.replace("postgresql://", "postgresql+psycopg2://", 1)
    upgrade(url, to="0006")
    assert dump(sync_url, ROW_ID_TYPES) == [("attempts", "integer"), ("chunks", "integer")]
    upgrade(url, to="0007")
    assert dump(sync_url, ROW_ID_TYPES) == [("attempts", "bigint"), ("chunks", "bigint")]
    assert dump(sync_url, SEQUENCE_TYPES) == [
        ("attempts_id_seq", "bigint"),
        ("chunks_id_seq", "bigint"),
    ]
    config = alembic_config()
    config.attributes["database_url"] = url
    command.downgrade(config, "0006")
    assert dump(sync_url, ROW_ID_TYPES) == [("attempts", "integer"), ("chunks", "integer")]
    assert "ix_chunks_collection_model_content" in read_schema(sync_url)[1]["chunks"]
    upgrade(url)
    assert read_schema(sync_url) == expected("postgresql")


def test_sqlite_0007_downgrades_and_upgrades_again(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sheaf.db'}"
    sync_url = f"sqlite:///{tmp_path / 'sheaf.db'}"
    upgrade(url)
    config = alembic_config()
    config.attributes["database_url"] = url
    command.downgrade(config, "0006")
    indexes = read_schema(sync_url)[1]["chunks"]
    assert "ix_chunks_collection_model_content" in indexes
    assert "ix_chunks_content" not in indexes
    upgrade(url)
    assert read_schema(sync_url) == expected("sqlite")


TEXT_SEARCH_STORAGE = (
    "SELECT attstorage::text FROM pg_attribute "
    "WHERE attrelid = 'chunks'::regclass AND attname = 'text_search'"
)


def test_postgres_0011_keeps_text_search_in_the_row_and_downgrades(fresh_postgres: str) -> None:
    """`m` (MAIN): compressed in the row; `x` (EXTENDED, the default) let it go out of line."""
    url = fresh_postgres.replace("postgresql://", "postgresql+asyncpg://", 1)
    sync_url = fresh_postgres.replace("postgresql://", "postgresql+psycopg2://", 1)
    upgrade(url, to="0010")
    assert dump(sync_url, TEXT_SEARCH_STORAGE) == [("x",)]
    upgrade(url)
    assert dump(sync_url, TEXT_SEARCH_STORAGE) == [("m",)]
    config = alembic_config()
    config.attributes["database_url"] = url
    command.downgrade(config, "0010")
    assert dump(sync_url, TEXT_SEARCH_STORAGE) == [("x",)]
