"""In-memory fakes of Sheaf's ports, for Sheaf's own tests and for its users' tests.

Each fake keeps its port's promises exactly: `InMemoryDocumentStore` passes the same
contract suite (`tests/integration/test_store_contract.py`, docs/lease-contract.md) as the
SQL backends, `InMemoryBlobStore` the same blob suite as `LocalBlobStore` and
`InMemoryQueue` the same queue suite as Service Bus (over the emulator), so a service
test that passes on the fakes means something. State is copied in and out — a caller can
never change what a fake holds except through its methods, as with a real database.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from dataclasses import replace as dataclasses_replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import numpy as np
import numpy.typing as npt

from sheaf.aio import wait_event
from sheaf.domain.blobkeys import validate_blob_key
from sheaf.domain.chunking import content_hash
from sheaf.domain.keys import ApiKey, NewApiKey, StoredKey
from sheaf.domain.messages import MalformedMessage, decode, encode, message_id, when
from sheaf.domain.models import (
    TERMINAL_STATUSES,
    AcquireOutcome,
    AcquireResult,
    Activity,
    Attempt,
    AttemptOutcome,
    Chunk,
    Cleanup,
    Completion,
    Dispatch,
    Document,
    EmbeddedChunk,
    EndedAttempt,
    ErrorInfo,
    ErrorKind,
    InFlight,
    Lease,
    NewDocument,
    ReleaseOutcome,
    ReleaseResult,
    SearchFilter,
    SearchHit,
    Stats,
    Status,
)
from sheaf.domain.search import bm25_rank, glob_to_regex, query_terms
from sheaf.errors import BlobNotFound, LeaseLost, QueueUnavailable, StoreUnavailable, TransientError
from sheaf.ports import BlobInfo, DeadLetter, Delivery

__all__ = [
    "InMemoryBlobStore",
    "InMemoryDocumentStore",
    "InMemoryKeyStore",
    "InMemoryQueue",
    "RecordingMessageBus",
]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _Row:
    """One `documents` row; field names match `Document` so conversion is mechanical."""

    id: str
    collection: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    blob_key: str
    max_attempts: int
    created_at: datetime
    updated_at: datetime
    last_dispatched_at: datetime | None
    status: Status = Status.QUEUED
    attempts: int = 0
    dispatch_seq: int = 1
    lease_owner: str | None = None
    lease_token: str | None = None
    lease_expires_at: datetime | None = None
    not_before: datetime | None = None
    current_stage: str | None = None
    last_error: str | None = None
    error_code: str | None = None
    error_kind: ErrorKind | None = None
    chunk_count: int = 0
    page_count: int | None = None
    chunks_token: str | None = None
    embedding_model: str | None = None
    embedding_dimensions: int | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    deleted_at: datetime | None = None
    purged_at: datetime | None = None

    @property
    def ready_since(self) -> datetime:
        """The claim's "oldest first" key: ready since `not_before`, else since upload."""
        return self.not_before or self.created_at

    def is_ready(self, now: datetime) -> bool:
        return self.status == Status.QUEUED and (self.not_before is None or self.not_before <= now)

    def lease_expired(self, now: datetime) -> bool:
        expires = self.lease_expires_at
        return self.status == Status.PROCESSING and expires is not None and expires <= now

    def may_acquire(self, now: datetime) -> bool:
        ready = self.is_ready(now) or self.lease_expired(now)
        return ready and self.attempts < self.max_attempts

    def clear_lease(self) -> None:
        self.lease_owner = self.lease_token = self.lease_expires_at = None

    def set_error(self, error: ErrorInfo | None, kind: ErrorKind | None) -> None:
        self.error_code = error.code if error else None
        self.last_error = error.message if error else None
        self.error_kind = kind

    def redispatch(self, now: datetime) -> None:
        """A deliberate new send: the bump Service Bus duplicate detection relies on."""
        self.dispatch_seq += 1
        self.last_dispatched_at = now

    def dispatch(self) -> Dispatch:
        return Dispatch(self.id, self.collection, self.dispatch_seq, self.status, self.not_before)


@dataclass(slots=True)
class _AttemptRow:
    document_id: str
    number: int
    worker_id: str
    lease_token: str
    started_at: datetime
    ended_at: datetime | None = None
    outcome: AttemptOutcome = AttemptOutcome.RUNNING
    error_code: str | None = None
    error: str | None = None
    stage: str | None = "queued"
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def end(self, outcome: AttemptOutcome, now: datetime, error: ErrorInfo | None) -> None:
        self.outcome, self.ended_at = outcome, now
        if error is not None:
            self.error_code, self.error = error.code, error.message

    def snapshot(self) -> Attempt:
        values = {f.name: getattr(self, f.name) for f in fields(Attempt)}
        return Attempt(**values | {"stage_seconds": dict(self.stage_seconds)})


