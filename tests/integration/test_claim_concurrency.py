"""Claiming under real contention: 8 processes race over 500 queued PostgreSQL rows.

Each process (spawned, so nothing is shared but the database) waits at a barrier, then
loops claim → release(success) until nothing is left, recording every lease it got and
the wall-clock window of every claim call. The checker then demands that each document
was leased exactly once, on its first attempt, and that claims of different processes
really overlapped in time. The same checker run with a deliberately racy claimer (SELECT,
pause, UPDATE without re-checking the status) must find documents leased twice: proof
that the test can catch the race `FOR UPDATE SKIP LOCKED` prevents.

Acquire-by-id is the opposite policy: it waits briefly for a locked row instead of
skipping it, and answers `held` only when the lock outlasts that wait.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import psycopg2
import pytest
from sqlalchemy import text

from sheaf.adapters.sql import SqlDocumentStore, open_store
from sheaf.domain.models import AcquireOutcome, NewDocument, ReleaseOutcome, Status

pytestmark = pytest.mark.integration

PROCESSES = 8
DOCUMENTS = 500
BATCH = 4  # a worker's free slots per claim
LEASE_SECONDS = 60.0

Claimed = tuple[str, str, int]  # document_id, lease token, attempt
Claimer = Callable[[SqlDocumentStore, str, int], Awaitable[list[Claimed]]]


@dataclass(frozen=True)
class Claim:
    process: int
    document_id: str
    token: str
    attempt: int


@dataclass(frozen=True)
class Window:
    """One claim call of one process, in wall-clock seconds (processes share that clock)."""

    process: int
    started: float
    ended: float


async def claim_with_the_store(store: SqlDocumentStore, worker: str, limit: int) -> list[Claimed]:
    leases = await store.claim_queued_documents(worker, LEASE_SECONDS, limit)
    return [(lease.document_id, lease.token, lease.attempt) for lease in leases]


async def claim_racily(store: SqlDocumentStore, worker: str, limit: int) -> list[Claimed]:
    """The classic bug: read candidates, then update them by id without re-checking."""
    async with store.engine.begin() as conn:
        query = text(
            "SELECT id FROM documents WHERE status = 'queued' ORDER BY created_at LIMIT :n"
        )
        ids = (await conn.execute(query, {"n": limit})).scalars().all()
    await asyncio.sleep(0.005)
    claimed = []
    async with store.engine.begin() as conn:
        for document_id in ids:
            token = str(uuid.uuid4())
            update = text(
                "UPDATE documents SET status = 'processing', lease_token = :token,"
                " lease_owner = :worker, attempts = attempts + 1,"
                " lease_expires_at = clock_timestamp() + interval '60 seconds'"
                " WHERE id = :id RETURNING attempts"
            )
            values = {"token": token, "worker": worker, "id": document_id}
            attempt = (await conn.execute(update, values)).scalar_one()
            claimed.append((document_id, token, attempt))
    return claimed


CLAIMERS: dict[str, Claimer] = {"store": claim_with_the_store, "racy": claim_racily}


def claim_until_empty(
    url: str, claimer: str, process: int, barrier: Any
) -> tuple[list[Claim], list[Window]]:
    """One claimer process (the spawn target): its claims and claim windows."""
    return asyncio.run(_claim_until_empty(url, CLAIMERS[claimer], process, barrier))


async def _claim_until_empty(
    url: str, claimer: Claimer, process: int, barrier: Any
) -> tuple[list[Claim], list[Window]]:
    store = await open_store(url, pool_size=2)
    claims: list[Claim] = []
    windows: list[Window] = []
    try:
        await store.ping()  # connected before the start line, so the race starts at once
        barrier.wait(timeout=60)
        while True:
            started = time.time()
            got = await claimer(store, f"claimer-{process}", BATCH)
            windows.append(Window(process, started, time.time()))
            if not got:
                return claims, windows
            for document_id, token, attempt in got:
                claims.append(Claim(process, document_id, token, attempt))
                await store.release_document_lease(document_id, token, ReleaseOutcome.SUCCESS)
    finally:
        await store.close()


@dataclass(frozen=True)
class Verdict:
    leased_twice: dict[str, int]
    never_leased: set[str]
    not_first_attempt: list[Claim]
    overlapping_claims: int  # pairs of claim calls of different processes that overlapped


def judge(claims: list[Claim], windows: list[Window], document_ids: set[str]) -> Verdict:
    leases = Counter(claim.document_id for claim in claims)
    overlapping = sum(
        1
        for a, b in combinations(windows, 2)
        if a.process != b.process and a.started < b.ended and b.started < a.ended
    )
    return Verdict(
        leased_twice={doc: n for doc, n in leases.items() if n > 1},
        never_leased=document_ids - set(leases),
        not_first_attempt=[claim for claim in claims if claim.attempt != 1],
        overlapping_claims=overlapping,
    )


def run_claimers(url: str, claimer: str) -> tuple[list[Claim], list[Window]]:
    """Start PROCESSES spawned claimers together through a barrier; gather their records."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(PROCESSES, context) as pool:
        barrier = manager.Barrier(PROCESSES)
        futures = [
            pool.submit(claim_until_empty, url, claimer, process, barrier)
            for process in range(PROCESSES)
        ]
        results = [future.result(timeout=180) for future in futures]
    return [c for cs, _ in results for c in cs], [w for _, ws in results for w in ws]


