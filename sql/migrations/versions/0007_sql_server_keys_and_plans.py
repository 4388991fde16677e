"""SQL Server as a production backend: exact keys, wide ids, seekable plans; lookup indexes.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06

Every backend (docs/leases.md, "SQL Server on a real server"):
- `ix_documents_collection_sha256 (collection, sha256)`: the duplicate check at upload
  filters `status <> ?` with the status bound as a parameter, which no planner can match
  to the filtered unique index's `status <> 'deleted'`; this index serves it whatever the
  binding (SQL Server INCLUDEs `status`, so the check reads the index alone).
- `ix_chunks_content (content_sha256, collection, model)` replaces
  `ix_chunks_collection_model_content`: the embedding-cache lookup seeks each hash of its
  IN list directly, however many chunks one collection and model hold.
- `attempts.id` and `chunks.id` become BIGINT (SQLite's INTEGER keys already are 64-bit):
  chunks are rewritten on every attempt, and an INT identity runs out.

SQL Server only (one table rebuild, under the migration's transaction):
- ids, lease tokens and content hashes (`documents.id`, `sha256`, `lease_token`,
  `chunks_token`; `attempts.document_id`, `lease_token`; `chunks.document_id`,
  `lease_token`, `content_sha256`) become NVARCHAR with the binary collation
  Latin1_General_100_BIN2, so `=` on them is exact (it was case-insensitive), and
  `content_sha256` becomes NVARCHAR like every string the adapter binds (it was VARCHAR:
  an NVARCHAR bind converted the column and lost the seek);
- the keys get names (0001 let SQL Server generate them), and `chunks` is clustered by
  `(document_id, id)`: a document's chunks are contiguous, so deleting them locks few
  pages and rows, never the table;
- the claim, expiry and reconcile indexes INCLUDE the columns their predicates read;
- the lease procedures that claim or delete chunks are re-installed from
  `snapshots/0007/mssql/`: READCOMMITTEDLOCK, forced seeks on those indexes, OUTPUT INTO
  table variables, chunk deletes of at most 1,000 rows per statement; and
  `complete_document_lease` is new: a completion in one EXEC, as on PostgreSQL.

The downgrade restores 0006's indexes and procedures; on SQL Server the wider types, the
binary collation and the clustering stay (0006's code works on them unchanged).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sheaf.adapters.sql.snapshots import drop_procedures, install_snapshots

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

MSSQL = "mssql"
BIN2 = "COLLATE Latin1_General_100_BIN2"
OLD_CONTENT_INDEX = "ix_chunks_collection_model_content"

# SQL Server: the keys 0001 created carry generated names; drop them by looking them up.
MSSQL_DROP_KEYS = """
DECLARE @drop NVARCHAR(MAX) = N'';
SELECT @drop = @drop + N'ALTER TABLE dbo.' + QUOTENAME(OBJECT_NAME(fk.parent_object_id))
    + N' DROP CONSTRAINT ' + QUOTENAME(fk.name) + N'; '
FROM sys.foreign_keys AS fk
WHERE fk.referenced_object_id = OBJECT_ID(N'dbo.documents');
EXEC sys.sp_executesql @drop;
SET @drop = N'';
SELECT @drop = @drop + N'ALTER TABLE dbo.' + QUOTENAME(OBJECT_NAME(kc.parent_object_id))
    + N' DROP CONSTRAINT ' + QUOTENAME(kc.name) + N'; '