@dataclass(frozen=True, slots=True)
class _StoredChunk:
    document_id: str
    lease_token: str
    chunk: Chunk  # frozen, so sharing it is safe
    model: str
    vector: npt.NDArray[np.float32]  # private copy, float32 like the SQL backends


class InMemoryDocumentStore:
    """`DocumentStore` with exactly the semantics of docs/lease-contract.md.

    One `asyncio.Lock` makes every operation atomic, which is the fake's equivalent of the
    row locks and single statements of the SQL backends. `clock` is the database clock;
    inject one to move time in tests without sleeping.
    """

    def __init__(self, clock: Callable[[], datetime] = _utc_now) -> None:
        self._clock = clock
        self._lock = asyncio.Lock()
        self._rows: dict[str, _Row] = {}
        self._attempts: dict[str, _AttemptRow] = {}  # by lease token, in insertion order
        self._chunks: list[_StoredChunk] = []
        self._closed = False

    # -- lease contract ------------------------------------------------------------------

    async def acquire_document_lease(
        self, document_id: str, worker_id: str, lease_seconds: float
    ) -> AcquireResult:
        async with self._lock:
            now = self._clock()
            row = self._rows.get(document_id)
            if row is None:
                return AcquireResult(AcquireOutcome.MISSING)
            if row.may_acquire(now):
                lease = self._grant(row, worker_id, lease_seconds, now)
                return AcquireResult(
                    AcquireOutcome.ACQUIRED, lease, dispatch_seq=row.dispatch_seq, status=row.status
                )
            return self._refusal(row, now)

    async def renew_document_lease(
        self, document_id: str, lease_token: str, lease_seconds: float, stage: str
    ) -> bool:
        async with self._lock:
            now = self._clock()
            row = self._held(document_id, lease_token)
            if row is None:
                return False
            row.lease_expires_at = now + timedelta(seconds=lease_seconds)
            row.current_stage = self._attempts[lease_token].stage = stage
            row.updated_at = now
            return True

    async def release_document_lease(
        self,
        document_id: str,
        lease_token: str,
        outcome: ReleaseOutcome,
        error: ErrorInfo | None = None,
        retry_delay: float = 0.0,
    ) -> ReleaseResult:
        async with self._lock:
            now = self._clock()
            row = self._held(document_id, lease_token)
            if row is None:
                current = self._rows.get(document_id)
                if current is None:
                    return ReleaseResult(applied=False)
                return ReleaseResult(
                    False, current.status, current.not_before, current.dispatch_seq
                )
            outcome = ReleaseOutcome(outcome)
            if outcome == ReleaseOutcome.SUCCESS:
                self._complete(row, lease_token, now, {})
            else:
                self._give_back(row, lease_token, outcome, error, retry_delay, now)
            return ReleaseResult(True, row.status, row.not_before, row.dispatch_seq)

    async def find_expired_leases(self, limit: int) -> list[Dispatch]:
        async with self._lock:
            now = self._clock()
            expired = [r for r in self._rows.values() if r.lease_expired(now)]
            expired.sort(key=lambda r: (r.lease_expires_at, r.created_at))
            return [self._reclaim(row, now) for row in expired[: max(limit, 0)]]

    async def claim_queued_documents(
        self, worker_id: str, lease_seconds: float, limit: int, ready_for: float = 0.0
    ) -> list[Lease]:
        async with self._lock:
            now = self._clock()
            since = now - timedelta(seconds=max(ready_for, 0.0))
            ready = [
                r
                for r in self._rows.values()
                if r.is_ready(now) and r.may_acquire(now) and r.ready_since <= since
            ]
            ready.sort(key=lambda r: (r.ready_since, r.created_at))
            return [self._grant(r, worker_id, lease_seconds, now) for r in ready[: max(limit, 0)]]

    async def claim_stale_dispatches(self, older_than: float, limit: int) -> list[Dispatch]:
        async with self._lock:
            now = self._clock()
            cutoff = now - timedelta(seconds=older_than)
            stale = [
                r
                for r in self._rows.values()
                if r.is_ready(now)
                and (r.last_dispatched_at is None or r.last_dispatched_at <= cutoff)
            ]
            stale.sort(key=lambda r: r.last_dispatched_at or datetime.min.replace(tzinfo=UTC))
            for row in stale[: max(limit, 0)]:
                row.redispatch(now)
                row.updated_at = now
            return [row.dispatch() for row in stale[: max(limit, 0)]]

    async def write_chunks(self, lease: Lease, chunks: Sequence[EmbeddedChunk]) -> None:
        async with self._lock:
            row = self._fenced(lease)
            staged = [
                _StoredChunk(row.id, lease.token, c.chunk, c.model, np.array(c.vector, "<f4"))
                for c in chunks
            ]
            self._chunks.extend(staged)  # all or nothing: built before anything is added
            row.current_stage = self._attempts[lease.token].stage = "index"

    async def complete(self, lease: Lease, completion: Completion) -> None:
        async with self._lock:
            row = self._fenced(lease)
            self._complete(row, lease.token, self._clock(), completion.stage_seconds)
            row.page_count = completion.page_count
            row.embedding_model = completion.embedding_model
            row.embedding_dimensions = completion.embedding_dimensions

    # -- repository ----------------------------------------------------------------------

    async def create_document(self, doc: NewDocument) -> tuple[Document, bool]:
        async with self._lock:
            twin = next((r for r in self._rows.values() if _same_live_content(r, doc)), None)
            if twin is not None:  # the unique (collection, sha256) index of the SQL backends
                return self._document(twin), False
            if doc.id in self._rows:
                raise ValueError(f"document id {doc.id} already exists")
            now = self._clock()
            values = {f.name: getattr(doc, f.name) for f in fields(NewDocument)}
            row = _Row(**values, created_at=now, updated_at=now, last_dispatched_at=now)
            self._rows[doc.id] = row
            return self._document(row), True

    async def get_document(self, document_id: str, *, history: bool = True) -> Document | None:
        async with self._lock:
            row = self._rows.get(document_id)
            return None if row is None else self._document(row, history=history)

    async def list_documents(
        self, collection: str | None, status: Status | None, after: str | None, limit: int
    ) -> list[Document]:
        async with self._lock:
            rows = [r for r in self._rows.values() if _listed(r, collection, status)]
            rows.sort(key=lambda r: (r.created_at, r.id), reverse=True)
            if after is not None:
                anchor = self._rows.get(after)
                if anchor is None:  # as in SQL: comparing with a missing row matches nothing
                    return []
                rows = [r for r in rows if (r.created_at, r.id) < (anchor.created_at, anchor.id)]
            return [self._document(r, history=False) for r in rows[: max(limit, 0)]]

    async def delete_document(self, document_id: str) -> Document | None:
        async with self._lock:
            now = self._clock()
            row = self._rows.get(document_id)
            if row is None:
                return None
            if row.status != Status.DELETED:
                for attempt in self._attempts_of(row.id):
                    if attempt.outcome == AttemptOutcome.RUNNING:
                        attempt.end(AttemptOutcome.SUPERSEDED, now, None)
                row.status, row.deleted_at, row.updated_at = Status.DELETED, now, now
                row.clear_lease()
            return self._document(row)

    async def retry_document(self, document_id: str) -> Document | None:
        async with self._lock:
            now = self._clock()
            row = self._rows.get(document_id)
            if row is None:
                return None
            if row.status == Status.FAILED:
                row.status, row.attempts, row.not_before = Status.QUEUED, 0, None
                row.set_error(None, None)
                row.redispatch(now)
                row.updated_at = now
            return self._document(row)

    async def collection_counts(self) -> dict[str, dict[str, int]]:
        async with self._lock:
            found: dict[str, dict[str, int]] = {}
            for row in self._rows.values():
                if row.status != Status.DELETED:
                    counts = found.setdefault(row.collection, {})
                    counts[row.status.value] = counts.get(row.status.value, 0) + 1
            return found

    async def stats(self) -> Stats:
        async with self._lock:
            now = self._clock()
            counts = {status.value: 0 for status in Status}
            for row in self._rows.values():
                counts[row.status.value] += 1
            ready = [r.not_before or r.created_at for r in self._rows.values() if r.is_ready(now)]
            oldest = (now - min(ready)).total_seconds() if ready else None
            live = sum(
                1
                for r in self._rows.values()
                if r.status == Status.PROCESSING and r.lease_expires_at and r.lease_expires_at > now
            )
            return Stats(counts=counts, oldest_ready_age_seconds=oldest, leases_held=live)

    async def activity(self, window_seconds: float, limit: int) -> Activity:
        async with self._lock:
            now = self._clock()
            since = now - timedelta(seconds=window_seconds)
            numbered = enumerate(self._attempts.values())  # insertion order: the SQL id
            ended = [(a.ended_at, i, a) for i, a in numbered if a.ended_at and a.ended_at >= since]
            ended.sort(key=lambda item: (item[0], item[1]), reverse=True)
            return Activity(
                now=now,
                ended=tuple(self._ended(a) for _, _, a in ended[: max(limit, 0)]),
                in_flight=tuple(self._in_flight()[: max(limit, 0)]),
                complete=len(ended) <= limit,
            )

    async def pending_cleanups(self, limit: int) -> list[Cleanup]:
        async with self._lock:
            tombs = [r for r in self._rows.values() if _unpurged_tombstone(r)]
            tombs.sort(key=lambda r: (r.deleted_at, r.created_at))
            return [Cleanup(r.id, r.blob_key) for r in tombs[: max(limit, 0)]]

    async def purge_document(self, document_id: str) -> None:
        """Only tombstones are purged: a live document's chunks are never removed here."""
        async with self._lock:
            row = self._rows.get(document_id)
            if row is None or row.status != Status.DELETED:
                return
            self._chunks = [c for c in self._chunks if c.document_id != document_id]
            if row.purged_at is None:
                row.purged_at = self._clock()

    async def known_blob_keys(self, keys: Sequence[str]) -> set[str]:
        async with self._lock:
            named = {r.blob_key for r in self._rows.values() if r.purged_at is None}
            return named.intersection(keys)

    async def document_chunks(self, document_id: str) -> list[Chunk]:
        async with self._lock:
            live = [c for c in self._chunks if c.document_id == document_id and self._live(c)]
            return [c.chunk for c in sorted(live, key=lambda c: c.chunk.ordinal)]

    async def cached_embeddings(
        self, collection: str, model: str, content_hashes: Sequence[str]
    ) -> dict[str, tuple[float, ...]]:
        wanted = set(content_hashes)
        async with self._lock:
            return {
                content_hash(c.chunk.text): tuple(float(x) for x in c.vector)
                for c in self._chunks
                if c.model == model
                and self._rows[c.document_id].collection == collection
                and content_hash(c.chunk.text) in wanted
            }

    async def search(
        self,
        collection: str,
        vector: Sequence[float],
        model: str,
        k: int,
        filters: SearchFilter | None = None,
    ) -> list[SearchHit]:
        async with self._lock:
            query = np.asarray(vector, dtype=np.float64)
            candidates = [
                c
                for c in self._chunks
                if c.model == model
                and c.vector.shape == query.shape
                and self._rows[c.document_id].collection == collection
                and self._live(c)
                and _allowed(self._rows[c.document_id], filters)
            ]
            candidates.sort(key=lambda c: (c.document_id, c.chunk.ordinal))
            if not candidates or k <= 0:
                return []
            scores = _cosine(np.stack([c.vector for c in candidates]), query)
            best = np.argsort(-scores, kind="stable")[:k]
            return [self._hit(candidates[i], float(scores[i])) for i in best]

    async def keyword_search(
        self, collection: str, query: str, k: int, filters: SearchFilter | None = None
    ) -> list[SearchHit]:
        """Okapi BM25 of whole words (`bm25_rank`) over the collection's live chunks: the
        SQL backends stem words and estimate statistics their own way, so the contract
        holds them to which chunks are found, not to exact scores."""
        terms = query_terms(query)
        async with self._lock:
            live = [
                c
                for c in self._chunks
                if self._rows[c.document_id].collection == collection and self._live(c)
            ]
            if not live or not terms or k <= 0:
                return []
            live.sort(key=lambda c: (c.document_id, c.chunk.ordinal))
            texts = {i: c.chunk.text for i, c in enumerate(live)}
            avgdl = sum(len(text) for text in texts.values()) / len(texts)
            ranked = bm25_rank(
                texts,
                terms,
                len(texts),
                avgdl,
                lambda i: _allowed(self._rows[live[i].document_id], filters),
            )
            return [self._hit(live[i], score) for i, score in ranked[:k]]

    async def collection_exists(self, collection: str) -> bool:
        async with self._lock:
            return any(r.collection == collection for r in self._rows.values())

    async def watch_queue(self, arrived: asyncio.Event, stop: asyncio.Event) -> None:
        """No notifications: workers on the fake poll."""

    async def ping(self) -> None:
        if self._closed:
            raise StoreUnavailable("the in-memory document store is closed")

    async def close(self) -> None:
        self._closed = True

    # -- internals (called with the lock held) -------------------------------------------

    def _ended(self, attempt: _AttemptRow) -> EndedAttempt:
        assert attempt.ended_at is not None
        return EndedAttempt(
            document_id=attempt.document_id,
            number=attempt.number,
            max_attempts=self._rows[attempt.document_id].max_attempts,
            worker_id=attempt.worker_id,
            started_at=attempt.started_at,
            ended_at=attempt.ended_at,
            outcome=attempt.outcome,
            error_code=attempt.error_code,
            stage_seconds=dict(attempt.stage_seconds),
        )

    def _in_flight(self) -> list[InFlight]:
        found = []
        for row in self._rows.values():
            if row.status == Status.PROCESSING and row.lease_token is not None:
                attempt = self._attempts[row.lease_token]
                found.append(
                    InFlight(
                        document_id=row.id,
                        collection=row.collection,
                        filename=row.filename,
                        worker_id=attempt.worker_id,
                        stage=row.current_stage,
                        started_at=attempt.started_at,
                        heartbeat_at=row.updated_at,
                        lease_expires_at=row.lease_expires_at,
                    )
                )
        return sorted(found, key=lambda f: (f.started_at, f.document_id))

    def _grant(self, row: _Row, worker_id: str, lease_seconds: float, now: datetime) -> Lease:
        """Acquire: a new token and attempt; an expired holder's attempt and chunks go."""
        if row.lease_token is not None:
            self._attempts[row.lease_token].end(AttemptOutcome.EXPIRED, now, None)
            self._drop_staged(row.id, row.lease_token)
        token = str(uuid4())
        row.status, row.lease_owner, row.lease_token = Status.PROCESSING, worker_id, token
        row.lease_expires_at = now + timedelta(seconds=lease_seconds)
        row.attempts += 1
        row.started_at = row.started_at or now
        row.current_stage, row.updated_at = "queued", now
        self._attempts[token] = _AttemptRow(row.id, row.attempts, worker_id, token, now)
        return Lease(
            document_id=row.id,
            collection=row.collection,
            token=token,
            worker_id=worker_id,
            expires_at=row.lease_expires_at,
            attempt=row.attempts,
            dispatch_seq=row.dispatch_seq,
            blob_key=row.blob_key,
            content_type=row.content_type,
        )

    def _refusal(self, row: _Row, now: datetime) -> AcquireResult:
        if row.status in TERMINAL_STATUSES:
            outcome = AcquireOutcome.TERMINAL
        elif row.status == Status.QUEUED and not row.is_ready(now):
            return AcquireResult(
                AcquireOutcome.NOT_READY,
                not_before=row.not_before,
                dispatch_seq=row.dispatch_seq,
                status=row.status,
            )
        else:
            outcome = AcquireOutcome.HELD
        return AcquireResult(outcome, dispatch_seq=row.dispatch_seq, status=row.status)

    def _held(self, document_id: str, token: str) -> _Row | None:
        row = self._rows.get(document_id)
        if row is None or row.status != Status.PROCESSING or row.lease_token != token:
            return None
        return row

    def _fenced(self, lease: Lease) -> _Row:
        row = self._held(lease.document_id, lease.token)
        if row is None:
            raise LeaseLost(f"lease {lease.token} on document {lease.document_id} is lost")
        return row

    def _complete(
        self, row: _Row, token: str, now: datetime, stage_seconds: dict[str, float]
    ) -> None:
        """The completion transaction: swap in the token's chunks, record, done."""
        self._chunks = [
            c for c in self._chunks if c.document_id != row.id or c.lease_token == token
        ]
        row.chunk_count = sum(1 for c in self._chunks if c.document_id == row.id)
        row.chunks_token = token
        row.status, row.completed_at, row.updated_at = Status.COMPLETED, now, now
        row.current_stage = None
        row.clear_lease()
        row.set_error(None, None)
        attempt = self._attempts[token]
        attempt.end(AttemptOutcome.COMPLETED, now, None)
        attempt.stage_seconds = dict(stage_seconds)

    def _give_back(
        self,
        row: _Row,
        token: str,
        outcome: ReleaseOutcome,
        error: ErrorInfo | None,
        retry_delay: float,
        now: datetime,
    ) -> None:
        """Release without success: retry later, fail, or hand back an unspent attempt."""
        self._drop_staged(row.id, token)
        self._attempts[token].end(AttemptOutcome(outcome.value), now, error)
        row.clear_lease()
        row.updated_at = now
        if outcome == ReleaseOutcome.INTERRUPTED:
            row.status, row.not_before = Status.QUEUED, None
            row.attempts -= 1
        elif outcome == ReleaseOutcome.TRANSIENT and row.attempts < row.max_attempts:
            row.status, row.not_before = Status.QUEUED, now + timedelta(seconds=retry_delay)
            row.set_error(error, ErrorKind.TRANSIENT)
            row.redispatch(now)
        else:
            row.status = Status.FAILED
            row.set_error(error, ErrorKind(outcome.value))

    def _reclaim(self, row: _Row, now: datetime) -> Dispatch:
        """Take back a lease whose worker stopped renewing it (crashed, hung, partitioned)."""
        token = row.lease_token
        assert token is not None  # processing rows always carry a token
        message = (
            f"worker {row.lease_owner} stopped renewing its lease during stage "
            f"{row.current_stage} (attempt {row.attempts} of {row.max_attempts})"
        )
        error = ErrorInfo("lease_expired", message)
        self._drop_staged(row.id, token)
        self._attempts[token].end(AttemptOutcome.EXPIRED, now, error)
        row.clear_lease()
        row.updated_at = now
        if row.attempts < row.max_attempts:
            row.status, row.not_before = Status.QUEUED, None
            row.set_error(error, ErrorKind.TRANSIENT)
            row.redispatch(now)
        else:
            row.status = Status.FAILED
            row.set_error(error, ErrorKind.PERMANENT)
        return row.dispatch()

    def _drop_staged(self, document_id: str, token: str) -> None:
        self._chunks = [
            c for c in self._chunks if (c.document_id, c.lease_token) != (document_id, token)
        ]

    def _live(self, chunk: _StoredChunk) -> bool:
        row = self._rows[chunk.document_id]
        return row.status == Status.COMPLETED and row.chunks_token == chunk.lease_token

    def _attempts_of(self, document_id: str) -> Iterable[_AttemptRow]:
        return (a for a in self._attempts.values() if a.document_id == document_id)

    def _document(self, row: _Row, *, history: bool = True) -> Document:
        names = [f.name for f in fields(Document) if f.name != "history"]
        values: dict[str, Any] = {name: getattr(row, name) for name in names}
        attempts = sorted(self._attempts_of(row.id), key=lambda a: a.number) if history else []
        return Document(**values, history=tuple(a.snapshot() for a in attempts))

    def _hit(self, chunk: _StoredChunk, score: float) -> SearchHit:
        c = chunk.chunk
        filename = self._rows[chunk.document_id].filename
        return SearchHit(
            chunk.document_id, filename, c.ordinal, c.page_start, c.page_end, score, c.text
        )


