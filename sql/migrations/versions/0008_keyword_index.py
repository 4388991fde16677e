"""Keyword (BM25-class) index over the chunks, on every backend.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

Hybrid search fuses a keyword ranking with the vector ranking. The keyword index lives
beside the chunks and changes in the same transactions as they do, so it holds exactly
the rows the vectors do (staged, live or superseded); searches join it to the live chunks
(`documents.chunks_token`) like vector search, so a search never sees half a document.

- SQLite: `chunks_fts`, an FTS5 table with external content (`content='chunks'`, no
  second copy of the text), Porter stemming; kept by triggers on `chunks`, so every path
  that inserts or deletes chunks (staging, the completion swap, a release, a purge) keeps
  it in step inside its own transaction. Ranked by FTS5's `bm25()`.
- PostgreSQL: `chunks.text_search`, a stored generated `tsvector` (english configuration)
  with a GIN index: computed by the INSERT that stages the chunk, deleted with its row.
  `PostgresDocumentStore` computes BM25 from its term statistics.
- SQL Server: the full-text index cannot be created inside a transaction, and the whole
  upgrade is one; `sql/migrations/env.py` creates it after the upgrade commits, where the
  server has Full-Text Search (`sql/migrations/mssql_fulltext.sql`). Nothing here.

Existing chunks are indexed by the upgrade (FTS5 `rebuild`; PostgreSQL computes the
generated column for every row, rewriting the table once).
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SQLITE_UP = (
    "CREATE VIRTUAL TABLE chunks_fts USING fts5("
    "text, content='chunks', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN "
    "INSERT INTO chunks_fts (rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN "
    "INSERT INTO chunks_fts (chunks_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER chunks_fts_update AFTER UPDATE OF text ON chunks BEGIN "
    "INSERT INTO chunks_fts (chunks_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    "INSERT INTO chunks_fts (rowid, text) VALUES (new.id, new.text); END",
    "INSERT INTO chunks_fts (chunks_fts) VALUES ('rebuild')",
)
SQLITE_DOWN = (
    "DROP TRIGGER IF EXISTS chunks_fts_update",
    "DROP TRIGGER IF EXISTS chunks_fts_delete",
    "DROP TRIGGER IF EXISTS chunks_fts_insert",
    "DROP TABLE IF EXISTS chunks_fts",
)
POSTGRES_UP = (
    "ALTER TABLE chunks ADD COLUMN text_search tsvector "
    "GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED",
    "CREATE INDEX ix_chunks_text_search ON chunks USING gin (text_search)",
)
POSTGRES_DOWN = (
    "DROP INDEX IF EXISTS ix_chunks_text_search",
    "ALTER TABLE chunks DROP COLUMN IF EXISTS text_search",
)


def upgrade() -> None:
    _run({"sqlite": SQLITE_UP, "postgresql": POSTGRES_UP})


def downgrade() -> None:
    _run({"sqlite": SQLITE_DOWN, "postgresql": POSTGRES_DOWN})


def _run(statements: dict[str, tuple[str, ...]]) -> None:
    bind = op.get_bind()
    for statement in statements.get(bind.dialect.name, ()):
        bind.exec_driver_sql(statement)
