"""The store contract (docs/lease-contract.md), judged on every backend through the port only.

Each test uses `DocumentStore` methods and nothing else, so the in-memory fake is held to
exactly the same promises as SQLite and PostgreSQL. (One exception: on SQL Server, keyword
searches first wait for the full-text index, which the server fills in the background.)
Leases are fractions of a second and expiry is waited for with short sleeps, which keeps
the whole file fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from sheaf.adapters.sql.mssql import FULLTEXT_ACTIVE, MssqlDocumentStore
from sheaf.domain.chunking import content_hash
from sheaf.domain.models import (
    AcquireOutcome,
    AttemptOutcome,
    Chunk,
    Cleanup,
    Completion,
    Document,
    EmbeddedChunk,
    ErrorInfo,
    ErrorKind,
    Lease,
    NewDocument,
    ReleaseOutcome,
    SearchFilter,
    SearchHit,
    Status,
)
from sheaf.errors import LeaseLost
from sheaf.ports import DocumentStore

pytestmark = pytest.mark.integration

MakeDocument = Callable[..., Awaitable[Document]]  # fixtures of conftest.py
NewDocumentFactory = Callable[..., NewDocument]

LONG = 30.0  # a lease that does not expire during a test
SHORT = 0.3  # a lease that a test lets expire
PAST_SHORT = 0.45  # sleeping this long lets a SHORT lease expire


def embedded(*vectors: tuple[float, ...], model: str = "m", tag: str = "c") -> list[EmbeddedChunk]:
    return [
        EmbeddedChunk(Chunk(i, f"{tag}{i}", page_start=1, page_end=1), vector, model)
        for i, vector in enumerate(vectors)
    ]


def completion(count: int, model: str = "m", dimensions: int = 3) -> Completion:
    return Completion(
        page_count=1,
        chunk_count=count,
        stage_seconds={"extract": 0.1, "embed": 0.2},
        embedding_model=model,
        embedding_dimensions=dimensions,
    )


async def lease_of(store: DocumentStore, doc: Document, seconds: float = LONG) -> Lease:
    result = await store.acquire_document_lease(doc.id, "worker-a", seconds)
    assert result.outcome is AcquireOutcome.ACQUIRED, result
    assert result.lease is not None
    return result.lease


async def reload(store: DocumentStore, doc: Document) -> Document:
    current = await store.get_document(doc.id)
    assert current is not None
    return current


async def completed(store: DocumentStore, doc: Document, *chunks: EmbeddedChunk) -> Lease:
    lease = await lease_of(store, doc)
    await store.write_chunks(lease, chunks)
    await store.complete(lease, completion(len(chunks)))
    return lease


async def failed(store: DocumentStore, doc: Document) -> None:
    lease = await lease_of(store, doc)
    error = ErrorInfo("bad_pdf", "not a PDF", ErrorKind.PERMANENT)
    await store.release_document_lease(doc.id, lease.token, ReleaseOutcome.PERMANENT, error)


# -- create / get -------------------------------------------------------------------------


async def test_create_document_starts_queued(
    store: DocumentStore, new_document: NewDocumentFactory
) -> None:
    new = new_document(max_attempts=4)
    doc, created = await store.create_document(new)
    assert created
    assert (doc.id, doc.collection, doc.sha256, doc.blob_key) == (
        new.id,
        new.collection,
        new.sha256,
        new.blob_key,
    )
    assert (doc.status, doc.attempts, doc.max_attempts, doc.dispatch_seq) == (
        Status.QUEUED,
        0,
        4,
        1,
    )
    assert doc.lease_owner is None
    assert doc.not_before is None
    assert doc.chunk_count == 0
    assert await store.get_document(doc.id, history=False) == doc
    assert await store.get_document("no-such-document") is None


async def test_same_content_twice_returns_the_first_row(
    store: DocumentStore, new_document: NewDocumentFactory
) -> None:
    first, _ = await store.create_document(new_document(content="same"))
    again, created = await store.create_document(new_document(content="same"))
    assert not created
    assert again.id == first.id
    elsewhere, created = await store.create_document(new_document(content="same", collection="x"))
    assert created
    assert elsewhere.id != first.id


async def test_concurrent_uploads_of_one_content_create_one_row(
    store: DocumentStore, new_document: NewDocumentFactory
) -> None:
    results = await asyncio.gather(
        *(store.create_document(new_document(content="raced")) for _ in range(6))
    )
    assert sum(created for _, created in results) == 1
    assert len({doc.id for doc, _ in results}) == 1


async def test_after_delete_the_same_content_creates_a_new_row(
    store: DocumentStore, new_document: NewDocumentFactory
) -> None:
    first, _ = await store.create_document(new_document(content="again"))
    await store.delete_document(first.id)
    second, created = await store.create_document(new_document(content="again"))
    assert created
    assert second.id != first.id
    assert second.status is Status.QUEUED


# -- acquire ------------------------------------------------------------------------------


async def test_acquire_grants_a_lease(store: DocumentStore, make_document: MakeDocument) -> None:
    doc = await make_document()
    result = await store.acquire_document_lease(doc.id, "worker-a", LONG)
    assert result.outcome is AcquireOutcome.ACQUIRED
    assert result.lease is not None
    lease = result.lease
    assert (lease.document_id, lease.worker_id, lease.attempt, lease.dispatch_seq) == (
        doc.id,
        "worker-a",
        1,
        1,
    )
    assert (lease.collection, lease.blob_key, lease.content_type) == (
        doc.collection,
        doc.blob_key,
        doc.content_type,
    )
    assert len(lease.token) == 36
    now = await reload(store, doc)
    assert (now.status, now.attempts, now.lease_owner) == (Status.PROCESSING, 1, "worker-a")
    assert now.lease_expires_at == lease.expires_at
    assert now.started_at is not None
    assert now.current_stage == "queued"
    assert [(a.number, a.outcome, a.lease_token) for a in now.history] == [
        (1, AttemptOutcome.RUNNING, lease.token)
    ]


async def test_acquire_missing_document(store: DocumentStore) -> None:
    result = await store.acquire_document_lease("no-such-document", "worker-a", LONG)
    assert result.outcome is AcquireOutcome.MISSING
    assert result.lease is None
    assert result.dispatch_seq is None


async def test_acquire_while_leased_is_held(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    doc = await make_document()
    await lease_of(store, doc)
    result = await store.acquire_document_lease(doc.id, "worker-b", LONG)
    assert result.outcome is AcquireOutcome.HELD
    assert (result.lease, result.status, result.dispatch_seq) == (None, Status.PROCESSING, 1)


@pytest.mark.parametrize("end", [Status.COMPLETED, Status.FAILED, Status.DELETED])
async def test_acquire_terminal_document(
    store: DocumentStore, make_document: MakeDocument, end: Status
) -> None:
    doc = await make_document()
    if end is Status.COMPLETED:
        await completed(store, doc)
    elif end is Status.FAILED:
        await failed(store, doc)
    else:
        await store.delete_document(doc.id)
    result = await store.acquire_document_lease(doc.id, "worker-b", LONG)
    assert (result.outcome, result.status, result.dispatch_seq) == (AcquireOutcome.TERMINAL, end, 1)
    assert result.lease is None


async def test_acquire_before_not_before_is_not_ready(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    doc = await make_document()
    lease = await lease_of(store, doc)
    released = await store.release_document_lease(
        doc.id, lease.token, ReleaseOutcome.TRANSIENT, ErrorInfo("busy", "try later"), 30.0
    )
    result = await store.acquire_document_lease(doc.id, "worker-b", LONG)
    assert result.outcome is AcquireOutcome.NOT_READY
    assert result.lease is None
    assert result.not_before == released.not_before
    assert result.not_before is not None
    assert result.not_before > datetime.now(UTC)
    assert result.dispatch_seq == 2
    assert await store.claim_queued_documents("worker-b", LONG, 10) == []


async def test_acquire_takes_over_an_expired_lease(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    doc = await make_document()
    old = await lease_of(store, doc, SHORT)
    assert await store.renew_document_lease(doc.id, old.token, SHORT, "embed")
    await asyncio.sleep(PAST_SHORT)
    result = await store.acquire_document_lease(doc.id, "worker-b", LONG)
    assert result.outcome is AcquireOutcome.ACQUIRED
    assert result.lease is not None
    new = result.lease
    assert new.token != old.token
    assert new.attempt == 2
    assert new.worker_id == "worker-b"
    history = (await reload(store, doc)).history
    assert [(a.number, a.outcome) for a in history] == [
        (1, AttemptOutcome.EXPIRED),
        (2, AttemptOutcome.RUNNING),
    ]
    assert history[0].ended_at is not None
    assert history[0].stage == "embed"


async def test_expired_lease_without_attempts_left_is_held(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    doc = await make_document(max_attempts=1)
    await lease_of(store, doc, SHORT)
    await asyncio.sleep(PAST_SHORT)
    result = await store.acquire_document_lease(doc.id, "worker-b", LONG)
    assert result.outcome is AcquireOutcome.HELD


# -- renew --------------------------------------------------------------------------------


async def test_renew_extends_the_lease_and_records_the_stage(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    doc = await make_document()
    lease = await lease_of(store, doc, SHORT)
    assert await store.renew_document_lease(doc.id, lease.token, LONG, "extract")
    now = await reload(store, doc)
    assert now.lease_expires_at is not None
    assert now.lease_expires_at > lease.expires_at
    assert now.current_stage == "extract"
    assert now.history[-1].stage == "extract"
    assert not await store.renew_document_lease(doc.id, "not-the-token", LONG, "embed")
    assert (await reload(store, doc)).current_stage == "extract"


async def test_renew_after_expiry_succeeds_while_nobody_took_over(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    doc = await make_document()
    lease = await lease_of(store, doc, SHORT)
    await asyncio.sleep(PAST_SHORT)
    assert await store.renew_document_lease(doc.id, lease.token, LONG, "chunk")
    assert (await store.acquire_document_lease(doc.id, "b", LONG)).outcome is AcquireOutcome.HELD


# -- release ------------------------------------------------------------------------------


async def test_release_success_completes(store: DocumentStore, make_document: MakeDocument) -> None:
    doc = await make_document()
    lease = await lease_of(store, doc)
    await store.write_chunks(lease, embedded((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)))
    result = await store.release_document_lease(doc.id, lease.token, ReleaseOutcome.SUCCESS)
    assert (result.applied, result.status, result.dispatch_seq) == (True, Status.COMPLETED, 1)
    now = await reload(store, doc)
    assert (now.status, now.chunk_count, now.lease_owner, now.lease_expires_at) == (
        Status.COMPLETED,
        2,
        None,
        None,
    )
    assert now.completed_at is not None
    assert now.current_stage is None
    assert now.history[-1].outcome is AttemptOutcome.COMPLETED
    assert [c.text for c in await store.document_chunks(doc.id)] == ["c0", "c1"]


async def test_release_transient_requeues_after_the_delay(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    doc = await make_document()
    lease = await lease_of(store, doc)
    error = ErrorInfo("embedder_busy", "429 from the embedder", ErrorKind.TRANSIENT)
    result = await store.release_document_lease(
        doc.id, lease.token, ReleaseOutcome.TRANSIENT, error, SHORT
    )
    assert (result.applied, result.status, result.dispatch_seq) == (True, Status.QUEUED, 2)
    now = await reload(store, doc)
    assert (now.status, now.attempts, now.not_before, now.lease_owner) == (
        Status.QUEUED,
        1,
        result.not_before,
        None,
    )
    assert (now.error_code, now.last_error, now.error_kind) == (
        "embedder_busy",
        "429 from the embedder",
        ErrorKind.TRANSIENT,
    )
    assert now.history[-1].outcome is AttemptOutcome.TRANSIENT
    assert now.history[-1].error_code == "embedder_busy"
    assert await store.claim_queued_documents("worker-b", LONG, 10) == []
    await asyncio.sleep(PAST_SHORT)
    (again,) = await store.claim_queued_documents("worker-b", LONG, 10)
    assert (again.document_id, again.attempt, again.dispatch_seq) == (doc.id, 2, 2)


async def test_release_transient_on_the_last_attempt_fails(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    doc = await make_document(max_attempts=1)
    lease = await lease_of(store, doc)
    error = ErrorInfo("timeout", "blob store timed out", ErrorKind.TRANSIENT)
    result = await store.release_document_lease(
        doc.id, lease.token, ReleaseOutcome.TRANSIENT, error, 5.0
    )
    assert (result.applied, result.status, result.dispatch_seq) == (True, Status.FAILED, 1)
    now = await reload(store, doc)
    assert (now.status, now.error_code, now.error_kind) == (
        Status.FAILED,
        "timeout",
        ErrorKind.TRANSIENT,
    )


async def test_release_permanent_fails(store: DocumentStore, make_document: MakeDocument) -> None:
    doc = await make_document()
    lease = await lease_of(store, doc)
    error = ErrorInfo("encrypted_pdf", "the PDF is encrypted")
    result = await store.release_document_lease(
        doc.id, lease.token, ReleaseOutcome.PERMANENT, error
    )
    assert (result.applied, result.status) == (True, Status.FAILED)
    now = await reload(store, doc)
    assert (now.status, now.error_code, now.last_error, now.error_kind) == (
        Status.FAILED,
        "encrypted_pdf",
        "the PDF is encrypted",
        ErrorKind.PERMANENT,
    )
    attempt = now.history[-1]
    assert (attempt.outcome, attempt.error_code, attempt.error) == (
        AttemptOutcome.PERMANENT,
        "encrypted_pdf",
        "the PDF is encrypted",
    )
    assert attempt.ended_at is not None
    assert now.lease_owner is None


async def test_release_interrupted_requeues_without_spending_an_attempt(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    doc = await make_document()
    lease = await lease_of(store, doc)
    result = await store.release_document_lease(doc.id, lease.token, ReleaseOutcome.INTERRUPTED)
    assert (result.applied, result.status, result.dispatch_seq) == (True, Status.QUEUED, 1)
    now = await reload(store, doc)
    assert (now.attempts, now.not_before, now.dispatch_seq, now.lease_owner) == (0, None, 1, None)
    again = await lease_of(store, doc)
    assert again.attempt == 1
    assert again.dispatch_seq == 1
    outcomes = [a.outcome for a in (await reload(store, doc)).history]
    assert outcomes == [AttemptOutcome.INTERRUPTED, AttemptOutcome.RUNNING]


@pytest.mark.parametrize("outcome", list(ReleaseOutcome))
async def test_release_with_a_stale_token_changes_nothing(
    store: DocumentStore, make_document: MakeDocument, outcome: ReleaseOutcome
) -> None:
    doc = await make_document()
    await lease_of(store, doc)
    before = await reload(store, doc)
    result = await store.release_document_lease(doc.id, "not-the-token", outcome, None, 1.0)
    assert (result.applied, result.status, result.dispatch_seq) == (False, Status.PROCESSING, 1)
    assert await reload(store, doc) == before
    missing = await store.release_document_lease("no-such-document", "t", outcome)
    assert not missing.applied


# -- expiry -------------------------------------------------------------------------------


async def test_expired_leases_are_requeued_with_a_new_dispatch(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    doc = await make_document()
    live = await make_document()
    lease = await lease_of(store, doc, SHORT)
    await lease_of(store, live, LONG)
    assert await store.renew_document_lease(doc.id, lease.token, SHORT, "extract")
    assert await store.find_expired_leases(10) == []
    await asyncio.sleep(PAST_SHORT)
    (dispatch,) = await store.find_expired_leases(10)
    assert (dispatch.document_id, dispatch.collection, dispatch.dispatch_seq, dispatch.status) == (
        doc.id,
        doc.collection,
        2,
        Status.QUEUED,
    )
    assert await store.find_expired_leases(10) == []
    now = await reload(store, doc)
    assert (now.status, now.attempts, now.lease_owner, now.not_before) == (
        Status.QUEUED,
        1,
        None,
        None,
    )
    assert (now.error_code, now.error_kind) == ("lease_expired", ErrorKind.TRANSIENT)
    assert now.last_error is not None
    assert "worker-a" in now.last_error
    assert "extract" in now.last_error
    assert now.history[-1].outcome is AttemptOutcome.EXPIRED
    assert not await store.renew_document_lease(doc.id, lease.token, LONG, "embed")


async def test_expired_lease_on_the_last_attempt_fails(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    doc = await make_document(max_attempts=1)
    lease = await lease_of(store, doc, SHORT)
    assert await store.renew_document_lease(doc.id, lease.token, SHORT, "embed")
    await asyncio.sleep(PAST_SHORT)
    (dispatch,) = await store.find_expired_leases(10)
    assert (dispatch.document_id, dispatch.status) == (doc.id, Status.FAILED)
    now = await reload(store, doc)
    assert (now.status, now.error_code, now.error_kind) == (
        Status.FAILED,
        "lease_expired",
        ErrorKind.PERMANENT,
    )
    assert now.last_error is not None
    assert "embed" in now.last_error


async def test_find_expired_leases_respects_the_limit(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    for _ in range(3):
        await lease_of(store, await make_document(), SHORT)
    await asyncio.sleep(PAST_SHORT)
    assert len(await store.find_expired_leases(2)) == 2
    assert len(await store.find_expired_leases(2)) == 1
    assert await store.find_expired_leases(0) == []


# -- claims -------------------------------------------------------------------------------


async def test_claim_leases_the_oldest_ready_rows_up_to_the_limit(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    docs = []
    for _ in range(5):
        docs.append(await make_document())
        await asyncio.sleep(0.01)  # distinct creation times, even at millisecond resolution
    assert await store.claim_queued_documents("w", LONG, 0) == []
    first = await store.claim_queued_documents("w", LONG, 2)
    assert [lease.document_id for lease in first] == [docs[0].id, docs[1].id]
    rest = await store.claim_queued_documents("w", LONG, 10)
    assert sorted(lease.document_id for lease in rest) == sorted(d.id for d in docs[2:])
    assert all(lease.attempt == 1 and lease.worker_id == "w" for lease in first + rest)
    assert len({lease.token for lease in first + rest}) == 5
    assert await store.claim_queued_documents("w", LONG, 10) == []
    history = (await reload(store, docs[0])).history
    assert [(a.outcome, a.lease_token) for a in history] == [
        (AttemptOutcome.RUNNING, first[0].token)
    ]


async def test_a_ready_for_threshold_claims_only_rows_ready_that_long(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    """The safety-net poll's claim: only rows whose wake-up is overdue."""
    old = await make_document()
    retried = await make_document()
    lease = await lease_of(store, retried)
    await store.release_document_lease(
        retried.id, lease.token, ReleaseOutcome.TRANSIENT, ErrorInfo("busy", "later"), SHORT
    )
    await asyncio.sleep(0.5)
    # `old` waited 0.5 s since upload; `retried` only ~0.2 s since its not_before.
    [claimed] = await store.claim_queued_documents("net", LONG, 10, ready_for=0.4)
    assert claimed.document_id == old.id
    await asyncio.sleep(0.3)
    young = await make_document()
    [claimed] = await store.claim_queued_documents("net", LONG, 10, ready_for=0.4)
    assert claimed.document_id == retried.id  # ready since its not_before, not its upload
    [claimed] = await store.claim_queued_documents("any", LONG, 10)  # no threshold: v1
    assert claimed.document_id == young.id


