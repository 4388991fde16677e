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
import time
from collections.abc import AsyncIterator, Callable

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
NewDocumentFactory = Callable[..., NewDocument]  # the fixture of conftest.py


@pytest.fixture
async def store(sql_url: str) -> AsyncIterator[SqlDocumentStore]:
    opened = await open_store(sql_url, pool_size=2)
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


async def test_a_new_document_wakes_the_watcher(
    store: SqlDocumentStore, new_document: NewDocumentFactory
) -> None:
    async with watching(store) as arrived:
        assert not await wait_event(arrived, 0.3)  # nothing happened: no wake-up
        await store.create_document(new_document())
        assert await wait_event(arrived, 2)


async def test_on_postgres_only_ready_documents_wake_it(
    postgres: PostgresDocumentStore, new_document: NewDocumentFactory
) -> None:
    async with watching(postgres) as listening:
        await postgres.create_document(new_document())
        assert await wait_event(listening, 2)
        [lease] = await postgres.claim_queued_documents("w", LEASE, 1)
        listening.clear()
        error = ErrorInfo("flaky", "try later", ErrorKind.TRANSIENT)
        released = await postgres.release_document_lease(
            lease.document_id, lease.token, ReleaseOutcome.TRANSIENT, error, 60.0
        )
        assert released.status is Status.QUEUED  # queued again, but not before a minute
        assert not await wait_event(listening, 0.5)
        await postgres.create_document(new_document())
        [lease] = await postgres.claim_queued_documents("w", LEASE, 1)
        listening.clear()
        await postgres.release_document_lease(
            lease.document_id, lease.token, ReleaseOutcome.INTERRUPTED, None, 0.0
        )
        assert await wait_event(listening, 2)  # interrupted: ready at once


async def test_the_listener_comes_back_after_its_connection_is_cut(
    postgres: PostgresDocumentStore,
    pg_admin: psycopg2.extensions.connection,
    new_document: NewDocumentFactory,
) -> None:
    async with watching(postgres) as listening:
        with pg_admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
            )
            assert cur.fetchall() == [(True,)]
        assert await wait_event(listening, 5), "no reconnection"  # set again on reconnecting
        listening.clear()
        await postgres.create_document(new_document())
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
