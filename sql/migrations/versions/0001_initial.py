"""Initial schema: documents, attempts, chunks; on PostgreSQL also the lease functions.

Revision ID: 0001
Revises:
Create Date: 2024-11-24

The tables mirror `sheaf/adapters/sql/schema.py` as it was at this revision (a test
compares them). Each file of `sql/procedures/postgres/` is one `CREATE OR REPLACE
FUNCTION`; a later change to a function's contract ships as a new, versioned function.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

PROCEDURES = Path(__file__).resolve().parents[2] / "procedures" / "postgres"
LIVE = sa.text("status <> 'deleted'")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    _create_documents()
    _create_attempts()
    _create_chunks()
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for path in sorted(PROCEDURES.glob("*.sql")):
            bind.exec_driver_sql(path.read_text(encoding="utf-8"))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for path in sorted(PROCEDURES.glob("*.sql")):
            bind.exec_driver_sql(f"DROP FUNCTION IF EXISTS {path.stem}")
    op.drop_table("chunks")
    op.drop_table("attempts")
    op.drop_table("documents")


def _create_documents() -> None:
    op.create_table(
        "documents",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("collection", sa.String(128), nullable=False),
        sa.Column("filename", sa.String(512), nullable=False),
        sa.Column("content_type", sa.String(128), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("blob_key", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("lease_owner", sa.String(256)),
        sa.Column("lease_token", sa.String(36)),
        sa.Column("lease_expires_at", TIMESTAMP),
        sa.Column("not_before", TIMESTAMP),
        sa.Column("dispatch_seq", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_dispatched_at", TIMESTAMP),
        sa.Column("current_stage", sa.String(32)),
        sa.Column("last_error", sa.Text),
        sa.Column("error_code", sa.String(64)),
        sa.Column("error_kind", sa.String(16)),
        sa.Column("chunk_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("page_count", sa.Integer),
        sa.Column("chunks_token", sa.String(36)),
        sa.Column("embedding_model", sa.String(128)),
        sa.Column("embedding_dimensions", sa.Integer),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("started_at", TIMESTAMP),
        sa.Column("completed_at", TIMESTAMP),
        sa.Column("deleted_at", TIMESTAMP),
        sa.Column("purged_at", TIMESTAMP),
    )
    op.create_index(
        "uq_documents_collection_sha256_live",
        "documents",
        ["collection", "sha256"],
        unique=True,
        sqlite_where=LIVE,
        postgresql_where=LIVE,
    )
    for name, columns in (
        ("ix_documents_status_not_before", ["status", "not_before", "created_at"]),
        ("ix_documents_status_lease_expires", ["status", "lease_expires_at"]),
        ("ix_documents_status_last_dispatched", ["status", "last_dispatched_at"]),
        ("ix_documents_collection_created", ["collection", "created_at", "id"]),
        ("ix_documents_blob_key", ["blob_key"]),
    ):
        op.create_index(name, "documents", columns)


def _create_attempts() -> None:
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("document_id", sa.String(36), sa.ForeignKey("documents.id"), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("lease_token", sa.String(36), nullable=False, unique=True),
        sa.Column("worker_id", sa.String(256), nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("ended_at", TIMESTAMP),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(32)),
        sa.Column("error_code", sa.String(64)),
        sa.Column("error", sa.Text),
        sa.Column("stage_seconds", sa.Text),
    )
    op.create_index("ix_attempts_document", "attempts", ["document_id", "id"])


def _create_chunks() -> None:
    op.create_table(
        "chunks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("document_id", sa.String(36), sa.ForeignKey("documents.id"), nullable=False),
        sa.Column("collection", sa.String(128), nullable=False),
        sa.Column("lease_token", sa.String(36), nullable=False),
        sa.Column("ordinal", sa.Integer, nullable=False),
        sa.Column("page_start", sa.Integer, nullable=False),
        sa.Column("page_end", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("dimensions", sa.Integer, nullable=False),
        sa.Column("embedding", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_chunks_document_token", "chunks", ["document_id", "lease_token", "ordinal"])
    op.create_index("ix_chunks_collection_model", "chunks", ["collection", "model", "id"])
