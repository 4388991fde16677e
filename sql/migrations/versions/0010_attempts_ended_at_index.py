"""An index on attempts.ended_at, for the console's dashboard.

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-06

The dashboard (`GET /v1/admin/dashboard`) reads the attempts that ended in its window
(the last minutes or hours) every few seconds. Without an index that is a scan of the
whole attempts history, which only grows; with `ix_attempts_ended_at` it reads the
window's rows only. Plain B-tree, the same on every backend.
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None

INDEX = "ix_attempts_ended_at"


def upgrade() -> None:
    op.create_index(INDEX, "attempts", ["ended_at"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="attempts")
