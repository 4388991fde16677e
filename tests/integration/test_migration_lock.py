"""Migrations are serialised on the database, and a migrator locked out says so (point 1).

A second session holds PostgreSQL's migration advisory lock, as a migrator in the middle
of its transaction would; `upgrade` must wait for it, and give up after its timeout with
`MigrationLocked` and an unchanged database. `sheaf db upgrade` then exits 1 with the
message. SQL Server's lock is checked on the SQL it sends (test_mssql_migrations.py) and,
with SHEAF_TEST_MSSQL_URL, on a real server here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from sheaf.adapters.sql.migrate import (
    MIGRATION_LOCK_KEY,
    MIGRATION_LOCK_RESOURCE,
    MigrationLocked,
    upgrade,
)
from tests.integration.conftest import MSSQL_URL, NO_MSSQL

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def other_migrator(fresh_postgres_url: str) -> Iterator[Any]:
    """A session on the fresh database holding the migration lock, released at the end."""
    dsn = fresh_postgres_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
    try:
        yield conn
    finally:
        conn.close()


def tables(url: str) -> list[str]:
    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        found = sorted(name for (name,) in cur.fetchall())
    conn.close()
    return found


def test_a_migrator_gives_up_after_the_timeout_having_changed_nothing(
    fresh_postgres_url: str, other_migrator: Any
) -> None:
    started = time.monotonic()
    with pytest.raises(MigrationLocked, match=r"another `sheaf db upgrade` is migrating"):
        upgrade(fresh_postgres_url, lock_timeout=0.5)
    assert time.monotonic() - started >= 0.5
    assert tables(fresh_postgres_url) == []


def test_a_migrator_waits_for_the_one_under_way(
    fresh_postgres_url: str, other_migrator: Any
) -> None:
    def finish_later() -> None:
        time.sleep(1.0)
        with other_migrator.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))

    releaser = threading.Thread(target=finish_later)
    started = time.monotonic()
    releaser.start()
    upgrade(fresh_postgres_url, lock_timeout=30)
    releaser.join()
    assert time.monotonic() - started >= 1.0
    assert "documents" in tables(fresh_postgres_url)


def test_sheaf_db_upgrade_exits_1_with_the_message(
    fresh_postgres_url: str, other_migrator: Any, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHEAF_")}
    env.update(
        SHEAF_DATABASE_URL=fresh_postgres_url,
        SHEAF_MIGRATION_LOCK_TIMEOUT_SECONDS="0.5",
        PYTHONPATH=str(ROOT),
    )
    done = subprocess.run(
        [sys.executable, "-m", "sheaf", "db", "upgrade"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "Error: another `sheaf db upgrade` is migrating this database" in done.stderr
    assert "Traceback" not in done.stderr


def test_mssql_a_migrator_gives_up_while_another_session_holds_the_lock() -> None:
    """On SQL Server (SHEAF_TEST_MSSQL_URL): the session application lock, for real."""
    if not MSSQL_URL:
        pytest.skip(NO_MSSQL)
    import sqlalchemy as sa

    sync = sa.make_url(MSSQL_URL).set(drivername="mssql+pyodbc")
    engine = sa.create_engine(sync, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as holder:
            granted = holder.exec_driver_sql(
                "DECLARE @r INT; EXEC @r = sp_getapplock @Resource = N'"
                + MIGRATION_LOCK_RESOURCE
                + "', @LockMode = N'Exclusive', @LockOwner = N'Session', "
                "@DbPrincipal = N'public'; SELECT @r"
            ).scalar_one()
            assert granted >= 0
            with pytest.raises(MigrationLocked, match=r"\(the lock was not granted after"):
                upgrade(MSSQL_URL, lock_timeout=0.5)
    finally:
        engine.dispose()
    upgrade(MSSQL_URL)  # the lock went with the holder's session
