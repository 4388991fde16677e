"""Schema migrations: Alembic's `upgrade head`, run programmatically.

The migration scripts live in `sql/migrations/` next to the stored procedures they install;
a wheel carries that directory as `sheaf/_sql` (see pyproject's force-include).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from sheaf.adapters.sql import parse_database_url
from sheaf.errors import ConfigError


def sql_dir() -> Path:
    """`sheaf/_sql` when installed from a wheel, `<repo>/sql` in a source checkout."""
    package = Path(__file__).resolve().parents[2]
    for candidate in (package / "_sql", package.parent / "sql"):
        if (candidate / "migrations" / "env.py").is_file():
            return candidate
    raise ConfigError(f"Sheaf's SQL directory is missing (looked in {package} and beside it)")


def upgrade(url: str, *, entra: bool = False, azure_client_id: str | None = None) -> None:
    """Bring the database to the newest schema; a no-op when it is already there.

    Synchronous: call it before the event loop starts, or through `asyncio.to_thread`.
    Concurrent callers are safe (the environment serialises them on the database).
    """
    parsed = parse_database_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    config = Config()
    location = str(sql_dir() / "migrations").replace("%", "%%")  # configparser syntax
    config.set_main_option("script_location", location)
    config.attributes["database_url"] = url  # not via the ini: no interpolation of secrets
    config.attributes["entra"] = entra  # SQL Server: sign in with the Azure identity
    config.attributes["azure_client_id"] = azure_client_id
    command.upgrade(config, "head")
