"""Frozen value objects shared by every layer.

Nothing here does I/O or imports an SDK. Times are timezone-aware UTC datetimes that came
from the database clock; adapters normalise them before they reach this module's types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Status(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    DELETED = "deleted"


TERMINAL_STATUSES = frozenset({Status.COMPLETED, Status.FAILED, Status.DELETED})


class ErrorKind(StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"


class AcquireOutcome(StrEnum):
    ACQUIRED = "acquired"
    NOT_READY = "not_ready"  # queued, but not_before is in the future
    HELD = "held"  # processing under a live lease, or no attempts left to spend
    TERMINAL = "terminal"  # completed, failed or deleted
    MISSING = "missing"  # no such document ever existed


class ReleaseOutcome(StrEnum):
    SUCCESS = "success"
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    INTERRUPTED = "interrupted"  # shutdown / scale-in: does not consume an attempt


class AttemptOutcome(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    INTERRUPTED = "interrupted"
    EXPIRED = "expired"  # the worker vanished; the sweeper took the lease back
    SUPERSEDED = "superseded"  # the document was deleted or reset under the lease


class Processed(StrEnum):
    """How one attempt under a lease ended (an interrupted one raises `CancelledError`)."""

    COMPLETED = "completed"
    TRANSIENT = "transient"  # released to retry later, or failed: no attempts left
    PERMANENT = "permanent"  # released as failed
    LEASE_LOST = "lease_lost"  # someone else holds the document now; nothing was released


class ContentType(StrEnum):
    PDF = "application/pdf"
    DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    TEXT = "text/plain"
    MARKDOWN = "text/markdown"
    HTML = "text/html"
    PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
    XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    PNG = "image/png"
    JPEG = "image/jpeg"
    TIFF = "image/tiff"


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why an attempt failed: a stable machine `code` and a human `message`."""

    code: str
    message: str
    kind: ErrorKind = ErrorKind.PERMANENT


@dataclass(frozen=True, slots=True)
class Lease:
    """Proof that one worker owns one document until `expires_at` (database clock).

    `token` is the fencing token: every write made under the lease carries it, and the
    database rejects writes whose token no longer matches the row.
    """

    document_id: str
    collection: str
    token: str
    worker_id: str
    expires_at: datetime
    attempt: int  # the row's `attempts` after this acquisition (1 = first attempt)
    dispatch_seq: int
    blob_key: str
    content_type: str


@dataclass(frozen=True, slots=True)
class AcquireResult:
    outcome: AcquireOutcome
    lease: Lease | None = None
    not_before: datetime | None = None  # set for NOT_READY
    dispatch_seq: int | None = None  # None only for MISSING
    status: Status | None = None  # the row's status when not acquired


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    applied: bool  # False: the token was stale, nothing changed
    status: Status | None = None  # the row's status after the call
    not_before: datetime | None = None
    dispatch_seq: int | None = None


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What `process_document` did, and what the database said when it was released.

    `release` is None when nothing was released (completed, lease lost) or the release
    itself failed (then the lease expires and the sweeper recovers the document).
    """

    outcome: Processed
    error: ErrorInfo | None = None
    release: ReleaseResult | None = None

    @property
    def label(self) -> str:
        """`completed`, `lease_lost`, or `<kind>:<error code>` such as `permanent:encrypted`."""
        if self.error is None:
            return self.outcome.value
        return f"{self.outcome.value}:{self.error.code}"


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A wake-up: a document that needs a message, or what a received message said.

    For a send, `dispatch_seq` was already bumped and `not_before` (if any) is when the
    message is scheduled for; a decoded message carries the defaults for both.
    """

    document_id: str
    collection: str
    dispatch_seq: int
    status: Status = Status.QUEUED
    not_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class NewDocument:
    id: str
    collection: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    blob_key: str
    max_attempts: int


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int
    worker_id: str
    lease_token: str
    started_at: datetime
    ended_at: datetime | None
    outcome: AttemptOutcome
    error_code: str | None
    error: str | None
    stage: str | None  # last stage the worker reported
    stage_seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    collection: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    blob_key: str
    status: Status
    attempts: int
    max_attempts: int
    dispatch_seq: int
    current_stage: str | None
    last_error: str | None
    error_code: str | None
    error_kind: ErrorKind | None
    chunk_count: int
    page_count: int | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    not_before: datetime | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    deleted_at: datetime | None
    history: tuple[Attempt, ...] = ()


