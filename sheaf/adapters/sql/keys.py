"""`sheaf.ports.KeyStore` on the `api_keys` table (migration 0003): SQLAlchemy Core only,
so the same statements run on SQLite, PostgreSQL and SQL Server.

It shares the document store's engine (`SqlKeyStore.of(store)` in the API) or owns one
(`open_key_store(url)` in the CLI). Key times are audit records only — nothing compares
them across processes — so they come from this process's clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import RowMapping, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sheaf.adapters.sql import create_engine
from sheaf.adapters.sql.schema import api_keys
from sheaf.adapters.sql.store import READ_ONLY, translated_errors
from sheaf.domain.keys import ApiKey, NewApiKey, StoredKey
from sheaf.domain.scopes import Scope
from sheaf.errors import ConfigError

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential


class SqlKeyStore:
    def __init__(self, engine: AsyncEngine, *, owns_engine: bool = False) -> None:
        self._engine = engine
        self._reader = engine.execution_options(**{READ_ONLY: True})
        self._owns_engine = owns_engine

    async def create_key(self, key: NewApiKey) -> ApiKey:
        created = ApiKey(key.id, key.name, key.scope, key.collections, datetime.now(UTC))
        row = {
            "id": key.id,
            "name": key.name,
            "scope": key.scope.value,
            "collections": ",".join(key.collections),
            "secret_sha256": key.secret_sha256,
            "created_at": created.created_at,
        }
        async with self._connect(self._engine) as conn:
            await conn.execute(insert(api_keys).values(**row))
        return created

    async def find_key(self, key_id: str) -> StoredKey | None:
        async with self._connect(self._reader) as conn:
            result = await conn.execute(select(api_keys).where(api_keys.c.id == key_id))
            row = result.mappings().one_or_none()
        return None if row is None else StoredKey(_key(row), row["secret_sha256"])

    async def list_keys(self) -> list[ApiKey]:
        query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
        async with self._connect(self._reader) as conn:
            return [_key(row) for row in (await conn.execute(query)).mappings()]

    async def revoke_key(self, key_id: str) -> ApiKey | None:
        k = api_keys.c
        async with self._connect(self._engine) as conn:
            await conn.execute(
                update(api_keys)
                .where(k.id == key_id, k.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            row = (await conn.execute(select(api_keys).where(k.id == key_id))).mappings()
            found = row.one_or_none()
        return None if found is None else _key(found)

    async def close(self) -> None:
        if self._owns_engine:
            await self._engine.dispose()

    @asynccontextmanager
    async def _connect(self, engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
        try:
            with translated_errors():
                async with engine.begin() as conn:
                    yield conn
        except (sa_exc.ProgrammingError, sa_exc.OperationalError) as exc:
            if _missing_table(exc):
                raise ConfigError(
                    "the database has no api_keys table yet: run `sheaf db upgrade` first"
                ) from exc
            raise


_MISSING_TABLE = ("no such table", "does not exist", "invalid object name")


def _missing_table(exc: Exception) -> bool:
    message = str(exc).lower()
    return "api_keys" in message and any(m in message for m in _MISSING_TABLE)


def _key(row: RowMapping) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        scope=Scope(row["scope"]),
        collections=tuple(row["collections"].split(",")),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


def open_key_store(url: str, *, credential: AsyncTokenCredential | None = None) -> SqlKeyStore:
    """A key store with an engine of its own (for the CLI); close it when done."""
    return SqlKeyStore(create_engine(url, pool_size=1, credential=credential), owns_engine=True)
