"""Initial schema: documents, attempts, chunks; the lease procedures on PostgreSQL and SQL Server.

Revision ID: 0001
Revises:
Create Date: 2024-11-24

The tables mirror `sheaf/adapters/sql/schema.py` as it was at this revision (a test
compares them). The procedures are this revision's own copies in
`sql/migrations/snapshots/0001/<postgres|mssql>/` (`sheaf.adapters.sql.snapshots`), one
`CREATE OR REPLACE FUNCTION` (PostgreSQL) or `CREATE OR ALTER PROCEDURE` (SQL Server)
each; a later change to a procedure's contract ships as a new, versioned procedure.

SQL Server differs in types and indexes only, never in column names:
- strings are NVARCHAR, so any Unicode text survives whatever the database's collation;
  `collection` and `model` are binary-collated, so that, as on SQLite and PostgreSQL,
  collections or models whose names differ only in case stay apart;
- `ready_at = COALESCE(not_before, created_at)` is a persisted computed column with an
  index in that order, so the claim's "oldest first" TOP is a seek that stops after the
  rows it takes (a sort would read, and lock, every ready row first);
- the live-content unique index is filtered as on the other two.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sheaf.adapters.sql.snapshots import drop_procedures, install_snapshots, snapshot_names

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

LIVE = sa.text("status <> 'deleted'")
TIMESTAMP = sa.DateTime(timezone=True)
MSSQL = "mssql"
CASE_SENSITIVE = "Latin1_General_100_BIN2"


def _string(length: int, *, case_sensitive: bool = False) -> sa.types.TypeEngine[str]:
    """VARCHAR(length) on SQLite and PostgreSQL, NVARCHAR(length) on SQL Server."""
    collation = CASE_SENSITIVE if case_sensitive else None
    return sa.String(length).with_variant(sa.NVARCHAR(length, collation=collation), MSSQL)


TEXT = sa.Text().with_variant(sa.UnicodeText(), MSSQL)  # NVARCHAR(max) on SQL Server


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == MSSQL:
        _require_dbo_schema()
    _create_documents(bind.dialect.name)
    _create_attempts()
    _create_chunks()
    install_snapshots(bind, revision)


def downgrade() -> None:
    bind = op.get_bind()
    drop_procedures(bind, *snapshot_names(revision, bind.dialect.name))
    op.drop_table("chunks")
    op.drop_table("attempts")
    op.drop_table("documents")


def _require_dbo_schema() -> None:
    """The procedures name `dbo.documents`; tables created elsewhere would not be found."""
    schema = op.get_bind().exec_driver_sql("SELECT SCHEMA_NAME()").scalar()
    if schema != "dbo":
        raise RuntimeError(
            f"Sheaf's tables and procedures live in the dbo schema, but this login's default "
            f"schema is {schema!r}: migrate as a user whose default schema is dbo"
        )


def _create_documents(dialect: str) -> None:
    ready_at = []
    if dialect == MSSQL:
        ready = sa.Computed("COALESCE(not_before, created_at)", persisted=True)
        ready_at.append(sa.Column("ready_at", TIMESTAMP, ready))
    op.create_table(
        "documents",
        sa.Column("id", _string(36), primary_key=True),
        sa.Column("collection", _string(128, case_sensitive=True), nullable=False),
        sa.Column("filename", _string(512), nullable=False),
        sa.Column("content_type", _string(128), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", _string(64), nullable=False),
        sa.Column("blob_key", _string(256), nullable=False),
        sa.Column("status", _string(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("lease_owner", _string(256)),
        sa.Column("lease_token", _string(36)),
        sa.Column("lease_expires_at", TIMESTAMP),
        sa.Column("not_before", TIMESTAMP),
        sa.Column("dispatch_seq", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_dispatched_at", TIMESTAMP),
        sa.Column("current_stage", _string(32)),
        sa.Column("last_error", TEXT),
        sa.Column("error_code", _string(64)),
        sa.Column("error_kind", _string(16)),
        sa.Column("chunk_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("page_count", sa.Integer),
        sa.Column("chunks_token", _string(36)),
        sa.Column("embedding_model", _string(128, case_sensitive=True)),
        sa.Column("embedding_dimensions", sa.Integer),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("started_at", TIMESTAMP),
        sa.Column("completed_at", TIMESTAMP),
        sa.Column("deleted_at", TIMESTAMP),
        sa.Column("purged_at", TIMESTAMP),
        *ready_at,
    )
    op.create_index(
        "uq_documents_collection_sha256_live",
        "documents",
        ["collection", "sha256"],
        unique=True,
        sqlite_where=LIVE,
        postgresql_where=LIVE,
        mssql_where=LIVE,
    )
    for name, columns in (
        ("ix_documents_status_not_before", ["status", "not_before", "created_at"]),
        ("ix_documents_status_lease_expires", ["status", "lease_expires_at"]),
        ("ix_documents_status_last_dispatched", ["status", "last_dispatched_at"]),
        ("ix_documents_collection_created", ["collection", "created_at", "id"]),
        ("ix_documents_blob_key", ["blob_key"]),
    ):
        op.create_index(name, "documents", columns)
    if dialect == MSSQL:  # the claim's seek, in the claim's order (see the module docstring)
        op.create_index("ix_documents_ready", "documents", ["status", "ready_at", "created_at"])


def _create_attempts() -> None:
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("document_id", _string(36), sa.ForeignKey("documents.id"), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("lease_token", _string(36), nullable=False, unique=True),
        sa.Column("worker_id", _string(256), nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("ended_at", TIMESTAMP),
        sa.Column("outcome", _string(16), nullable=False),
        sa.Column("stage", _string(32)),
        sa.Column("error_code", _string(64)),
        sa.Column("error", TEXT),
        sa.Column("stage_seconds", TEXT),
    )
    op.create_index("ix_attempts_document", "attempts", ["document_id", "id"])


def _create_chunks() -> None:
    op.create_table(
        "chunks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("document_id", _string(36), sa.ForeignKey("documents.id"), nullable=False),
        sa.Column("collection", _string(128, case_sensitive=True), nullable=False),
        sa.Column("lease_token", _string(36), nullable=False),
        sa.Column("ordinal", sa.Integer, nullable=False),
        sa.Column("page_start", sa.Integer, nullable=False),
        sa.Column("page_end", sa.Integer, nullable=False),
        sa.Column("text", TEXT, nullable=False),
        sa.Column("model", _string(128, case_sensitive=True), nullable=False),
        sa.Column("dimensions", sa.Integer, nullable=False),
        sa.Column("embedding", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_chunks_document_token", "chunks", ["document_id", "lease_token", "ordinal"])
    op.create_index("ix_chunks_collection_model", "chunks", ["collection", "model", "id"])