@dataclass(frozen=True, slots=True)
class Page:
    """Text of one page (1-based). Formats without pages yield a single page 1.

    A long page may come as several `Page`s in a row with the same number, cut anywhere
    (even inside a word): its pieces, which chunking joins again (`sheaf.domain.chunking`).
    """

    number: int
    text: str


@dataclass(frozen=True, slots=True)
class Chunk:
    ordinal: int  # 0-based position within the document
    text: str
    page_start: int
    page_end: int


@dataclass(frozen=True, slots=True)
class Chunking:
    """How a document becomes chunks (`sheaf.domain.chunking.DocumentChunks`): chunk size
    and overlap in characters, chunks per batch, and the most pages a document may have."""

    size: int
    overlap: int
    batch: int
    max_pages: int


@dataclass(frozen=True, slots=True)
class ChunkBatch:
    """The next chunks of a document, with the pages read so far and the seconds spent
    waiting on the parser so far (the rest of the reading time is chunking)."""

    chunks: list[Chunk]
    pages: int
    extract_seconds: float


@dataclass(frozen=True, slots=True)
class EmbeddedChunk:
    chunk: Chunk
    vector: tuple[float, ...]
    model: str


@dataclass(frozen=True, slots=True)
class Completion:
    """What the one completion transaction records besides the chunks already written."""

    page_count: int
    chunk_count: int
    stage_seconds: dict[str, float]
    embedding_model: str
    embedding_dimensions: int


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One chunk found by a search. `score` is the ranking's own (cosine for vector,
    BM25 for keyword, the fused score for hybrid); `rankings` says which rankings found
    it and at which 1-based rank, e.g. {"keyword": 3, "vector": 1}."""

    document_id: str
    filename: str
    chunk_ordinal: int
    page_start: int
    page_end: int
    score: float
    text: str
    rankings: dict[str, int] = field(default_factory=dict)


class SearchMode(StrEnum):
    HYBRID = "hybrid"  # keyword and vector rankings fused (the default)
    VECTOR = "vector"
    KEYWORD = "keyword"


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """Which documents a search may return; every condition given must hold.

    `filename` is a pattern matched against the whole file name, case-insensitively,
    where `*` is any run of characters and `?` any one character. The upload-time bounds
    (`documents.created_at`) are both inclusive.
    """

    document_ids: tuple[str, ...] = ()
    filename: str | None = None
    uploaded_from: datetime | None = None
    uploaded_to: datetime | None = None

    @property
    def empty(self) -> bool:
        return self == NO_FILTER


NO_FILTER = SearchFilter()


@dataclass(frozen=True, slots=True)
class Stats:
    counts: dict[str, int]
    oldest_ready_age_seconds: float | None
    leases_held: int


@dataclass(frozen=True, slots=True)
class Cleanup:
    """A tombstoned document whose blob and chunks still need removing."""

    document_id: str
    blob_key: str


@dataclass(frozen=True, slots=True)
class EndedAttempt:
    """An attempt that has ended, as the operator's dashboard reads the history."""

    document_id: str
    number: int
    max_attempts: int  # the document's: a transient failure on the last attempt failed it
    worker_id: str
    started_at: datetime
    ended_at: datetime
    outcome: AttemptOutcome
    error_code: str | None
    stage_seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InFlight:
    """A document in `processing` and the attempt working on it."""

    document_id: str
    collection: str
    filename: str
    worker_id: str
    stage: str | None
    started_at: datetime  # this attempt's start
    heartbeat_at: datetime  # the last lease acquisition or renewal (the row's updated_at)
    lease_expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class Activity:
    """What the workers did lately: `DocumentRepository.activity`."""

    now: datetime  # the database clock when it was read
    ended: tuple[EndedAttempt, ...]  # newest first
    in_flight: tuple[InFlight, ...]  # oldest attempt first
    complete: bool  # False when `limit` cut off older ended attempts
