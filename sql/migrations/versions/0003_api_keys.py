"""API keys: the `api_keys` table (hashes only, never keys).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

`sheaf keys create|list|revoke` manage the rows; the API looks a key up by its id on
every request. Revocation sets `revoked_at` and keeps the row, so `sheaf keys list` can
still say which key was revoked when. Types as in 0001: NVARCHAR on SQL Server.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

MSSQL = "mssql"
TIMESTAMP = sa.DateTime(timezone=True)


def _string(length: int) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.NVARCHAR(length), MSSQL)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", _string(16), primary_key=True),
        sa.Column("name", _string(200), nullable=False),
        sa.Column("scope", _string(16), nullable=False),
        sa.Column("collections", sa.Text().with_variant(sa.UnicodeText(), MSSQL), nullable=False),
        sa.Column("secret_sha256", _string(64), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("revoked_at", TIMESTAMP),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
