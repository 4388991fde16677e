"""claim_queued_documents_v2 (a ready-for threshold) and the queued rows' claim-order index.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24

- `claim_queued_documents_v2(worker, lease_seconds, limit, ready_for_seconds)` takes only
  rows ready for at least `ready_for_seconds`: the slow safety-net poll of Service Bus
  workers (ARCHITECTURE.md §4). v1 stays installed, so workers of the previous release keep
  working during a rolling upgrade; a later revision drops it.
- PostgreSQL and SQLite get `ix_documents_queued_ready`, a partial index on
  `(coalesce(not_before, created_at), created_at) WHERE status = 'queued'` — the claim's
  ORDER BY — so a claim reads the first rows of the index instead of sorting every queued
  row (docs/benchmarks.md measured the sort). SQL Server has had the equivalent
  (`ready_at`, `ix_documents_ready`) since 0001.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sheaf.adapters.sql.snapshots import drop_procedures, install_snapshots

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

NEW_PROCEDURES = ("claim_queued_documents_v2",)  # snapshots/0004/<postgres|mssql>/
INDEX = "ix_documents_queued_ready"
QUEUED = sa.text("status = 'queued'")


def upgrade() -> None:
    bind = op.get_bind()
    install_snapshots(bind, revision, *NEW_PROCEDURES)
    if bind.dialect.name in ("postgresql", "sqlite"):
        op.create_index(
            INDEX,
            "documents",
            [sa.text("coalesce(not_before, created_at)"), "created_at"],
            postgresql_where=QUEUED,
            sqlite_where=QUEUED,
        )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name in ("postgresql", "sqlite"):
        op.drop_index(INDEX, table_name="documents")
    drop_procedures(bind, *NEW_PROCEDURES)
