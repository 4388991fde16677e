"""The SQL adapter: one `DocumentStore` for SQLite (embedded default), PostgreSQL and SQL Server.

`open_store(url)` picks the dialect from the URL; the schema comes from the migrations
(`sheaf.adapters.sql.migrate.upgrade`). Nothing here connects until a method is awaited.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine

from sheaf.adapters.sql.mssql import MssqlDocumentStore, create_mssql_engine, validate_mssql_url
from sheaf.adapters.sql.postgres import PostgresDocumentStore, create_postgres_engine
from sheaf.adapters.sql.postings import DEFAULT_KEYWORD_CACHE_BYTES
from sheaf.adapters.sql.sqlite import SqliteDocumentStore, create_sqlite_engine
from sheaf.adapters.sql.store import DEFAULT_SEARCH_CACHE_BYTES, SqlDocumentStore
from sheaf.errors import ConfigError

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

__all__ = ["SqlDocumentStore", "create_engine", "open_store", "parse_database_url"]

SUPPORTED_URLS = (
    "sqlite+aiosqlite:///PATH",
    "postgresql+asyncpg://USER@HOST[:PORT]/DB",
    "mssql+aioodbc://[USER:PASSWORD]@HOST[:PORT]/DB?driver=ODBC+Driver+18+for+SQL+Server",
)
_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg", "mssql+aioodbc")


def parse_database_url(url: str) -> URL:
    """The URL when Sheaf supports it, else a `ConfigError` naming the supported forms.

    Messages never repeat the URL itself: it may carry a password.
    """
    supported = "supported: " + ", ".join(SUPPORTED_URLS)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"the database URL cannot be parsed; {supported}") from exc
    if parsed.drivername not in _DRIVERS:
        raise ConfigError(f"unsupported database URL scheme {parsed.drivername!r}; {supported}")
    if parsed.drivername.startswith("sqlite") and parsed.database in (None, "", ":memory:"):
        raise ConfigError(
            "SQLite needs a file path (workers share it); "
            "use sheaf.testing.InMemoryDocumentStore for an in-memory store"
        )
    if parsed.get_backend_name() == "mssql":
        validate_mssql_url(parsed)
    return parsed


def create_engine(
    url: str, *, pool_size: int = 5, credential: AsyncTokenCredential | None = None
) -> AsyncEngine:
    """The engine `open_store` would use; the migrations run over it too.

    `credential` (an azure-identity credential) signs in to SQL Server with Entra ID
    access tokens instead of the URL's SQL login; other databases take none.
    """
    parsed = parse_database_url(url)
    backend = parsed.get_backend_name()
    if credential is not None and backend != "mssql":
        raise ConfigError("Entra ID sign-in (a credential) is supported for SQL Server only")
    if backend == "sqlite":
        return create_sqlite_engine(parsed, pool_size)
    if backend == "mssql":
        return create_mssql_engine(parsed, pool_size, credential)
    return create_postgres_engine(parsed, pool_size)


async def open_store(
    url: str,
    *,
    pool_size: int = 5,
    credential: AsyncTokenCredential | None = None,
    search_cache_bytes: int = DEFAULT_SEARCH_CACHE_BYTES,
    keyword_cache_bytes: int = DEFAULT_KEYWORD_CACHE_BYTES,
) -> SqlDocumentStore:
    """The store for `url`. `search_cache_bytes` bounds the memory exact search keeps
    vectors in between searches (`sheaf.adapters.sql.vectors`); 0 reads them every time.
    `keyword_cache_bytes` bounds PostgreSQL's keyword postings the same way
    (`sheaf.adapters.sql.postings`); 0 scores every search on the server."""
    engine = create_engine(url, pool_size=pool_size, credential=credential)
    if engine.dialect.name == "sqlite":
        return SqliteDocumentStore(engine, search_cache_bytes=search_cache_bytes)
    if engine.dialect.name == "mssql":  # the lease calls get an autocommit pool of their own
        procedures = create_mssql_engine(
            parse_database_url(url), pool_size, credential, autocommit=True
        )
        return MssqlDocumentStore(
            engine, procedures=procedures, search_cache_bytes=search_cache_bytes
        )
    return PostgresDocumentStore(
        engine, search_cache_bytes=search_cache_bytes, keyword_cache_bytes=keyword_cache_bytes
    )