async def test_concurrent_claims_never_share_a_document(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    docs = [await make_document() for _ in range(20)]
    rounds = await asyncio.gather(
        *(store.claim_queued_documents(f"w{n}", LONG, 3) for n in range(8))
    )
    assert all(len(batch) <= 3 for batch in rounds)
    rounds.append(await store.claim_queued_documents("last", LONG, 100))
    leased = Counter(lease.document_id for batch in rounds for lease in batch)
    assert leased == Counter(d.id for d in docs)


async def test_claim_stale_dispatches_bumps_only_stale_ready_rows(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    stale = [await make_document() for _ in range(3)]
    leased = await make_document()
    await lease_of(store, leased)
    assert await store.claim_stale_dispatches(LONG, 10) == []
    await asyncio.sleep(PAST_SHORT)
    first = await store.claim_stale_dispatches(SHORT, 2)
    rest = await store.claim_stale_dispatches(SHORT, 10)
    assert (len(first), len(rest)) == (2, 1)
    assert sorted(d.document_id for d in first + rest) == sorted(d.id for d in stale)
    assert all(d.dispatch_seq == 2 and d.status is Status.QUEUED for d in first + rest)
    assert await store.claim_stale_dispatches(SHORT, 10) == []
    assert (await reload(store, stale[0])).dispatch_seq == 2


async def test_claim_stale_dispatches_concurrently_returns_each_row_once(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    docs = [await make_document() for _ in range(20)]
    await asyncio.sleep(PAST_SHORT)
    rounds = await asyncio.gather(*(store.claim_stale_dispatches(SHORT, 5) for _ in range(8)))
    rounds.append(await store.claim_stale_dispatches(SHORT, 100))
    returned = Counter(d.document_id for batch in rounds for d in batch)
    assert returned == Counter(d.id for d in docs)
    assert {(await reload(store, d)).dispatch_seq for d in docs} == {2}


async def test_not_before_keeps_a_row_from_reconcile_until_due(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    doc = await make_document()
    lease = await lease_of(store, doc)
    await store.release_document_lease(doc.id, lease.token, ReleaseOutcome.TRANSIENT, None, LONG)
    await asyncio.sleep(PAST_SHORT)
    assert await store.claim_stale_dispatches(SHORT, 10) == []


# -- fencing: chunks and completion -------------------------------------------------------


async def test_completion_after_a_takeover_keeps_only_the_new_chunks(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    doc = await make_document()
    old = await lease_of(store, doc, SHORT)
    await store.write_chunks(old, embedded((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), tag="old"))
    await asyncio.sleep(PAST_SHORT)
    result = await store.acquire_document_lease(doc.id, "worker-b", LONG)
    assert result.lease is not None
    new = result.lease
    with pytest.raises(LeaseLost):
        await store.write_chunks(old, embedded((0.0, 0.0, 1.0), tag="late"))
    await store.write_chunks(new, embedded((0.0, 0.0, 1.0), tag="new"))
    with pytest.raises(LeaseLost):
        await store.complete(old, completion(2))
    await store.complete(new, completion(1))
    now = await reload(store, doc)
    live = await store.document_chunks(doc.id)
    assert [c.text for c in live] == ["new0"]
    assert (now.status, now.chunk_count, now.page_count) == (Status.COMPLETED, len(live), 1)
    assert now.history[-1].stage_seconds == {"extract": 0.1, "embed": 0.2}
    with pytest.raises(LeaseLost):
        await store.complete(new, completion(1))  # completed: the lease is gone


async def test_chunks_stay_invisible_until_completion(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    doc = await make_document()
    lease = await lease_of(store, doc)
    await store.write_chunks(lease, embedded((1.0, 0.0, 0.0)))
    await store.write_chunks(lease, [])
    assert await store.document_chunks(doc.id) == []
    assert await store.search(doc.collection, (1.0, 0.0, 0.0), "m", 5) == []


async def test_a_chunk_write_records_the_index_stage(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    """Workers renew only on their heartbeat's timer; the chunk writes say where they are."""
    doc = await make_document()
    lease = await lease_of(store, doc)
    await store.write_chunks(lease, embedded((1.0, 0.0, 0.0)))
    now = await reload(store, doc)
    assert (now.current_stage, now.history[-1].stage) == ("index", "index")
    other = await make_document()
    other_lease = await lease_of(store, other)
    await store.renew_document_lease(other.id, other_lease.token, LONG, "extract")
    stale = dataclasses.replace(lease, document_id=other.id)  # someone else's document
    with pytest.raises(LeaseLost):
        await store.write_chunks(stale, embedded((1.0, 0.0, 0.0)))
    untouched = await reload(store, other)
    assert (untouched.current_stage, untouched.history[-1].stage) == ("extract", "extract")


async def test_delete_fences_out_the_worker(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    doc = await make_document()
    lease = await lease_of(store, doc)
    await store.write_chunks(lease, embedded((1.0, 0.0, 0.0)))
    tombstone = await store.delete_document(doc.id)
    assert tombstone is not None
    assert (tombstone.status, tombstone.lease_owner, tombstone.lease_expires_at) == (
        Status.DELETED,
        None,
        None,
    )
    assert tombstone.deleted_at is not None
    assert tombstone.history[-1].outcome is AttemptOutcome.SUPERSEDED
    with pytest.raises(LeaseLost):
        await store.write_chunks(lease, embedded((0.0, 1.0, 0.0)))
    with pytest.raises(LeaseLost):
        await store.complete(lease, completion(1))
    assert not await store.renew_document_lease(doc.id, lease.token, LONG, "embed")
    released = await store.release_document_lease(doc.id, lease.token, ReleaseOutcome.SUCCESS)
    assert (released.applied, released.status) == (False, Status.DELETED)
    assert await store.delete_document(doc.id) == tombstone
    assert await store.delete_document("no-such-document") is None
    assert await store.document_chunks(doc.id) == []


# -- dispatch_seq and retry ---------------------------------------------------------------


async def test_every_resend_path_bumps_dispatch_seq(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    doc = await make_document(max_attempts=3)
    assert doc.dispatch_seq == 1
    lease = await lease_of(store, doc)
    released = await store.release_document_lease(
        doc.id, lease.token, ReleaseOutcome.TRANSIENT, None, 0.0
    )
    assert released.dispatch_seq == 2
    await lease_of(store, doc, SHORT)
    await asyncio.sleep(PAST_SHORT)
    (expired,) = await store.find_expired_leases(10)
    assert expired.dispatch_seq == 3
    (reconciled,) = await store.claim_stale_dispatches(0.0, 10)
    assert reconciled.dispatch_seq == 4
    await failed(store, doc)
    retried = await store.retry_document(doc.id)
    assert retried is not None
    assert retried.dispatch_seq == 5


async def test_retry_document_only_from_failed(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    doc = await make_document()
    assert await store.retry_document(doc.id) == await reload(store, doc)
    await failed(store, doc)
    retried = await store.retry_document(doc.id)
    assert retried is not None
    assert (retried.status, retried.attempts, retried.not_before, retried.dispatch_seq) == (
        Status.QUEUED,
        0,
        None,
        2,
    )
    assert (retried.error_code, retried.last_error, retried.error_kind) == (None, None, None)
    assert (await lease_of(store, doc)).attempt == 1
    assert await store.retry_document("no-such-document") is None


# -- search -------------------------------------------------------------------------------


async def test_search_ranks_live_chunks_of_one_collection_and_model(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    target = (0.6, 0.8, 0.0)
    done = await make_document()
    await completed(store, done, *embedded((1.0, 0.0, 0.0), target, (0.0, 0.6, 0.8)))
    other_model = await make_document()
    await completed(store, other_model, *embedded(target, model="other"))
    other_collection = await make_document(collection="elsewhere")
    await completed(store, other_collection, *embedded(target))
    gone = await make_document()
    await completed(store, gone, *embedded(target))
    await store.delete_document(gone.id)
    staged = await make_document()
    await store.write_chunks(await lease_of(store, staged), embedded(target))

    hits = await store.search("docs", target, "m", 2)
    assert [(h.document_id, h.chunk_ordinal) for h in hits] == [(done.id, 1), (done.id, 0)]
    assert hits[0].score == pytest.approx(1.0, abs=1e-6)
    assert hits[1].score == pytest.approx(0.6, abs=1e-6)
    assert (hits[0].filename, hits[0].text, hits[0].page_start) == (done.filename, "c1", 1)
    assert len(await store.search("docs", target, "m", 10)) == 3
    assert await store.search("docs", target, "nobody", 10) == []
    assert await store.search("docs", target, "m", 0) == []


def texts(*words: str, model: str = "m", tag: str = "") -> list[EmbeddedChunk]:
    """Chunks with these texts (vectors all alike: keyword tests ignore them)."""
    return [
        EmbeddedChunk(Chunk(i, f"{tag}{body}", page_start=1, page_end=1), (1.0, 0.0, 0.0), model)
        for i, body in enumerate(words)
    ]


def found(hits: list[SearchHit]) -> list[tuple[str, int]]:
    return [(h.document_id, h.chunk_ordinal) for h in hits]


PENDING_FULL_TEXT = text(
    "SELECT CAST(OBJECTPROPERTYEX(OBJECT_ID(N'dbo.chunks'), 'TableFulltextPendingChanges') AS INT)"
)


async def keywords(
    store: DocumentStore, collection: str, query: str, k: int, filters: SearchFilter | None = None
) -> list[SearchHit]:
    """`keyword_search`, once SQL Server's full-text index has taken in every change: it
    is filled in the background (docs/search.md), the other backends at once."""
    if isinstance(store, MssqlDocumentStore):
        for _ in range(100):
            async with store.engine.connect() as conn:
                if not (await conn.execute(PENDING_FULL_TEXT)).scalar():  # None: no index
                    break
            await asyncio.sleep(0.1)
    return await store.keyword_search(collection, query, k, filters)


async def test_keyword_search_finds_words_in_live_chunks_of_one_collection(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    """The keyword index holds exactly what vector search sees: tombstones, staged chunks,
    a superseded attempt's chunks and other collections are never found."""
    done = await make_document()
    await completed(
        store,
        done,
        *texts("the quick brown fox jumps", "lazy dogs sleep all day", "brown bread and fox"),
    )
    other_collection = await make_document(collection="elsewhere")
    await completed(store, other_collection, *texts("brown fox"))
    gone = await make_document()
    await completed(store, gone, *texts("brown fox"))
    await store.delete_document(gone.id)
    staged = await make_document()
    await store.write_chunks(await lease_of(store, staged), texts("brown fox"))
    taken_over = await make_document()
    old = await lease_of(store, taken_over, SHORT)
    await store.write_chunks(old, texts("brown fox", tag="old "))
    await asyncio.sleep(PAST_SHORT)
    result = await store.acquire_document_lease(taken_over.id, "worker-b", LONG)
    assert result.lease is not None
    await store.write_chunks(result.lease, texts("grey wolf"))
    await store.complete(result.lease, completion(1))

    hits = await keywords(store, "docs", "brown fox", 10)
    assert found(hits) == [(done.id, 2), (done.id, 0)]  # the shorter chunk ranks first
    assert hits[0].score > hits[1].score > 0
    assert (hits[0].filename, hits[0].text) == (done.filename, "brown bread and fox")
    assert found(await keywords(store, "docs", "BROWN", 1)) == [(done.id, 2)]
    assert found(await keywords(store, "docs", "Wolf!", 10)) == [(taken_over.id, 0)]
    assert found(await keywords(store, "elsewhere", "fox", 10)) == [(other_collection.id, 0)]
    assert await keywords(store, "docs", "zebra", 10) == []
    assert await keywords(store, "docs", " ?! ", 10) == []
    assert await keywords(store, "docs", "fox", 0) == []
    assert await keywords(store, "nowhere", "fox", 10) == []


async def test_keyword_search_ranks_rarer_words_higher(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    """BM25's inverse document frequency: a word in few chunks outweighs a common one."""
    doc = await make_document()
    common = [f"report number {n} about sales" for n in range(6)]
    await completed(store, doc, *texts(*common, "report about harbour", "quarterly sales"))
    hits = await keywords(store, "docs", "harbour sales", 3)
    assert found(hits)[0] == (doc.id, 6)  # the only chunk with the rare word


async def test_keyword_search_weighs_a_word_the_query_repeats(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    """Query term frequency: two chunks alike but for which of two equally rare words they
    hold; the word the query says twice decides which comes first, either way round."""
    if isinstance(store, MssqlDocumentStore) and await _has_full_text(store):
        pytest.skip("SQL Server's CONTAINSTABLE weighs each word of the OR once (docs/search.md)")
    doc = await make_document()
    filler = [f"report number {n} about sales" for n in range(4)]
    await completed(store, doc, *texts(*filler, "harbour report", "quarry report"))
    twice_quarry = await keywords(store, "docs", "harbour quarry quarry", 2)
    assert found(twice_quarry) == [(doc.id, 5), (doc.id, 4)]
    twice_harbour = await keywords(store, "docs", "harbour harbour quarry", 2)
    assert found(twice_harbour) == [(doc.id, 4), (doc.id, 5)]


async def _has_full_text(store: MssqlDocumentStore) -> bool:
    async with store.engine.connect() as conn:
        return bool((await conn.execute(text(FULLTEXT_ACTIVE))).scalar())


async def test_keyword_search_follows_reingest_and_purge(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    doc = await make_document()
    await completed(store, doc, *texts("first version of the memo"))
    assert found(await keywords(store, "docs", "memo", 5)) == [(doc.id, 0)]
    await store.delete_document(doc.id)
    assert await keywords(store, "docs", "memo", 5) == []
    await store.purge_document(doc.id)
    assert await keywords(store, "docs", "memo", 5) == []
    again = await make_document()  # the same file uploaded again: a new row
    await completed(store, again, *texts("second version of the memo"))
    (hit,) = await keywords(store, "docs", "memo version", 5)
    assert (hit.document_id, hit.text) == (again.id, "second version of the memo")


async def test_search_filters_by_document_filename_and_upload_time(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    """Both rankings honour the same filters; keyword statistics stay the collection's."""
    first = await make_document(filename="Annual Report 2024.pdf")
    await completed(store, first, *texts("harbour budget"))
    await asyncio.sleep(0.02)  # distinct upload times on every database clock
    second = await make_document(filename="notes_2025.txt")
    await completed(store, second, *texts("harbour budget"))
    third = await make_document(filename="report%.txt")
    await completed(store, third, *texts("harbour budget"))

    async def both(filters: SearchFilter) -> set[str]:
        keyword = {h.document_id for h in await keywords(store, "docs", "harbour", 10, filters)}
        vector = {
            h.document_id for h in await store.search("docs", (1.0, 0.0, 0.0), "m", 10, filters)
        }
        assert keyword == vector
        return keyword

    everything = {first.id, second.id, third.id}
    assert await both(SearchFilter()) == everything
    assert await both(SearchFilter(document_ids=(second.id, "no-such-document"))) == {second.id}
    assert await both(SearchFilter(filename="*report*")) == {first.id, third.id}  # any case
    assert await both(SearchFilter(filename="*.PDF")) == {first.id}
    assert await both(SearchFilter(filename="notes?2025.txt")) == {second.id}
    assert await both(SearchFilter(filename="notes_2025")) == set()  # the whole name
    assert await both(SearchFilter(filename="report%*")) == {third.id}  # % is no wildcard
    assert await both(SearchFilter(filename="*_2025*")) == {second.id}  # nor is _
    assert await both(SearchFilter(uploaded_from=second.created_at)) == {second.id, third.id}
    assert await both(SearchFilter(uploaded_to=first.created_at)) == {first.id}
    later = second.created_at + timedelta(days=1)
    assert await both(SearchFilter(uploaded_from=later)) == set()
    combined = SearchFilter(filename="*.txt", uploaded_to=second.created_at)
    assert await both(combined) == {second.id}


async def test_a_collection_exists_once_a_document_was_uploaded_into_it(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    assert not await store.collection_exists("docs")
    doc = await make_document()
    assert await store.collection_exists("docs")  # queued is enough
    assert not await store.collection_exists("Docs")
    assert not await store.collection_exists("doc")
    await store.delete_document(doc.id)
    await store.purge_document(doc.id)
    assert await store.collection_exists("docs")  # emptied, not gone


# -- listing, stats, cleanup ----------------------------------------------------------------


async def test_list_documents_pages_newest_first(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    docs = []
    for _ in range(5):
        docs.append(await make_document())
        await asyncio.sleep(0.01)
    elsewhere = await make_document(collection="elsewhere")
    await store.delete_document(docs[1].id)
    live = [d.id for d in reversed(docs) if d.id != docs[1].id]

    everything = await store.list_documents("docs", None, None, 100)
    assert [d.id for d in everything] == live
    pages, after = [], None
    while page := await store.list_documents("docs", None, after, 2):
        assert len(page) <= 2
        pages.extend(d.id for d in page)
        after = page[-1].id
    assert pages == live
    deleted = await store.list_documents("docs", Status.DELETED, None, 100)
    assert [d.id for d in deleted] == [docs[1].id]
    all_collections = await store.list_documents(None, None, None, 100)
    assert [d.id for d in all_collections] == [elsewhere.id, *live]


async def test_collection_counts_group_live_documents_by_collection_and_status(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    assert await store.collection_counts() == {}
    a1 = await make_document(collection="a")
    await make_document(collection="a")
    b = await make_document(collection="B")
    await completed(store, a1)
    want = {"a": {"completed": 1, "queued": 1}, "B": {"queued": 1}}  # names are case-sensitive
    assert await store.collection_counts() == want
    await store.delete_document(b.id)
    assert await store.collection_counts() == {"a": {"completed": 1, "queued": 1}}


async def test_stats_counts_leases_and_the_oldest_ready_row(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    empty = await store.stats()
    assert empty.counts == {status.value: 0 for status in Status}
    assert (empty.oldest_ready_age_seconds, empty.leases_held) == (None, 0)
    await make_document()
    await asyncio.sleep(0.2)
    await make_document()
    await lease_of(store, await make_document())
    await completed(store, await make_document())
    await lease_of(store, await make_document(), SHORT)
    await asyncio.sleep(PAST_SHORT)  # an expired lease is not held
    stats = await store.stats()
    assert stats.counts == {
        "queued": 2,
        "processing": 2,
        "completed": 1,
        "failed": 0,
        "deleted": 0,
    }
    assert stats.leases_held == 1
    assert stats.oldest_ready_age_seconds is not None
    assert 0.2 + PAST_SHORT <= stats.oldest_ready_age_seconds < 10


async def test_activity_reads_the_window_of_ended_attempts_and_the_documents_in_flight(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    empty = await store.activity(60.0, 100)
    assert (empty.ended, empty.in_flight, empty.complete) == ((), (), True)
    done = await make_document()
    await completed(store, done)
    await asyncio.sleep(0.05)  # distinct end times: newest first is then well defined
    broken = await make_document()
    await failed(store, broken)
    busy = await make_document()
    running = await store.acquire_document_lease(busy.id, "worker-b", LONG)
    assert running.lease is not None
    await store.renew_document_lease(busy.id, running.lease.token, LONG, "embed")
    await make_document()  # queued: neither ended nor in flight

    seen = await store.activity(60.0, 100)
    assert seen.complete
    assert [(a.document_id, a.outcome, a.error_code) for a in seen.ended] == [
        (broken.id, AttemptOutcome.PERMANENT, "bad_pdf"),
        (done.id, AttemptOutcome.COMPLETED, None),
    ]
    last = seen.ended[1]
    assert (last.number, last.max_attempts, last.worker_id) == (1, done.max_attempts, "worker-a")
    assert last.stage_seconds == {"extract": 0.1, "embed": 0.2}
    assert last.started_at <= last.ended_at <= seen.now
    [flight] = seen.in_flight
    assert (flight.document_id, flight.filename) == (busy.id, busy.filename)
    assert flight.collection == busy.collection
    assert (flight.worker_id, flight.stage) == ("worker-b", "embed")
    assert flight.started_at <= flight.heartbeat_at <= seen.now
    assert flight.lease_expires_at is not None
    assert flight.lease_expires_at > seen.now

    newest = await store.activity(60.0, 1)
    assert [a.document_id for a in newest.ended] == [broken.id]
    assert not newest.complete
    await asyncio.sleep(0.3)
    later = await store.activity(0.2, 100)  # both attempts ended before this window
    assert later.ended == ()
    assert [f.document_id for f in later.in_flight] == [busy.id]


async def test_tombstones_are_cleaned_up_once(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    doc = await make_document()
    await completed(store, doc, *embedded((1.0, 0.0, 0.0)))
    kept = await make_document()
    keys = [doc.blob_key, kept.blob_key, "docs/unknown"]
    assert await store.known_blob_keys(keys) == {doc.blob_key, kept.blob_key}
    assert await store.pending_cleanups(10) == []
    await store.delete_document(doc.id)
    assert await store.pending_cleanups(10) == [Cleanup(doc.id, doc.blob_key)]
    assert await store.known_blob_keys(keys) == {doc.blob_key, kept.blob_key}
    await store.purge_document(doc.id)
    assert await store.pending_cleanups(10) == []
    assert await store.known_blob_keys(keys) == {kept.blob_key}
    assert await store.document_chunks(doc.id) == []
    purged = await store.acquire_document_lease(doc.id, "w", LONG)
    assert (purged.outcome, purged.status) == (AcquireOutcome.TERMINAL, Status.DELETED)


async def test_get_document_without_history(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    doc = await make_document()
    await lease_of(store, doc)
    assert len((await reload(store, doc)).history) == 1
    bare = await store.get_document(doc.id, history=False)
    assert bare is not None
    assert bare.history == ()


async def test_ping(store: DocumentStore) -> None:
    await store.ping()


async def test_operations_cancelled_midway_leave_the_store_usable(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    """Workers cancel their heartbeat mid-renewal; that must never strand a lock."""
    doc = await make_document()
    lease = await lease_of(store, doc)
    for step in range(150):  # cancel at every point of the operation, from 0 to 3 ms in
        renewal = asyncio.create_task(store.renew_document_lease(doc.id, lease.token, LONG, "x"))
        await asyncio.sleep(step * 0.00002)
        renewal.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewal
        async with asyncio.timeout(5):  # a stranded write lock stalls this until timeout
            assert await store.renew_document_lease(doc.id, lease.token, LONG, "embed")


async def test_cached_embeddings_are_found_by_text_within_collection_and_model(
    store: DocumentStore, make_document: MakeDocument
) -> None:
    done = await make_document()
    await completed(store, done, *embedded((1.0, 0.0, 0.0), (0.0, 0.6, 0.8)))
    wanted = [content_hash("c1"), content_hash("never embedded")]
    found = await store.cached_embeddings(done.collection, "m", wanted)
    assert list(found) == [content_hash("c1")]
    assert found[content_hash("c1")] == pytest.approx((0.0, 0.6, 0.8))
    assert await store.cached_embeddings(done.collection, "other", wanted) == {}
    assert await store.cached_embeddings("elsewhere", "m", wanted) == {}
    await store.delete_document(done.id)
    await store.purge_document(done.id)
    assert await store.cached_embeddings(done.collection, "m", wanted) == {}
