"""Schema migrations: Alembic's `upgrade head`, run programmatically.

The migration scripts live in `sql/migrations/` next to the stored procedures they install;
a wheel carries that directory as `sheaf/_sql` (see pyproject's force-include).
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from sheaf.adapters.sql import parse_database_url
from sheaf.errors import ConfigError

log = logging.getLogger(__name__)

UPGRADE_HINT = "run `sheaf db upgrade` (on Kubernetes: the migration Job) and start again"


def sql_dir() -> Path:
    """`sheaf/_sql` when installed from a wheel, `<repo>/sql` in a source checkout."""
    package = Path(__file__).resolve().parents[2]
    for candidate in (package / "_sql", package.parent / "sql"):
        if (candidate / "migrations" / "env.py").is_file():
            return candidate
    raise ConfigError(f"Sheaf's SQL directory is missing (looked in {package} and beside it)")


def upgrade(
    url: str, *, entra: bool = False, azure_client_id: str | None = None, to: str = "head"
) -> None:
    """Bring the database to the newest schema (or revision `to`); a no-op when it is there.

    Synchronous: call it before the event loop starts, or through `asyncio.to_thread`.
    Concurrent callers are safe (the environment serialises them on the database).
    """
    parsed = parse_database_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    config = _config()
    config.attributes["database_url"] = url  # not via the ini: no interpolation of secrets
    config.attributes["entra"] = entra  # SQL Server: sign in with the Azure identity
    config.attributes["azure_client_id"] = azure_client_id
    command.upgrade(config, to)


async def check_schema(engine: AsyncEngine) -> None:
    """Refuse to run against a database whose schema is older than this code.

    A newer schema is fine: during a rolling upgrade the migration runs first and the
    previous release keeps working on it (contract changes ship as new, versioned
    procedures). An older or missing one would fail on the first request instead, with
    an error about a missing table or procedure.
    """
    script = ScriptDirectory.from_config(_config())
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


def _config() -> Config:
    config = Config()
    location = str(sql_dir() / "migrations").replace("%", "%%")  # configparser syntax
    config.set_main_option("script_location", location)
    return config
