"""complete_document_lease: a worker's completion as one PostgreSQL function call.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24

- The completion transaction (lock the row under the token, swap the chunks, complete the
  row, close the attempt) was six statements sent from Python between BEGIN and COMMIT; as
  a PL/pgSQL function it runs in autocommit as one statement, one round trip
  (docs/benchmarks.md measured the round trips). SQLite and SQL Server keep the statements
  of `sheaf.adapters.sql.store.complete_locked`.
- `claim_queued_documents_v2` is installed again with a faster body and the same contract:
  its single UPDATE … FROM (picked rows) had no usable generic plan, so PostgreSQL planned
  it on every call, which cost more than running it.

No table changes. Both are this revision's snapshots (`snapshots/0005/postgres/`); the
downgrade drops the new function and puts back 0004's body of the claim.
"""

from __future__ import annotations

from alembic import op

from sheaf.adapters.sql.snapshots import drop_procedures, install_snapshots

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

NEW_FUNCTIONS = ("complete_document_lease",)
REPLACED_BODIES = ("claim_queued_documents_v2",)  # CREATE OR REPLACE: same signature


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        install_snapshots(bind, revision, *NEW_FUNCTIONS, *REPLACED_BODIES)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        drop_procedures(bind, *NEW_FUNCTIONS)
        install_snapshots(bind, "0004", *REPLACED_BODIES)
