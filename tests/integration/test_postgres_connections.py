"""PostgreSQL connections: one round trip per lease call, and dead connections never reused.

The lease functions run in autocommit and no ping precedes a checkout, so the store must
itself keep a connection the server closed out of use: one closed while it sat in the pool
is replaced at checkout, one lost under a call is discarded and the call sent once more on
a fresh connection. Connections are closed here the way an operator (or a failover) does
it: `pg_terminate_backend` from another session.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg2
import pytest
from sqlalchemy import text

from sheaf.adapters.sql import open_store
from sheaf.adapters.sql.postgres import PostgresDocumentStore
from sheaf.domain.models import AcquireOutcome, Completion, NewDocument, ReleaseOutcome, Status
from sheaf.errors import StoreUnavailable

pytestmark = pytest.mark.integration

LEASE = 30.0


@pytest.fixture
async def store(empty_postgres_url: str) -> AsyncIterator[PostgresDocumentStore]:
    opened = await open_store(empty_postgres_url, pool_size=1)
    assert isinstance(opened, PostgresDocumentStore)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def locker(postgres_dsn: str) -> Iterator[psycopg2.extensions.connection]:
    """A second session, to hold a row lock while `pg_admin` watches and terminates."""
    conn = psycopg2.connect(postgres_dsn)
    try:
        yield conn
    finally:
        conn.close()


async def _document(store: PostgresDocumentStore) -> str:
    document_id = str(uuid.uuid4())
    new = NewDocument(
        id=document_id,
        collection="c",
        filename="f.txt",
        content_type="text/plain",
        size_bytes=1,
        sha256=uuid.uuid4().hex * 2,
        blob_key=f"c/{document_id}",
        max_attempts=3,
    )
    await store.create_document(new)
    return document_id


def _terminate(pg_admin: psycopg2.extensions.connection, pid: int) -> None:
    with pg_admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert cur.fetchone() == (True,)


def _waiting_acquire(
    pg_admin: psycopg2.extensions.connection, *, besides: int = 0, timeout: float = 10.0
) -> int:
    """The pid of the backend running `acquire_document_lease`, once it waits for a lock
    (other than `besides`, a backend just terminated that may still be listed)."""
    deadline = time.monotonic() + timeout
    with pg_admin.cursor() as cur:
        while time.monotonic() < deadline:
            cur.execute(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%%acquire_document_lease%%' "
                "AND pid NOT IN (pg_backend_pid(), %s)",
                (besides,),
            )
            row = cur.fetchone()
            if row is not None:
                return int(row[0])
            time.sleep(0.02)
    raise AssertionError("no acquire_document_lease call is waiting for the row lock")


async def _backend_pid(store: PostgresDocumentStore) -> int:
    async with store.engine.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


class _Writes:
    """Counts what the client sends on the pool's only connection: one write, one round trip
    (asyncpg sends Bind, Execute and Sync of a prepared statement together)."""

    def __init__(self) -> None:
        self.count = 0

    @classmethod
    async def on(cls, store: PostgresDocumentStore) -> _Writes:
        counter = cls()
        async with store.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            transport = raw.driver_connection._transport  # type: ignore[union-attr]
            send = transport.write

            def counted(data: bytes) -> None:
                counter.count += 1
                send(data)

            transport.write = counted
        return counter


async def test_every_lease_call_is_one_round_trip(store: PostgresDocumentStore) -> None:
    """No ping before it, no BEGIN or COMMIT around it: one statement in autocommit."""
    documents = [await _document(store) for _ in range(2)]
    completion = Completion(1, 0, {"total": 0.1}, "m", 3)

    async def cycle(document_id: str) -> list[int]:
        trips = []
        for step in range(5):
            before = writes.count
            if step == 0:
                [lease] = await store.claim_queued_documents("w", LEASE, 1)
            elif step == 1:
                assert await store.renew_document_lease(document_id, lease.token, LEASE, "x")
            elif step == 2:
                released = await store.release_document_lease(
                    document_id, lease.token, ReleaseOutcome.INTERRUPTED
                )
                assert released.applied
            elif step == 3:
                acquired = await store.acquire_document_lease(document_id, "w", LEASE)
                assert acquired.lease is not None
                lease = acquired.lease
            else:
                await store.complete(lease, completion)
            trips.append(writes.count - before)
        return trips

    writes = await _Writes.on(store)
    await cycle(documents[0])  # each statement is prepared on its first use
    assert await cycle(documents[1]) == [1, 1, 1, 1, 1]


async def test_a_connection_closed_in_the_pool_is_replaced_without_an_error(
    store: PostgresDocumentStore, pg_admin: psycopg2.extensions.connection
) -> None:
    document_id = await _document(store)
    first = await _backend_pid(store)  # the pool's only connection
    _terminate(pg_admin, first)
    await asyncio.sleep(0.3)  # the event loop reads the server's goodbye meanwhile
    [lease] = await store.claim_queued_documents("w", LEASE, 1)
    assert lease.document_id == document_id
    _terminate(pg_admin, await _backend_pid(store))
    await asyncio.sleep(0.3)
    found = await store.get_document(document_id)  # a transaction of several statements
    assert found is not None
    assert found.status is Status.PROCESSING
    assert await _backend_pid(store) != first


async def test_a_connection_lost_under_a_call_is_discarded_and_the_call_sent_again(
    store: PostgresDocumentStore,
    pg_admin: psycopg2.extensions.connection,
    locker: psycopg2.extensions.connection,
) -> None:
    document_id = await _document(store)
    with locker.cursor() as cur:  # hold the row lock the acquire waits for
        cur.execute("SELECT 1 FROM documents WHERE id = %s FOR UPDATE", (document_id,))
        call = asyncio.create_task(store.acquire_document_lease(document_id, "w", LEASE))
        victim = await asyncio.to_thread(_waiting_acquire, pg_admin)
        _terminate(pg_admin, victim)
        retry = await asyncio.to_thread(_waiting_acquire, pg_admin, besides=victim)
        assert retry != victim  # sent again, on a fresh connection
        locker.commit()
    result = await asyncio.wait_for(call, 10)
    assert result.outcome is AcquireOutcome.ACQUIRED
    found = await store.get_document(document_id)
    assert found is not None
    assert found.attempts == 1  # the killed call's transaction left nothing behind
    assert [a.outcome.value for a in found.history] == ["running"]


async def test_a_second_lost_connection_is_reported_as_unavailable(
    store: PostgresDocumentStore,
    pg_admin: psycopg2.extensions.connection,
    locker: psycopg2.extensions.connection,
) -> None:
    document_id = await _document(store)
    with locker.cursor() as cur:
        cur.execute("SELECT 1 FROM documents WHERE id = %s FOR UPDATE", (document_id,))
        call = asyncio.create_task(store.acquire_document_lease(document_id, "w", LEASE))
        first = await asyncio.to_thread(_waiting_acquire, pg_admin)
        _terminate(pg_admin, first)
        _terminate(pg_admin, await asyncio.to_thread(_waiting_acquire, pg_admin, besides=first))
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(call, 10)
    locker.rollback()
    found = await store.get_document(document_id)  # and the store works on afterwards
    assert found is not None
    assert (found.status, found.attempts) == (Status.QUEUED, 0)