FROM sys.key_constraints AS kc
WHERE kc.parent_object_id IN (
    OBJECT_ID(N'dbo.documents'), OBJECT_ID(N'dbo.attempts'), OBJECT_ID(N'dbo.chunks')
);
EXEC sys.sp_executesql @drop;
"""
# Every index on a column whose type changes, rebuilt below (some with INCLUDEs).
MSSQL_DROP_INDEXES = [
    f"DROP INDEX {name} ON dbo.{table}"
    for table, name in (
        ("documents", "uq_documents_collection_sha256_live"),
        ("documents", "ix_documents_ready"),
        ("documents", "ix_documents_status_lease_expires"),
        ("documents", "ix_documents_status_last_dispatched"),
        ("documents", "ix_documents_collection_created"),
        ("attempts", "ix_attempts_document"),
        ("chunks", "ix_chunks_document_token"),
        ("chunks", "ix_chunks_collection_model"),
        ("chunks", OLD_CONTENT_INDEX),
    )
]
MSSQL_COLUMNS = [
    f"ALTER TABLE dbo.{table} ALTER COLUMN {column} {definition}"
    for table, column, definition in (
        ("documents", "id", f"NVARCHAR(36) {BIN2} NOT NULL"),
        ("documents", "sha256", f"NVARCHAR(64) {BIN2} NOT NULL"),
        ("documents", "lease_token", f"NVARCHAR(36) {BIN2} NULL"),
        ("documents", "chunks_token", f"NVARCHAR(36) {BIN2} NULL"),
        ("attempts", "id", "BIGINT NOT NULL"),
        ("attempts", "document_id", f"NVARCHAR(36) {BIN2} NOT NULL"),
        ("attempts", "lease_token", f"NVARCHAR(36) {BIN2} NOT NULL"),
        ("chunks", "id", "BIGINT NOT NULL"),
        ("chunks", "document_id", f"NVARCHAR(36) {BIN2} NOT NULL"),
        ("chunks", "lease_token", f"NVARCHAR(36) {BIN2} NOT NULL"),
        ("chunks", "content_sha256", f"NVARCHAR(64) {BIN2} NULL"),
    )
]
MSSQL_KEYS_AND_INDEXES = [
    "ALTER TABLE dbo.documents ADD CONSTRAINT pk_documents PRIMARY KEY CLUSTERED (id)",
    "ALTER TABLE dbo.attempts ADD CONSTRAINT pk_attempts PRIMARY KEY CLUSTERED (id)",
    "ALTER TABLE dbo.attempts ADD CONSTRAINT uq_attempts_lease_token UNIQUE (lease_token)",
    "ALTER TABLE dbo.chunks ADD CONSTRAINT pk_chunks PRIMARY KEY NONCLUSTERED (id)",
    "CREATE UNIQUE CLUSTERED INDEX cx_chunks_document ON dbo.chunks (document_id, id)",
    "ALTER TABLE dbo.attempts ADD CONSTRAINT fk_attempts_document "
    "FOREIGN KEY (document_id) REFERENCES dbo.documents (id)",
    "ALTER TABLE dbo.chunks ADD CONSTRAINT fk_chunks_document "
    "FOREIGN KEY (document_id) REFERENCES dbo.documents (id)",
    "CREATE UNIQUE INDEX uq_documents_collection_sha256_live ON dbo.documents "
    "(collection, sha256) WHERE status <> 'deleted'",
    "CREATE INDEX ix_documents_collection_sha256 ON dbo.documents (collection, sha256) "
    "INCLUDE (status)",
    "CREATE INDEX ix_documents_ready ON dbo.documents (status, ready_at, created_at) "
    "INCLUDE (not_before, lease_token, attempts, max_attempts)",
    "CREATE INDEX ix_documents_status_lease_expires ON dbo.documents "
    "(status, lease_expires_at) INCLUDE (lease_token, attempts, max_attempts)",
    "CREATE INDEX ix_documents_status_last_dispatched ON dbo.documents "
    "(status, last_dispatched_at) INCLUDE (not_before, lease_token)",
    "CREATE INDEX ix_documents_collection_created ON dbo.documents (collection, created_at, id)",
    "CREATE INDEX ix_attempts_document ON dbo.attempts (document_id, id)",
    "CREATE INDEX ix_chunks_document_token ON dbo.chunks (document_id, lease_token, ordinal)",
    "CREATE INDEX ix_chunks_collection_model ON dbo.chunks (collection, model, id)",
    "CREATE INDEX ix_chunks_content ON dbo.chunks (content_sha256, collection, model)",
]
MSSQL_UPGRADE = [MSSQL_DROP_KEYS, *MSSQL_DROP_INDEXES, *MSSQL_COLUMNS, *MSSQL_KEYS_AND_INDEXES]
MSSQL_DOWNGRADE = [
    "DROP INDEX ix_documents_collection_sha256 ON dbo.documents",
    "DROP INDEX ix_chunks_content ON dbo.chunks",
    f"CREATE INDEX {OLD_CONTENT_INDEX} ON dbo.chunks (collection, model, content_sha256)",
]
NEW_PROCEDURES = ("complete_document_lease",)  # SQL Server: completion in one EXEC
# What 0007 re-installs on SQL Server, and where each one's previous text lives.
PREVIOUS_SNAPSHOT = {
    "acquire_document_lease": "0001",
    "release_document_lease": "0001",
    "claim_queued_documents": "0001",
    "claim_queued_documents_v2": "0004",
    "claim_stale_dispatches": "0001",
    "find_expired_leases": "0001",
}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == MSSQL:
        for statement in MSSQL_UPGRADE:
            bind.exec_driver_sql(statement)
        install_snapshots(bind, revision)
        return
    op.create_index("ix_documents_collection_sha256", "documents", ["collection", "sha256"])
    op.drop_index(OLD_CONTENT_INDEX, table_name="chunks")
    op.create_index("ix_chunks_content", "chunks", ["content_sha256", "collection", "model"])
    if bind.dialect.name == "postgresql":
        for table in ("attempts", "chunks"):
            op.alter_column(table, "id", type_=sa.BigInteger(), existing_type=sa.Integer())
            bind.exec_driver_sql(f"ALTER SEQUENCE {table}_id_seq AS BIGINT")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == MSSQL:
        for statement in MSSQL_DOWNGRADE:
            bind.exec_driver_sql(statement)
        drop_procedures(bind, *NEW_PROCEDURES)
        for name, previous in PREVIOUS_SNAPSHOT.items():
            install_snapshots(bind, previous, name)
        return
    if bind.dialect.name == "postgresql":
        for table in ("attempts", "chunks"):
            bind.exec_driver_sql(f"ALTER SEQUENCE {table}_id_seq AS INTEGER")
            op.alter_column(table, "id", type_=sa.Integer(), existing_type=sa.BigInteger())
    op.drop_index("ix_chunks_content", table_name="chunks")
    op.create_index(OLD_CONTENT_INDEX, "chunks", ["collection", "model", "content_sha256"])
    op.drop_index("ix_documents_collection_sha256", table_name="documents")
