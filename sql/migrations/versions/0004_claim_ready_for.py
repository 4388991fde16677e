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

from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

PROCEDURES = Path(__file__).resolve().parents[2] / "procedures"
NEW_PROCEDURES = ("claim_queued_documents_v2",)
INDEX = "ix_documents_queued_ready"
QUEUED = sa.text("status = 'queued'")


def upgrade() -> None:
    bind = op.get_bind()
    directory = {"postgresql": "postgres", "mssql": "mssql"}.get(bind.dialect.name)
    if directory is not None:
        for name in NEW_PROCEDURES:
            bind.exec_driver_sql((PROCEDURES / directory / f"{name}.sql").read_text("utf-8"))
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
    for name in NEW_PROCEDURES:
        if bind.dialect.name == "mssql":
            bind.exec_driver_sql(f"DROP PROCEDURE IF EXISTS dbo.{name}")
        elif bind.dialect.name == "postgresql":
            bind.exec_driver_sql(f"DROP FUNCTION IF EXISTS {name}")
