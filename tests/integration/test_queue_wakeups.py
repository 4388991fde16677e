"""Idle polling workers are woken when a document arrives (`DocumentStore.watch_queue`).

PostgreSQL: a document that becomes ready NOTIFYs `sheaf_queued` (migration 0006) and the
store LISTENs. SQLite: the store watches `PRAGMA data_version`, which any other
connection's commit changes. Either way the worker's claim loop claims at once instead of
at its next poll. The wake-up is only a hint, so the PostgreSQL tests also cut the
listener's connection and check that it comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg2
import pytest

from sheaf.adapters.sql import open_store
from sheaf.adapters.sql.postgres import PostgresDocumentStore
from sheaf.adapters.sql.store import SqlDocumentStore
from sheaf.aio import wait_event
from sheaf.domain.models import ErrorInfo, ErrorKind, NewDocument, ReleaseOutcome, Status
from sheaf.services.ingest import accept_upload
from tests.unit.conftest import make_deps
from worker.runner import Worker

pytestmark = pytest.mark.integration

LEASE = 30.0


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """Synchronous, like the conftest's URL fixtures: migrations run outside the loop."""
    if request.param == "sqlite":
        path = tmp_path / "sheaf.db"
        shutil.copyfile(sqlite_template, path)
        return f"sqlite+aiosqlite:///{path}"
    found: str = request.getfixturevalue("empty_postgres_url")
    return found


@pytest.fixture
async def store(url: str) -> AsyncIterator[SqlDocumentStore]:
    opened = await open_store(url, pool_size=2)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def postgres(empty_postgres_url: str) -> AsyncIterator[PostgresDocumentStore]:
    opened = await open_store(empty_postgres_url, pool_size=2)
    assert isinstance(opened, PostgresDocumentStore)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def admin(postgres_dsn: str) -> Iterator[psycopg2.extensions.connection]:
    conn = psycopg2.connect(postgres_dsn)
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()


@contextlib.asynccontextmanager
async def watching(store: SqlDocumentStore) -> AsyncIterator[asyncio.Event]:
    """`watch_queue` running; the event it sets, cleared once the watcher is up."""
    arrived, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(store.watch_queue(arrived, stop))
    if isinstance(store, PostgresDocumentStore):  # set on connecting: nothing to wait for else
        assert await wait_event(arrived, 5), "the listener never connected"
    await asyncio.sleep(0.2)
    arrived.clear()
    try:
        yield arrived
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def _document(store: SqlDocumentStore) -> str:
    document_id = str(uuid.uuid4())
    await store.create_document(
        NewDocument(
            id=document_id,
            collection="c",
            filename="f.txt",
            content_type="text/plain",
            size_bytes=1,
            sha256=uuid.uuid4().hex * 2,
            blob_key=f"c/{document_id}",
            max_attempts=3,
        )
    )
    return document_id


async def test_a_new_document_wakes_the_watcher(store: SqlDocumentStore) -> None:
    async with watching(store) as arrived:
        assert not await wait_event(arrived, 0.3)  # nothing happened: no wake-up
        await _document(store)
        assert await wait_event(arrived, 2)


async def test_on_postgres_only_ready_documents_wake_it(postgres: PostgresDocumentStore) -> None:
    async with watching(postgres) as listening:
        await _only_ready_wake(postgres, listening)


async def _only_ready_wake(store: PostgresDocumentStore, listening: asyncio.Event) -> None:
    await _document(store)
    assert await wait_event(listening, 2)
    [lease] = await store.claim_queued_documents("w", LEASE, 1)
    listening.clear()
    error = ErrorInfo("flaky", "try later", ErrorKind.TRANSIENT)
    released = await store.release_document_lease(
        lease.document_id, lease.token, ReleaseOutcome.TRANSIENT, error, 60.0
    )
    assert released.status is Status.QUEUED  # queued again, but not before a minute
    assert not await wait_event(listening, 0.5)
    await _document(store)
    [lease] = await store.claim_queued_documents("w", LEASE, 1)
    listening.clear()
    await store.release_document_lease(
        lease.document_id, lease.token, ReleaseOutcome.INTERRUPTED, None, 0.0
    )
    assert await wait_event(listening, 2)  # interrupted: ready at once


async def test_the_listener_comes_back_after_its_connection_is_cut(
    postgres: PostgresDocumentStore, admin: psycopg2.extensions.connection
) -> None:
    async with watching(postgres) as listening:
        await _comes_back(postgres, listening, admin)


async def _comes_back(
    store: PostgresDocumentStore, listening: asyncio.Event, admin: psycopg2.extensions.connection
) -> None:
    with admin.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
        assert cur.fetchall() == [(True,)]
    assert await wait_event(listening, 5), "no reconnection"  # set again on reconnecting
    listening.clear()
    await _document(store)
    assert await wait_event(listening, 2)


async def test_a_polling_worker_claims_a_new_document_at_once(store: SqlDocumentStore) -> None:
    deps = dataclasses.replace(make_deps(poll_interval_seconds=30.0), store=store)
    stop = asyncio.Event()
    run = asyncio.create_task(Worker(deps).run(stop))
    try:
        await asyncio.sleep(1.0)  # idle: the worker's next poll is 15-45 s away

        async def body() -> AsyncIterator[bytes]:
            yield b"alpha beta gamma delta"

        started = time.monotonic()
        document = (await accept_upload(deps, "c", "f.txt", body())).document
        while True:
            found = await store.get_document(document.id)
            assert found is not None
            if found.status in (Status.COMPLETED, Status.FAILED):
                break
            assert time.monotonic() - started < 10, found
            await asyncio.sleep(0.05)
        assert found.status is Status.COMPLETED
    finally:
        stop.set()
        await asyncio.wait_for(run, 10)