def _numbered_document(n: int) -> NewDocument:
    document_id = str(uuid.uuid4())
    return NewDocument(
        id=document_id,
        collection="race",
        filename=f"{n}.txt",
        content_type="text/plain",
        size_bytes=1,
        sha256=f"{n:064x}",
        blob_key=f"race/{document_id}",
        max_attempts=3,
    )


async def _queue_documents(url: str) -> set[str]:
    store = await open_store(url)
    try:
        for n in range(DOCUMENTS):
            await store.create_document(_numbered_document(n))
        return {doc.id for doc in await store.list_documents("race", None, None, DOCUMENTS)}
    finally:
        await store.close()


async def _counts(url: str) -> dict[str, int]:
    store = await open_store(url)
    try:
        return (await store.stats()).counts
    finally:
        await store.close()


def test_concurrent_claimers_lease_every_document_exactly_once(empty_postgres_url: str) -> None:
    document_ids = asyncio.run(_queue_documents(empty_postgres_url))
    assert len(document_ids) == DOCUMENTS
    claims, windows = run_claimers(empty_postgres_url, "store")
    verdict = judge(claims, windows, document_ids)
    assert verdict.leased_twice == {}
    assert verdict.never_leased == set()
    assert verdict.not_first_attempt == []
    assert len(claims) == DOCUMENTS
    assert verdict.overlapping_claims > 0, "the claimers never actually ran at the same time"
    counts = asyncio.run(_counts(empty_postgres_url))
    assert (counts["queued"], counts["processing"], counts["completed"]) == (0, 0, DOCUMENTS)


def test_the_checker_catches_a_racy_claimer(empty_postgres_url: str) -> None:
    document_ids = asyncio.run(_queue_documents(empty_postgres_url))
    claims, windows = run_claimers(empty_postgres_url, "racy")
    verdict = judge(claims, windows, document_ids)
    assert verdict.overlapping_claims > 0
    assert verdict.leased_twice, "the racy claimer got lucky: the checker proved nothing"
    assert verdict.not_first_attempt


def _lock_row(dsn: str, document_id: str) -> Any:
    """Another session holding the document's row lock until it rolls back."""
    locker = psycopg2.connect(dsn)
    with locker.cursor() as cur:
        cur.execute("SELECT id FROM documents WHERE id = %s FOR UPDATE", (document_id,))
    return locker


def _roll_back_after(locker: Any, seconds: float) -> None:
    time.sleep(seconds)
    locker.rollback()


async def test_acquire_waits_for_a_locked_row_instead_of_skipping_it(
    empty_postgres_url: str, postgres_dsn: str
) -> None:
    store = await open_store(empty_postgres_url)
    try:
        doc, _ = await store.create_document(_numbered_document(0))
        locker = _lock_row(postgres_dsn, doc.id)
        try:
            unlock = asyncio.create_task(asyncio.to_thread(_roll_back_after, locker, 0.3))
            started = time.monotonic()
            result = await store.acquire_document_lease(doc.id, "worker", LEASE_SECONDS)
            assert time.monotonic() - started >= 0.25
            await unlock
        finally:
            locker.close()
        assert result.outcome is AcquireOutcome.ACQUIRED
    finally:
        await store.close()


async def test_acquire_answers_held_when_the_row_stays_locked(
    empty_postgres_url: str, postgres_dsn: str
) -> None:
    store = await open_store(empty_postgres_url)
    try:
        doc, _ = await store.create_document(_numbered_document(0))
        locker = _lock_row(postgres_dsn, doc.id)
        try:
            started = time.monotonic()
            result = await store.acquire_document_lease(doc.id, "worker", LEASE_SECONDS)
            waited = time.monotonic() - started
        finally:
            locker.close()
        assert (result.outcome, result.status, result.dispatch_seq) == (
            AcquireOutcome.HELD,
            Status.QUEUED,
            1,
        )
        assert 1.5 <= waited < 10  # the function's lock_timeout is about two seconds
        again = await store.acquire_document_lease(doc.id, "worker", LEASE_SECONDS)
        assert again.outcome is AcquireOutcome.ACQUIRED  # nothing was changed by the timeout
    finally:
        await store.close()
