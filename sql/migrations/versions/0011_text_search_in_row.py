"""PostgreSQL keeps each chunk's `text_search` in its row, not in the TOAST table.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

A chunk row holds its text (about 1 KB), its tsvector (about 1.4 KB compressed) and its
embedding (4 KB at 1,024 dimensions). Over PostgreSQL's 2 KB threshold, the default
strategy moved the tsvector out of line as well as the embedding, so keyword search
fetched every matching chunk's tsvector from the TOAST table: at 100,000 chunks, 22,145
matches took 268 ms to score, 48 ms with the tsvector in the row (the search benchmark,
docs/benchmarks.md section 10). `STORAGE MAIN` keeps it in the row, compressed; the text
moves out of line instead, which costs only the hits a search returns.

Rows written before this revision keep their out-of-line tsvector until they are written
again (a re-ingest) or the table is rewritten (`VACUUM FULL chunks`, which locks it).
SQLite and SQL Server: nothing to do.
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    _storage("MAIN")


def downgrade() -> None:
    _storage("EXTENDED")


def _storage(strategy: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        bind.exec_driver_sql(f"ALTER TABLE chunks ALTER COLUMN text_search SET STORAGE {strategy}")
