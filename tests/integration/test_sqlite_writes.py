"""SQLite: one process's write transactions queue in the store, not in SQLite's busy handler.

The busy handler sleeps 1, 2, 5, 10 ... up to 100 ms between tries, so writers of one
process that met at `BEGIN IMMEDIATE` (a worker's documents, each on its own pooled
connection) waited far longer than the write they waited for. With the busy timeout set
to zero, any in-process writer that still reached SQLite's lock would fail at once with
"database is locked": none may.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from sheaf.adapters.sql import open_store
from tests.integration.conftest import NewDocumentFactory

pytestmark = pytest.mark.integration


async def test_concurrent_writes_of_one_process_never_meet_the_lock(
    sqlite_template: Path, tmp_path: Path, new_document: NewDocumentFactory
) -> None:
    path = tmp_path / "writes.db"
    path.write_bytes(sqlite_template.read_bytes())
    store = await open_store(f"sqlite+aiosqlite:///{path}", pool_size=8)

    def no_waiting(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout = 0")  # after Sheaf's own pragmas

    event.listen(store.engine.sync_engine, "connect", no_waiting)
    await store.engine.dispose()  # every connection from now on is made with it
    try:
        created = await asyncio.gather(*(store.create_document(new_document()) for _ in range(40)))
        assert all(fresh for _, fresh in created)
        leases = await asyncio.gather(
            *(store.acquire_document_lease(doc.id, "w", 30.0) for doc, _ in created)
        )
        assert all(result.lease is not None for result in leases)
    finally:
        await store.close()
