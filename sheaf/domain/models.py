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
    """Text of one page (1-based). Formats without pages yield a single page 1."""

    number: int
    text: str


@dataclass(frozen=True, slots=True)
class Chunk:
    ordinal: int  # 0-based position within the document
    text: str
    page_start: int
    page_end: int


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
    document_id: str
    filename: str
    chunk_ordinal: int
    page_start: int
    page_end: int
    score: float
    text: str


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
