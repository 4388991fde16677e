"""The SQL adapter: one `DocumentStore` for SQLite (embedded default) and PostgreSQL.

`open_store(url)` picks the dialect from the URL; the schema comes from the migrations
(`sheaf.adapters.sql.migrate.upgrade`). Nothing here connects until a method is awaited.
"""

from __future__ import annotations

from sqlalchemy import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine

from sheaf.adapters.sql.postgres import PostgresDocumentStore, create_postgres_engine
from sheaf.adapters.sql.sqlite import SqliteDocumentStore, create_sqlite_engine
from sheaf.adapters.sql.store import SqlDocumentStore
from sheaf.errors import ConfigError

__all__ = ["SqlDocumentStore", "create_engine", "open_store", "parse_database_url"]

SUPPORTED_URLS = ("sqlite+aiosqlite:///PATH", "postgresql+asyncpg://USER@HOST[:PORT]/DB")


def parse_database_url(url: str) -> URL:
    """The URL when Sheaf supports it, else a `ConfigError` naming the supported forms.

    Messages never repeat the URL itself: it may carry a password.
    """
    supported = "supported: " + ", ".join(SUPPORTED_URLS)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"the database URL cannot be parsed; {supported}") from exc
    if parsed.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise ConfigError(f"unsupported database URL scheme {parsed.drivername!r}; {supported}")
    if parsed.drivername.startswith("sqlite") and parsed.database in (None, "", ":memory:"):
        raise ConfigError(
            "SQLite needs a file path (workers share it); "
            "use sheaf.testing.InMemoryDocumentStore for an in-memory store"
        )
    return parsed


def create_engine(url: str, *, pool_size: int = 5) -> AsyncEngine:
    """The engine `open_store` would use; the migrations run over it too."""
    parsed = parse_database_url(url)
    if parsed.get_backend_name() == "sqlite":
        return create_sqlite_engine(parsed, pool_size)
    return create_postgres_engine(parsed, pool_size)


async def open_store(url: str, *, pool_size: int = 5) -> SqlDocumentStore:
    engine = create_engine(url, pool_size=pool_size)
    if engine.dialect.name == "sqlite":
        return SqliteDocumentStore(engine)
    return PostgresDocumentStore(engine)
