"""The ports: one small Protocol per external system.

Services depend on these and nothing else; each backend is one adapter module under
`sheaf.adapters`, and every port has an in-memory fake in `sheaf.testing` that passes the
same contract tests as the real adapters.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from sheaf.domain.keys import ApiKey, NewApiKey, StoredKey
from sheaf.domain.models import (
    AcquireResult,
    Activity,
    Chunk,
    ChunkBatch,
    Chunking,
    Cleanup,
    Completion,
    Dispatch,
    Document,
    EmbeddedChunk,
    ErrorInfo,
    Lease,
    NewDocument,
    Page,
    ReleaseOutcome,
    ReleaseResult,
    SearchFilter,
    SearchHit,
    Stats,
    Status,
)


class LeaseStore(Protocol):
    """The lease contract of ARCHITECTURE.md §3 — same names and meaning on every backend.

    All times are decided by the database clock. Raises `LeaseLost` from the write
    methods when the token no longer matches the row.
    """

    async def acquire_document_lease(
        self, document_id: str, worker_id: str, lease_seconds: float
    ) -> AcquireResult: ...

    async def renew_document_lease(
        self, document_id: str, lease_token: str, lease_seconds: float, stage: str
    ) -> bool:
        """True while the token matches; False means: stop working on it at once."""
        ...

    async def release_document_lease(
        self,
        document_id: str,
        lease_token: str,
        outcome: ReleaseOutcome,
        error: ErrorInfo | None = None,
        retry_delay: float = 0.0,
    ) -> ReleaseResult: ...

    async def find_expired_leases(self, limit: int) -> list[Dispatch]:
        """Re-queue (or fail, when attempts are exhausted) rows whose lease expired."""
        ...

    async def claim_queued_documents(
        self, worker_id: str, lease_seconds: float, limit: int, ready_for: float = 0.0
    ) -> list[Lease]:
        """Lease up to `limit` ready queued rows, oldest first; with `ready_for`, only rows
        ready (since `not_before`, else since upload) for at least that many seconds."""
        ...

    async def claim_stale_dispatches(self, older_than: float, limit: int) -> list[Dispatch]: ...

    async def write_chunks(self, lease: Lease, chunks: Sequence[EmbeddedChunk]) -> None:
        """Stage one batch of chunks under the lease; invisible until `complete`."""
        ...

    async def complete(self, lease: Lease, completion: Completion) -> None:
        """The one completion transaction: fence on the token, swap chunks, record, done."""
        ...


class DocumentRepository(Protocol):
    """Everything about documents that is not the lease contract."""

    async def create_document(self, doc: NewDocument) -> tuple[Document, bool]:
        """Insert a queued row; on an existing live (collection, sha256) return that one.

        The bool is True when this call created the row.
        """
        ...

    async def get_document(self, document_id: str, *, history: bool = True) -> Document | None: ...

    async def list_documents(
        self,
        collection: str | None,
        status: Status | None,
        after: str | None,
        limit: int,
    ) -> list[Document]:
        """Newest first by (created_at, id); `after` is the id of the last row already seen."""
        ...

    async def delete_document(self, document_id: str) -> Document | None:
        """Tombstone: status `deleted` and lease cleared in one statement."""
        ...

    async def retry_document(self, document_id: str) -> Document | None:
        """`failed` → `queued` with fresh attempts and a bumped `dispatch_seq`; else unchanged."""
        ...

    async def stats(self) -> Stats: ...

    async def collection_counts(self) -> dict[str, dict[str, int]]:
        """Live (not deleted) documents per collection and status: {collection: {status: n}}."""
        ...

    async def activity(self, window_seconds: float, limit: int) -> Activity:
        """Attempts that ended in the last `window_seconds` (newest first, at most `limit`)
        and every document in `processing` with its running attempt (at most `limit`)."""
        ...

    async def pending_cleanups(self, limit: int) -> list[Cleanup]: ...

    async def purge_document(self, document_id: str) -> None:
        """Remove a tombstone's chunks and mark it purged (its blob is already gone)."""
        ...

    async def known_blob_keys(self, keys: Sequence[str]) -> set[str]:
        """Which of these blob keys a document row still names."""
        ...

    async def document_chunks(self, document_id: str) -> list[Chunk]:
        """The live chunks of a document (those its completion made visible), in order."""
        ...


