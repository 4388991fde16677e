"""Chunks record the SHA-256 of their text: the key of the embedding cache.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

Re-ingesting text that a collection already holds reuses the stored vectors instead of
calling the embedding API again. Rows written before this revision have no hash and are
simply never cache hits.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("chunks", sa.Column("content_sha256", sa.String(64), nullable=True))
    op.create_index(
        "ix_chunks_collection_model_content", "chunks", ["collection", "model", "content_sha256"]
    )


def downgrade() -> None:
    op.drop_index("ix_chunks_collection_model_content", table_name="chunks")
    op.drop_column("chunks", "content_sha256")
