"""The relational schema, as SQLAlchemy Core tables shared by every SQL backend.

Migrations under `sql/migrations/` create exactly these tables; a test compares them.
Vectors are stored portably as little-endian float32 bytes (`LargeBinary`). SQL Server's
own column types, collations, clustering and INCLUDEs are in the migrations (0001, 0007);
the `mssql_include` options below only record them here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Computed,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.types import TypeDecorator

metadata = MetaData()
# attempts and chunks get a new row per attempt: 64-bit ids (migration 0007). SQLite's
# INTEGER PRIMARY KEY is the 64-bit rowid already, and only that spelling autoincrements.
ROW_ID = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        # A str is a SQLite value written by SQL rather than through this type.
        moment: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)


LIVE = text("status <> 'deleted'")

documents = Table(
    "documents",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("collection", String(128), nullable=False),
    Column("filename", String(512), nullable=False),
    Column("content_type", String(128), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("blob_key", String(256), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("max_attempts", Integer, nullable=False),
    Column("lease_owner", String(256)),
    Column("lease_token", String(36)),
    Column("lease_expires_at", UTCDateTime),
    Column("not_before", UTCDateTime),
    Column("dispatch_seq", Integer, nullable=False, server_default="0"),
    Column("last_dispatched_at", UTCDateTime),
    Column("current_stage", String(32)),
    Column("last_error", Text),
    Column("error_code", String(64)),
    Column("error_kind", String(16)),
    Column("chunk_count", Integer, nullable=False, server_default="0"),
    Column("page_count", Integer),
    Column("chunks_token", String(36)),  # the lease whose chunks are the live ones
    Column("embedding_model", String(128)),
    Column("embedding_dimensions", Integer),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("completed_at", UTCDateTime),
    Column("deleted_at", UTCDateTime),
    Column("purged_at", UTCDateTime),
    # One live document per content per collection; tombstones release their slot.
    Index(
        "uq_documents_collection_sha256_live",
        "collection",
        "sha256",
        unique=True,
        sqlite_where=LIVE,
        postgresql_where=LIVE,
        mssql_where=LIVE,
    ),
    # The duplicate check at upload, whatever the status binding (migration 0007): no
    # planner can match a bound `status <> ?` to the filtered index above.
    Index("ix_documents_collection_sha256", "collection", "sha256", mssql_include=["status"]),
    # Claim scan: ready queued rows, oldest first.
    Index("ix_documents_status_not_before", "status", "not_before", "created_at"),
    # Expiry scan: processing rows by lease expiry.
    Index(
        "ix_documents_status_lease_expires",
        "status",
        "lease_expires_at",
        mssql_include=["lease_token", "attempts", "max_attempts"],
    ),
    # Reconcile scan: queued rows by last dispatch.
    Index(
        "ix_documents_status_last_dispatched",
        "status",
        "last_dispatched_at",
        mssql_include=["not_before", "lease_token"],
    ),
    # Listing a collection newest first.
    Index("ix_documents_collection_created", "collection", "created_at", "id"),
    Index("ix_documents_blob_key", "blob_key"),
)

# The claim's order among queued rows only (migration 0004; PostgreSQL and SQLite — SQL
# Server has its persisted ready_at column and ix_documents_ready instead): the claim's
# LIMIT reads the first rows of this index instead of sorting every queued row.
QUEUED = text("status = 'queued'")
Index(
    "ix_documents_queued_ready",
    func.coalesce(documents.c.not_before, documents.c.created_at),
    documents.c.created_at,
    sqlite_where=QUEUED,
    postgresql_where=QUEUED,
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("document_id", String(36), ForeignKey("documents.id"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("lease_token", String(36), nullable=False, unique=True),
    Column("worker_id", String(256), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime),
    Column("outcome", String(16), nullable=False),
    Column("stage", String(32)),
    Column("error_code", String(64)),
    Column("error", Text),
    Column("stage_seconds", Text),  # JSON object {stage: seconds}
    Index("ix_attempts_document", "document_id", "id"),
    # The dashboard's window: attempts that ended in the last minutes (migration 0010).
    Index("ix_attempts_ended_at", "ended_at"),
)

chunks = Table(
    "chunks",
    metadata,
    Column("id", ROW_ID, primary_key=True, autoincrement=True),
    Column("document_id", String(36), ForeignKey("documents.id"), nullable=False),
    Column("collection", String(128), nullable=False),
    Column("lease_token", String(36), nullable=False),
    Column("ordinal", Integer, nullable=False),
    Column("page_start", Integer, nullable=False),
    Column("page_end", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("model", String(128), nullable=False),
    Column("dimensions", Integer, nullable=False),
    Column("embedding", LargeBinary, nullable=False),
    Column("content_sha256", String(64)),  # the embedding cache key (migration 0002)
    Index("ix_chunks_document_token", "document_id", "lease_token", "ordinal"),
    # Search reads a collection's chunks of one model in id order, in bounded batches.
    Index("ix_chunks_collection_model", "collection", "model", "id"),
    # Embedding cache: a chunk text already embedded in this collection by this model,
    # looked up by the hash first: each key of the IN list is one seek (migration 0007).
    Index("ix_chunks_content", "content_sha256", "collection", "model"),
)

# The keyword index (migration 0008) differs per backend; what exists on one backend only
# says so in `info["dialects"]` (the migration test compares each backend with its part).
# SQLite: the FTS5 table `chunks_fts` (external content over `chunks`, kept by triggers),
# which is no ordinary table and so not described here. SQL Server: a full-text index on
# `chunks.text`, where the server has Full-Text Search. PostgreSQL:
POSTGRES_ONLY = {"dialects": ("postgresql",)}
chunks.append_column(
    Column(
        "text_search",
        TSVECTOR,
        Computed("to_tsvector('english'::regconfig, text)", persisted=True),
        info=POSTGRES_ONLY,
    )
)
Index("ix_chunks_text_search", chunks.c.text_search, postgresql_using="gin", info=POSTGRES_ONLY)


def on_dialect(item: Column[Any] | Index, dialect: str) -> bool:
    """Whether a column or index of this metadata exists on `dialect`."""
    dialects: tuple[str, ...] | None = item.info.get("dialects")
    return dialects is None or dialect in dialects


# API keys (migration 0003): only the SHA-256 of a key is stored (see sheaf.auth.keys).
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("scope", String(16), nullable=False),
    Column("collections", Text, nullable=False),  # comma-separated names, or "*"
    Column("secret_sha256", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
)
