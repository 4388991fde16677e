"""Fresh PostgreSQL databases for one benchmark each, on the server the admin DSN names."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import psycopg


def server_version(admin_dsn: str) -> str | None:
    """`SELECT version()` shortened to "PostgreSQL 15.x", or None when unreachable."""
    try:
        with psycopg.connect(admin_dsn, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            settings = conn.execute(
                "SELECT current_setting('fsync'), current_setting('synchronous_commit'), "
                "current_setting('shared_buffers')"
            ).fetchone()
    except psycopg.Error:
        return None
    assert row is not None
    assert settings is not None
    fsync, synchronous_commit, shared_buffers = settings
    return (
        f"PostgreSQL {row[0]} (fsync={fsync}, synchronous_commit={synchronous_commit}, "
        f"shared_buffers={shared_buffers})"
    )


def unavailable_reason(admin_dsn: str) -> str | None:
    """Why PostgreSQL cannot be used, or None when it can."""
    try:
        with psycopg.connect(admin_dsn, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL unavailable ({str(exc).strip().splitlines()[0]})"


@contextlib.contextmanager
def fresh_database(admin_dsn: str, label: str) -> Iterator[str]:
    """A libpq DSN of a new empty database, dropped (connections and all) afterwards."""
    name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(admin_dsn, name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def with_database(dsn: str, name: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{name}"


def sqlalchemy_url(dsn: str) -> str:
    """The asyncpg URL Sheaf's `SHEAF_DATABASE_URL` takes for the same database."""
    return dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


def database_name(dsn: str) -> str:
    return dsn.rpartition("/")[2]


def backend_pids(admin_dsn: str, database: str) -> list[int]:
    """Server processes serving connections to `database` now (their CPU is its cost)."""
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    return [row[0] for row in rows]
