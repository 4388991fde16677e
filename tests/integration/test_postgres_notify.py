"""PostgreSQL wakes polling workers: LISTEN/NOTIFY on `sheaf_queued` (migration 0006).

A document that becomes ready NOTIFYs; `PostgresDocumentStore.watch_queue` sets the
worker's event, and the claim loop claims at once instead of at its next poll. The
notification is only a hint, so the tests also cut the listener's connection and check
that it comes back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg2
import pytest

from sheaf.adapters.sql import open_store
from sheaf.adapters.sql.postgres import PostgresDocumentStore
from sheaf.aio import wait_event
from sheaf.domain.models import ErrorInfo, ErrorKind, NewDocument, ReleaseOutcome, Status
from sheaf.services.ingest import accept_upload
from tests.unit.conftest import make_deps
from worker.runner import Worker

pytestmark = pytest.mark.integration

LEASE = 30.0


@pytest.fixture
async def store(empty_postgres_url: str) -> AsyncIterator[PostgresDocumentStore]:
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


@pytest.fixture
async def listening(store: PostgresDocumentStore) -> AsyncIterator[asyncio.Event]:
    """`watch_queue` running; the event it sets, cleared once the listener is up."""
    arrived, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(store.watch_queue(arrived, stop))
    assert await wait_event(arrived, 5), "the listener never connected"
    arrived.clear()
    yield arrived
    stop.set()
    await asyncio.wait_for(task, 5)


async def _document(store: PostgresDocumentStore) -> str:
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


async def test_a_new_document_wakes_the_listener(
    store: PostgresDocumentStore, listening: asyncio.Event
) -> None:
    await _document(store)
    assert await wait_event(listening, 2)


async def test_only_ready_documents_wake_it(
    store: PostgresDocumentStore, listening: asyncio.Event
) -> None:
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
    store: PostgresDocumentStore,
    listening: asyncio.Event,
    admin: psycopg2.extensions.connection,
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


async def test_a_polling_worker_claims_a_new_document_at_once(
    store: PostgresDocumentStore,
) -> None:
    deps = dataclasses.replace(make_deps(poll_interval_seconds=30.0), store=store)
    stop = asyncio.Event()
    run = asyncio.create_task(Worker(deps).run(stop))
    try:
        await asyncio.sleep(1.0)  # idle: the worker's next poll is 15-45 s away

        async def body() -> AsyncIterator[bytes]:
            yield b"alpha beta gamma delta"

        started = time.monotonic()
        document = (await accept_upload(deps, "c", "f.txt", body())).document
        while (found := await store.get_document(document.id)) and found.status not in (
            Status.COMPLETED,
            Status.FAILED,
        ):
            assert time.monotonic() - started < 10, found
            await asyncio.sleep(0.05)
        assert found.status is Status.COMPLETED
        assert time.monotonic() - started < 10
    finally:
        stop.set()
        await asyncio.wait_for(run, 10)
