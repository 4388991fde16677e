"""Schema migrations: Alembic's `upgrade head`, run programmatically.

The migration scripts live in `sql/migrations/` next to the stored procedures they install;
a wheel carries that directory as `sheaf/_sql` (see pyproject's force-include).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from sheaf.adapters.sql import parse_database_url
from sheaf.errors import ConfigError, TransientError

log = logging.getLogger(__name__)

UPGRADE_HINT = "run `sheaf db upgrade` (on Kubernetes: the migration Job) and start again"
MIGRATION_LOCK_TIMEOUT_SECONDS = 600.0  # Settings.migration_lock_timeout_seconds
MIGRATION_LOCK_KEY = 0x5EAF_0001  # PostgreSQL: the advisory lock of one migrator per database
MIGRATION_LOCK_RESOURCE = "sheaf-migrations"  # SQL Server: the application lock's name
# SQL Server: an application lock owned by the session, so it is held across the whole
# migration transaction whatever the driver's transaction mode (with @LockOwner =
# 'Transaction' it needs a transaction already open, and an EXEC opens none under ODBC's
# implicit transactions). sp_getapplock reports failure in its return code, never as an
# error: 0 or 1 granted, -1 timed out, -2 cancelled, -3 deadlock victim, -999 bad call.
MSSQL_GET_LOCK = (
    "SET NOCOUNT ON; DECLARE @result INT; "
    "EXEC @result = sp_getapplock @Resource = N'sheaf-migrations', @LockMode = N'Exclusive', "
    "@LockOwner = N'Session', @LockTimeout = :timeout_ms, @DbPrincipal = N'public'; "
    "SELECT @result AS result"
)
MSSQL_RELEASE_LOCK = (
    "EXEC sp_releaseapplock @Resource = N'sheaf-migrations', @LockOwner = N'Session', "
    "@DbPrincipal = N'public'"
)
# PostgreSQL: the transaction's advisory lock, waited for at most the timeout (lock_timeout
# applies to advisory locks too); the rest of the migration then waits as long as it must.
POSTGRES_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', :timeout, true)"
POSTGRES_GET_LOCK = "SELECT pg_advisory_xact_lock(:key)"
POSTGRES_LOCK_NOT_AVAILABLE = "55P03"


class MigrationLocked(TransientError):
    """Another migrator held the database's migration lock for longer than the timeout."""

    code = "migration_locked"


def _locked_out(timeout: float, why: str) -> MigrationLocked:
    return MigrationLocked(
        f"another `sheaf db upgrade` is migrating this database ({why} after {timeout:g} s): "
        "nothing was changed; run it again once the other one has finished, or raise "
        "SHEAF_MIGRATION_LOCK_TIMEOUT_SECONDS"
    )


@contextmanager
def session_lock(connection: Connection, timeout: float) -> Iterator[None]:
    """SQL Server: hold the migration lock around everything inside; no-op elsewhere.

    Call it before the migration's transaction begins: the lock is the session's, taken
    and checked in a transaction of its own, and released only after the migration's
    transaction has ended (or with the session, if the connection dies first).
    """
    if connection.dialect.name != "mssql":
        yield
        return
    result = connection.execute(text(MSSQL_GET_LOCK), {"timeout_ms": round(timeout * 1000)})
    code = int(result.scalar_one())
    connection.commit()
    if code < 0:
        reason = {-1: "the lock was not granted", -3: "chosen as deadlock victim"}
        raise _locked_out(timeout, reason.get(code, f"sp_getapplock returned {code}"))
    try:
        yield
    finally:
        if not connection.invalidated:
            connection.rollback()  # a failed migration's transaction, if any is still open
            connection.execute(text(MSSQL_RELEASE_LOCK))
            connection.commit()


def transaction_lock(connection: Connection, timeout: float) -> None:
    """PostgreSQL: take the migration lock for the transaction under way; no-op elsewhere.

    SQLite needs none: its migration transaction begins with BEGIN IMMEDIATE, which waits
    for (and then excludes) every other writer.
    """
    if connection.dialect.name != "postgresql":
        return
    previous = connection.execute(text("SHOW lock_timeout")).scalar_one()
    connection.execute(text(POSTGRES_LOCK_TIMEOUT), {"timeout": f"{round(timeout * 1000)}ms"})
    try:
        connection.execute(text(POSTGRES_GET_LOCK), {"key": MIGRATION_LOCK_KEY})
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == POSTGRES_LOCK_NOT_AVAILABLE:
            raise _locked_out(timeout, "the advisory lock was not granted") from exc
        raise
    connection.execute(text(POSTGRES_LOCK_TIMEOUT), {"timeout": str(previous)})


def sql_dir() -> Path:
    """`sheaf/_sql` when installed from a wheel, `<repo>/sql` in a source checkout."""
    package = Path(__file__).resolve().parents[2]
    for candidate in (package / "_sql", package.parent / "sql"):
        if (candidate / "migrations" / "env.py").is_file():
            return candidate
    raise ConfigError(f"Sheaf's SQL directory is missing (looked in {package} and beside it)")


def upgrade(
    url: str,
    *,
    entra: bool = False,
    azure_client_id: str | None = None,
    to: str = "head",
    lock_timeout: float = MIGRATION_LOCK_TIMEOUT_SECONDS,
) -> None:
    """Bring the database to the newest schema (or revision `to`); a no-op when it is there.

    Synchronous: call it before the event loop starts, or through `asyncio.to_thread`.
    Concurrent callers are safe: the environment serialises them on the database, and a
    caller that waited `lock_timeout` seconds for another one gives up with
    `MigrationLocked`, having changed nothing.
    """
    parsed = parse_database_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    config = alembic_config()
    config.attributes["database_url"] = url  # not via the ini: no interpolation of secrets
    config.attributes["entra"] = entra  # SQL Server: sign in with the Azure identity
    config.attributes["azure_client_id"] = azure_client_id
    config.attributes["lock_timeout"] = lock_timeout
    command.upgrade(config, to)


async def check_schema(engine: AsyncEngine) -> None:
    """Refuse to run against a database whose schema is older than this code.

    A newer schema is fine: during a rolling upgrade the migration runs first and the
    previous release keeps working on it (contract changes ship as new, versioned
    procedures). An older or missing one would fail on the first request instead, with
    an error about a missing table or procedure.
    """
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    try:
        async with engine.connect() as conn:
            try:
                query = text("SELECT version_num FROM alembic_version")
                current = (await conn.execute(query)).scalar()
            except DBAPIError:
                current = None  # connected, but no alembic_version table: never migrated
    except (DBAPIError, OSError) as exc:  # cannot connect: readiness will say so
        log.warning("database schema not checked: cannot connect", extra={"error": str(exc)})
        return
    if current == head:
        return
    if current is None:
        raise ConfigError(f"the database has no Sheaf schema yet: {UPGRADE_HINT}")
    if current in {revision.revision for revision in script.walk_revisions()}:
        raise ConfigError(
            f"the database schema is at revision {current} but this Sheaf needs {head}: "
            f"{UPGRADE_HINT}"
        )


def alembic_config() -> Config:
    """Alembic's configuration of Sheaf's migrations (for tools and tests: `command.*`)."""
    config = Config()
    location = str(sql_dir() / "migrations").replace("%", "%%")  # configparser syntax
    config.set_main_option("script_location", location)
    return config