def _listed(row: _Row, collection: str | None, status: Status | None) -> bool:
    if collection is not None and row.collection != collection:
        return False
    return row.status == status if status is not None else row.status != Status.DELETED


def _allowed(row: _Row, filters: SearchFilter | None) -> bool:
    """Whether `filters` lets a search return chunks of this document (as in SQL)."""
    if filters is None:
        return True
    if filters.document_ids and row.id not in filters.document_ids:
        return False
    if filters.filename is not None and not glob_to_regex(filters.filename).fullmatch(row.filename):
        return False
    if filters.uploaded_from is not None and row.created_at < filters.uploaded_from:
        return False
    return filters.uploaded_to is None or row.created_at <= filters.uploaded_to


def _same_live_content(row: _Row, doc: NewDocument) -> bool:
    same = (row.collection, row.sha256) == (doc.collection, doc.sha256)
    return same and row.status != Status.DELETED


def _unpurged_tombstone(row: _Row) -> bool:
    return row.status == Status.DELETED and row.purged_at is None


def _cosine(
    matrix: npt.NDArray[np.float32], query: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Exact cosine similarity of every row with `query`; zero vectors score 0."""
    rows = matrix.astype(np.float64)
    norms: npt.NDArray[np.float64] = np.linalg.norm(rows, axis=1) * np.linalg.norm(query)
    dots: npt.NDArray[np.float64] = rows @ query
    scores: npt.NDArray[np.float64] = np.zeros_like(dots)
    np.divide(dots, norms, out=scores, where=norms > 0)
    return scores


class InMemoryBlobStore:
    """`BlobStore` in a dict, with the same key rules and atomicity as `LocalBlobStore`."""

    def __init__(self) -> None:
        self._blobs: dict[str, tuple[bytes, datetime]] = {}

    async def put(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        """Collect the whole stream first, so a stream that raises stores nothing."""
        validate_blob_key(key)
        body = bytearray()
        async for chunk in chunks:
            body += chunk
        self._blobs[key] = (bytes(body), _utc_now())
        return len(body)

    async def download(self, key: str, dest: Path) -> int:
        validate_blob_key(key)
        try:
            body, _ = self._blobs[key]
        except KeyError:
            raise BlobNotFound(f"no blob with key {key!r}") from None
        await asyncio.to_thread(dest.write_bytes, body)
        return len(body)

    async def delete(self, key: str) -> None:
        validate_blob_key(key)
        self._blobs.pop(key, None)

    async def ping(self) -> None:
        """Always reachable."""

    async def close(self) -> None:
        """Nothing to release."""

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        snapshot = sorted((k, v) for k, v in self._blobs.items() if k.startswith(prefix))
        for key, (body, modified) in snapshot:
            yield BlobInfo(key=key, size=len(body), modified=modified)


class RecordingMessageBus:
    """`MessageBus` that keeps what it was sent in `sent`, and can simulate an outage.

    `fail_next(n)` makes the next `n` sends raise `TransientError` (the error the Service
    Bus adapter raises when the namespace is unreachable) without recording anything.
    """

    def __init__(self) -> None:
        self.enabled = True
        self.sent: list[Dispatch] = []
        self.closed = False
        self._failures_left = 0

    def fail_next(self, count: int = 1) -> None:
        self._failures_left = count

    async def send(self, dispatches: Sequence[Dispatch]) -> None:
        if self._failures_left > 0:
            self._failures_left -= 1
            raise TransientError("simulated message bus outage", code="message_bus_unavailable")
        self.sent.extend(dispatches)

    async def close(self) -> None:
        self.closed = True


@dataclass(slots=True)
class _Message:
    sequence_number: int
    message_id: str
    body: bytes
    visible_at: datetime  # a scheduled message stays invisible until then
    enqueued_at: datetime
    delivery_count: int = 0  # failed deliveries so far: abandons and lapsed locks
    lock: str | None = None
    locked_until: datetime | None = None
    reason: str | None = None  # dead letters only
    description: str | None = None


class InMemoryQueue:
    """`WorkQueue` in memory, with Service Bus's peek-lock semantics.

    Held to the same contract suite as the Service Bus adapter
    (`tests/integration/test_queue_contract.py`): duplicate detection on the message id,
    scheduled messages, a lock per delivery that lapses after `lock_seconds` (then the
    message comes back with `delivery_count` + 1, and after `max_delivery_count` failed
    deliveries it is dead-lettered as `MaxDeliveryCountExceeded`), lock renewal by the queue
    until a delivery is settled, and the dead-letter sub-queue. `down = True` simulates an
    outage: sends and receives raise `QueueUnavailable`. `sent` keeps every dispatch
    accepted, duplicates included, so a test can count the wake-ups a service sent.
    """

    def __init__(
        self,
        *,
        lock_seconds: float = 30.0,
        max_delivery_count: int = 10,
        duplicate_window_seconds: float = 600.0,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.enabled = True
        self.down = False
        self.sent: list[Dispatch] = []
        self.lock = timedelta(seconds=lock_seconds)
        self.max_delivery_count = max_delivery_count
        self.duplicate_window = timedelta(seconds=duplicate_window_seconds)
        self._clock = clock
        self._active: dict[int, _Message] = {}
        self._dead: dict[int, _Message] = {}
        self._seen: dict[str, datetime] = {}  # message id → when it was accepted
        self._sequence = 0
        self._changed = asyncio.Event()

    # -- MessageBus -----------------------------------------------------------------------

    async def send(self, dispatches: Sequence[Dispatch]) -> None:
        self._check_up()
        now = self._clock()
        for dispatch in dispatches:
            self.sent.append(dispatch)
            mid = message_id(dispatch)
            seen = self._seen.get(mid)
            if seen is not None and now - seen < self.duplicate_window:
                continue
            self._seen[mid] = now
            self._sequence += 1
            body = encode(dispatch).encode()
            visible = when(dispatch, now) or now
            self._active[self._sequence] = _Message(self._sequence, mid, body, visible, now)
        self._changed.set()

    async def close(self) -> None:
        """Nothing to release; what the queue holds stays inspectable."""

    def put_raw(self, body: bytes, message_id: str) -> None:
        """Enqueue any body, as another producer might: to test what a consumer makes of it."""
        self._sequence += 1
        now = self._clock()
        self._active[self._sequence] = _Message(self._sequence, message_id, body, now, now)
        self._changed.set()

    # -- receiving ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def deliveries(
        self, prefetch: int, lock_renewal_seconds: float
    ) -> AsyncIterator[_MemoryReceiver]:
        self._check_up()
        receiver = _MemoryReceiver(self, lock_renewal_seconds)
        try:
            yield receiver
        finally:
            receiver.closed = True  # as with Service Bus: its deliveries can no longer settle

    def counts(self) -> dict[str, int]:
        """`active` (visible, unlocked), `scheduled`, `locked` and `dead_letter` messages."""
        now = self._expire()
        locked = sum(1 for m in self._active.values() if m.lock is not None)
        scheduled = sum(1 for m in self._active.values() if m.visible_at > now)
        active = len(self._active) - locked - scheduled
        return {
            "active": active,
            "scheduled": scheduled,
            "locked": locked,
            "dead_letter": len(self._dead),
        }

    def _check_up(self) -> None:
        if self.down:
            raise QueueUnavailable("the in-memory queue is down (simulated outage)")

    def _expire(self) -> datetime:
        """Lapse the locks that ran out; return now."""
        now = self._clock()
        for message in list(self._active.values()):
            if message.locked_until is not None and message.locked_until <= now:
                self._unlock(message)
                self._failed_delivery(message)
        return now

    def _take(self, max_count: int) -> list[_Message]:
        now = self._expire()
        taken: list[_Message] = []
        for message in sorted(self._active.values(), key=lambda m: m.sequence_number):
            if len(taken) == max_count:
                break
            if message.lock is None and message.visible_at <= now:
                message.lock = uuid4().hex
                message.locked_until = now + self.lock
                taken.append(message)
        return taken

    def _holds(self, sequence_number: int, lock: str) -> _Message | None:
        self._expire()
        message = self._active.get(sequence_number)
        if message is None or message.lock != lock:
            return None
        return message

    def _unlock(self, message: _Message) -> None:
        message.lock = None
        message.locked_until = None
        self._changed.set()

    def _failed_delivery(self, message: _Message) -> None:
        message.delivery_count += 1
        if message.delivery_count >= self.max_delivery_count:
            description = (
                f"Message could not be consumed after {message.delivery_count} delivery attempts."
            )
            self._to_dead_letter(message, "MaxDeliveryCountExceeded", description)

    def _to_dead_letter(self, message: _Message, reason: str, description: str) -> None:
        del self._active[message.sequence_number]
        message.reason, message.description = reason, description
        self._dead[message.sequence_number] = message

    async def waiting(self, limit: int) -> set[str] | None:
        self._check_up()
        self._expire()
        if len(self._active) > limit:
            return None
        ids = set()
        for message in self._active.values():
            with contextlib.suppress(MalformedMessage):
                ids.add(decode(message.body).document_id)
        return ids

    # -- DeadLetterView -------------------------------------------------------------------

    async def peek_dead_letters(
        self, limit: int, from_sequence_number: int = 0
    ) -> list[DeadLetter]:
        self._check_up()
        numbers = sorted(n for n in self._dead if n >= from_sequence_number)
        return [_dead_letter(self._dead[n]) for n in numbers[:limit]]

    async def take_dead_letters(
        self,
        handle: Callable[[DeadLetter], Awaitable[bool]],
        *,
        enough: Callable[[], bool],
        limit: int,
        max_wait: float = 1.0,
    ) -> None:
        self._check_up()
        for seen, number in enumerate(sorted(self._dead)):
            if enough() or seen >= limit:
                return
            message = self._dead[number]
            if await handle(_dead_letter(message)):
                del self._dead[number]
            else:
                message.delivery_count += 1  # given back, as an abandon would


class _MemoryReceiver:
    def __init__(self, queue: InMemoryQueue, renew_for: float) -> None:
        self.queue = queue
        self.renew_for = renew_for
        self.closed = False

    async def receive(self, max_count: int, max_wait: float) -> list[Delivery]:
        deadline = asyncio.get_running_loop().time() + max_wait
        while True:
            self.queue._check_up()
            self.queue._changed.clear()
            taken = self.queue._take(max_count)
            left = deadline - asyncio.get_running_loop().time()
            if taken or left <= 0:
                return [_MemoryDelivery(self, m) for m in taken]
            # Woken by a send or an unlock; a scheduled message or a lapsing lock is found
            # by the next look, at most a tenth of a second later.
            await wait_event(self.queue._changed, min(left, 0.1))


class _MemoryDelivery:
    def __init__(self, receiver: _MemoryReceiver, message: _Message) -> None:
        assert message.lock is not None
        self.receiver = receiver
        self.queue = receiver.queue
        self.sequence_number = message.sequence_number
        self.lock = message.lock
        self.message_id = message.message_id
        self.body = message.body
        self.delivery_count = message.delivery_count
        self._renewal = asyncio.create_task(self._keep_locked(receiver.renew_for))

    async def complete(self) -> bool:
        return self._settle(lambda m: self.queue._active.pop(m.sequence_number))

    async def abandon(self) -> bool:
        def give_back(message: _Message) -> None:
            self.queue._unlock(message)
            self.queue._failed_delivery(message)

        return self._settle(give_back)

    async def dead_letter(self, reason: str, description: str) -> bool:
        return self._settle(lambda m: self.queue._to_dead_letter(m, reason, description[:4000]))

    async def renew(self) -> bool:
        message = self._held()
        if message is None:
            return False
        message.locked_until = self.queue._clock() + self.queue.lock
        return True

    def _settle(self, action: Callable[[_Message], object]) -> bool:
        self._renewal.cancel()
        message = self._held()
        if message is None:
            return False  # the lock lapsed: the message was (or will be) delivered again
        action(message)
        return True

    def _held(self) -> _Message | None:
        if self.receiver.closed:
            return None
        return self.queue._holds(self.sequence_number, self.lock)

    async def _keep_locked(self, renew_for: float) -> None:
        interval = max(0.05, self.queue.lock.total_seconds() / 2)
        deadline = asyncio.get_running_loop().time() + renew_for
        while asyncio.get_running_loop().time() + interval < deadline:
            await asyncio.sleep(interval)
            if not await self.renew():
                return


def _dead_letter(message: _Message) -> DeadLetter:
    return DeadLetter(
        sequence_number=message.sequence_number,
        message_id=message.message_id,
        reason=message.reason,
        description=message.description,
        delivery_count=message.delivery_count,
        enqueued_at=message.enqueued_at,
        body=message.body,
    )


class InMemoryKeyStore:
    """`KeyStore` in a dict; the same contract suite as `SqlKeyStore` holds it honest."""

    def __init__(self, clock: Callable[[], datetime] = _utc_now) -> None:
        self._clock = clock
        self._keys: dict[str, StoredKey] = {}

    async def create_key(self, key: NewApiKey) -> ApiKey:
        if key.id in self._keys:
            raise ValueError(f"duplicate key id {key.id}")
        created = ApiKey(key.id, key.name, key.scope, key.collections, self._clock())
        self._keys[key.id] = StoredKey(created, key.secret_sha256)
        return created

    async def find_key(self, key_id: str) -> StoredKey | None:
        return self._keys.get(key_id)

    async def list_keys(self) -> list[ApiKey]:
        return sorted((s.key for s in self._keys.values()), key=lambda k: (k.created_at, k.id))

    async def revoke_key(self, key_id: str) -> ApiKey | None:
        stored = self._keys.get(key_id)
        if stored is None:
            return None
        if not stored.key.revoked:
            revoked = dataclasses_replace(stored.key, revoked_at=self._clock())
            stored = self._keys[key_id] = StoredKey(revoked, stored.secret_sha256)
        return stored.key