class VectorIndex(Protocol):
    async def cached_embeddings(
        self, collection: str, model: str, content_hashes: Sequence[str]
    ) -> dict[str, tuple[float, ...]]:
        """Vectors already stored in `collection` by `model` for these chunk text hashes.

        The embedding cache: keyed by `content_hash(text)`, scoped to the collection, and
        purged with the documents whose chunks hold the vectors.
        """
        ...

    async def search(
        self,
        collection: str,
        vector: Sequence[float],
        model: str,
        k: int,
        filters: SearchFilter | None = None,
    ) -> list[SearchHit]:
        """Exact nearest chunks of `completed` documents embedded by `model`, best first,
        from the documents `filters` allows."""
        ...


class KeywordIndex(Protocol):
    """The keyword (BM25-class) index over the same live chunks as the vectors: written
    with the chunks, swapped with them at completion, gone with them on purge."""

    async def keyword_search(
        self, collection: str, query: str, k: int, filters: SearchFilter | None = None
    ) -> list[SearchHit]:
        """Live chunks of `completed` documents matching any word of `query`, best BM25
        score first (`score` is the backend's BM25, higher is better), from the documents
        `filters` allows. A query without words finds nothing."""
        ...

    async def collection_exists(self, collection: str) -> bool:
        """Whether any document was ever uploaded into the collection (tombstones count:
        the collection of a deleted document still exists, and is empty)."""
        ...


class DocumentStore(LeaseStore, DocumentRepository, VectorIndex, KeywordIndex, Protocol):
    """The SQL database: the three ports one relational backend provides together."""

    async def watch_queue(self, arrived: asyncio.Event, stop: asyncio.Event) -> None:
        """Until `stop`, set `arrived` soon after a document becomes ready to claim.

        A hint for polling workers, never a guarantee: a store that cannot push returns at
        once, and one that loses its connection keeps trying; the poll finds what it missed.
        """
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class BlobInfo:
    key: str
    size: int
    modified: datetime


