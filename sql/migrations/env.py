"""Alembic environment for Sheaf: runs the migrations over Sheaf's own async engine.

Start it with `sheaf.adapters.sql.migrate.upgrade(url)`, which passes the URL in
`config.attributes`. The whole upgrade is one transaction, and concurrent migrators are
serialised around it: SQLite's engine begins with BEGIN IMMEDIATE, PostgreSQL takes a
transaction advisory lock first, SQL Server a session application lock before the
transaction begins and released after it ends. A lock not granted within `lock_timeout`
seconds raises `MigrationLocked` (sheaf.adapters.sql.migrate). With `entra` set, SQL
Server is signed in to with the Azure identity (the migrator's own, in the Kubernetes
migration Job).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from alembic import context
from sqlalchemy import Connection

from sheaf.adapters.sql import create_engine
from sheaf.adapters.sql.migrate import (
    MIGRATION_LOCK_TIMEOUT_SECONDS,
    session_lock,
    transaction_lock,
)
from sheaf.adapters.sql.schema import metadata

MSSQL_FULLTEXT = Path(__file__).resolve().parent / "mssql_fulltext.sql"


def _database_url() -> str:
    url = context.config.attributes.get("database_url") or context.config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise RuntimeError("no database URL: run sheaf.adapters.sql.migrate.upgrade(url)")
    return str(url)


def _migrate(connection: Connection) -> None:
    timeout = float(context.config.attributes.get("lock_timeout", MIGRATION_LOCK_TIMEOUT_SECONDS))
    with session_lock(connection, timeout), connection.begin():
        transaction_lock(connection, timeout)
        context.configure(
            connection=connection,
            target_metadata=metadata,
            transactional_ddl=True,  # SQLite too: its DDL is transactional under our BEGIN
            render_as_batch=connection.dialect.name == "sqlite",
        )
        context.run_migrations()


def _after_commit(connection: Connection) -> None:
    """SQL Server: what cannot run inside the upgrade's transaction (see revision 0008),
    under the same checked session lock as the upgrade."""
    if connection.dialect.name != "mssql":
        return
    timeout = float(context.config.attributes.get("lock_timeout", MIGRATION_LOCK_TIMEOUT_SECONDS))
    with session_lock(connection, timeout):
        connection.exec_driver_sql(MSSQL_FULLTEXT.read_text("utf-8"))


async def _migrate_async() -> None:
    async with contextlib.AsyncExitStack() as stack:
        credential = None
        if context.config.attributes.get("entra"):  # SQL Server with Microsoft Entra ID
            from azure.identity.aio import DefaultAzureCredential

            client_id = context.config.attributes.get("azure_client_id")
            credential = DefaultAzureCredential(managed_identity_client_id=client_id)
            stack.push_async_callback(credential.close)
        engine = create_engine(_database_url(), pool_size=1, credential=credential)
        stack.push_async_callback(engine.dispose)
        async with engine.connect() as connection:
            await connection.run_sync(_migrate)
        async with engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.run_sync(_after_commit)


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) migrations are not supported; run them online")
asyncio.run(_migrate_async())