class BlobStore(Protocol):
    async def put(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        """Store the stream atomically under `key`; return its size. Nothing partial stays."""
        ...

    async def download(self, key: str, dest: Path) -> int:
        """Stream the blob into the local file `dest`; raise `BlobNotFound` if absent."""
        ...

    async def delete(self, key: str) -> None:
        """Idempotent."""
        ...

    def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class MessageBus(Protocol):
    """Wake-up messages. The database is the source of truth; a lost message is harmless.

    A dispatch whose `not_before` lies in the future is scheduled for that time instead of
    sent now. A send that fails raises `TransientError`: the reconciler re-sends later.
    """

    enabled: bool

    async def send(self, dispatches: Sequence[Dispatch]) -> None: ...

    async def close(self) -> None: ...


class Delivery(Protocol):
    """One message received in peek-lock: no other receiver gets it until it is settled or
    its lock lapses (then it comes back with `delivery_count` + 1).

    The queue keeps the lock renewed until the delivery is settled, up to the renewal limit
    its receiver was opened with. Settling returns False instead of raising when the lock is
    already lost (or the receiver closed): the redelivery then finds the row decided.
    """

    @property
    def message_id(self) -> str: ...

    @property
    def body(self) -> bytes: ...

    @property
    def delivery_count(self) -> int: ...

    async def complete(self) -> bool:
        """Remove the message from the queue."""
        ...

    async def abandon(self) -> bool:
        """Give the message back at once for another delivery."""
        ...

    async def dead_letter(self, reason: str, description: str) -> bool:
        """Move the message to the dead-letter sub-queue with why and what to do."""
        ...

    async def renew(self) -> bool:
        """Extend the lock now (the queue also does this by itself until settled)."""
        ...


class Receiver(Protocol):
    """An open peek-lock receiver of the queue."""

    async def receive(self, max_count: int, max_wait: float) -> list[Delivery]:
        """Up to `max_count` deliveries, waiting at most `max_wait` seconds for the first.

        Raises `QueueUnavailable` when the queue cannot be reached.
        """
        ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message of the dead-letter sub-queue, as read by a peek or a peek-lock receive."""

    sequence_number: int
    message_id: str
    reason: str | None
    description: str | None
    delivery_count: int
    enqueued_at: datetime | None
    body: bytes


class DeadLetterView(Protocol):
    """The dead-letter sub-queue, for the tooling of `sheaf.services.dlq`."""

    async def peek_dead_letters(
        self, limit: int, from_sequence_number: int = 0
    ) -> list[DeadLetter]:
        """Up to `limit` dead-lettered messages in sequence order, without locking any."""
        ...

    async def take_dead_letters(
        self,
        handle: Callable[[DeadLetter], Awaitable[bool]],
        *,
        enough: Callable[[], bool],
        limit: int,
        max_wait: float = 1.0,
    ) -> None:
        """Receive dead-lettered messages in peek-lock and let `handle` decide each one.

        `handle` returning True removes the message from the sub-queue; False keeps it
        locked until the pass ends, so the same pass does not receive it again, and then
        gives it back. The pass ends when `enough()`, after `limit` messages, or when the
        sub-queue has nothing more to give.
        """
        ...


class WorkQueue(MessageBus, DeadLetterView, Protocol):
    """The whole queue: send and schedule, receive and settle, and the dead letters."""

    def deliveries(
        self, prefetch: int, lock_renewal_seconds: float
    ) -> AbstractAsyncContextManager[Receiver]:
        """A peek-lock receiver, open for the `async with` block.

        Deliveries are renewed for at most `lock_renewal_seconds` after they arrive.
        Raises `QueueUnavailable` when the queue cannot be reached.
        """
        ...

    async def waiting(self, limit: int) -> set[str] | None:
        """Ids of the documents that have a wake-up in the queue — ready, scheduled or
        locked by a receiver — found by peeking at up to `limit` messages (nothing is
        locked). None when the queue holds more than that, so what is missing cannot be
        told. Bodies that are not wake-ups are skipped. Raises `QueueUnavailable`.
        """
        ...


class Extractor(Protocol):
    def extract(self, path: Path, content_type: str) -> Iterable[Page]:
        """Pages of text, in order; a generator that yields each page as it is read keeps
        memory bounded (a long page may come in pieces: see `Page`). Raises a
        `PermanentError` subclass, at the call or while iterating, for documents that
        never will be read. A caller that stops early calls the iterator's `close()`, if
        it has one, from one thread at a time."""
        ...


@runtime_checkable
class ChunkingExtractor(Extractor, Protocol):
    """An extractor that can also chunk where it reads: what
    `DocumentChunks(self.extract(path, content_type), chunking, on_page).batches()` gives,
    made beside the parser (an extraction child), so that chunking runs in parallel with
    the worker's embedding and writing instead of taking its time."""

    def extract_chunks(
        self, path: Path, content_type: str, chunking: Chunking, on_page: Callable[[], None]
    ) -> Iterator[ChunkBatch]: ...


class Embedder(Protocol):
    model: str
    dimensions: int

    async def embed(self, texts: Sequence[str]) -> list[tuple[float, ...]]:
        """Unit-length vectors, one per text, in order."""
        ...

    async def close(self) -> None: ...


class KeyStore(Protocol):
    """API keys (`sheaf.auth.keys`): only their SHA-256 is ever stored."""

    async def create_key(self, key: NewApiKey) -> ApiKey: ...

    async def find_key(self, key_id: str) -> StoredKey | None:
        """The key and its hash, revoked or not; None when no key has this id."""
        ...

    async def list_keys(self) -> list[ApiKey]:
        """Every key, revoked ones too, oldest first."""
        ...

    async def revoke_key(self, key_id: str) -> ApiKey | None:
        """Revoke for good (idempotent: the first revocation time stays); None if unknown."""
        ...
