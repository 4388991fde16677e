"""The keyword index's other paths, on SQLite and PostgreSQL.

- The fallback SQL Server uses without Full-Text Search (`scan_keyword_ranking`) must keep
  the same keyword contract as the full-text indexes; no SQL Server runs here, but the
  fallback is portable SQL, so the contract's keyword tests run it on both databases here
  (with vector search streamed from the database, not cached, which the filter test then
  covers too).
- SQLite's FTS5 index must hold exactly the rows of `chunks` after every way chunks come
  and go (its triggers), which FTS5's own integrity check and row counts confirm.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from sheaf.adapters.sql import open_store
from sheaf.adapters.sql.store import scan_keyword_ranking
from sheaf.domain.models import Document, ErrorInfo, ReleaseOutcome
from sheaf.ports import DocumentStore
from tests.integration.conftest import NewDocumentFactory
from tests.integration.test_store_contract import (
    LONG,
    PAST_SHORT,
    SHORT,
    completed,
    lease_of,
    test_keyword_search_finds_words_in_live_chunks_of_one_collection,
    test_keyword_search_follows_reingest_and_purge,
    test_keyword_search_ranks_rarer_words_higher,
    test_search_filters_by_document_filename_and_upload_time,
    texts,
)

pytestmark = pytest.mark.integration

__all__ = [  # the contract's keyword tests, collected again here on the scanning store
    "test_keyword_search_finds_words_in_live_chunks_of_one_collection",
    "test_keyword_search_follows_reingest_and_purge",
    "test_keyword_search_ranks_rarer_words_higher",
    "test_search_filters_by_document_filename_and_upload_time",
]


@pytest.fixture
async def store(sql_url: str) -> AsyncIterator[DocumentStore]:
    """The SQL store as SQL Server runs it without Full-Text Search, vectors uncached."""
    backend = await open_store(sql_url, search_cache_bytes=0)
    backend._keyword_ranking = scan_keyword_ranking  # type: ignore[method-assign]
    try:
        yield backend
    finally:
        await backend.close()


async def test_sqlite_fts_index_holds_exactly_the_chunks(
    sqlite_template: Path, tmp_path: Path, new_document: NewDocumentFactory
) -> None:
    path = tmp_path / "sheaf.db"
    shutil.copyfile(sqlite_template, path)
    store = await open_store(f"sqlite+aiosqlite:///{path}")

    async def make() -> Document:
        document, _ = await store.create_document(new_document())
        return document

    try:
        kept = await make()
        await completed(store, kept, *texts("memo one", "memo two"))
        again = await make()
        first = await lease_of(store, again, SHORT)
        await store.write_chunks(first, texts("memo three"))
        await asyncio.sleep(PAST_SHORT)  # a takeover, then a release that drops the chunks
        taken = await store.acquire_document_lease(again.id, "worker-b", LONG)
        assert taken.lease is not None
        await store.write_chunks(taken.lease, texts("memo four"))
        error = ErrorInfo("flaky", "try again")
        token = taken.lease.token
        await store.release_document_lease(again.id, token, ReleaseOutcome.TRANSIENT, error)
        purged = await make()
        await completed(store, purged, *texts("memo five"))
        await store.delete_document(purged.id)
        await store.purge_document(purged.id)
        staged = await make()
        await store.write_chunks(await lease_of(store, staged), texts("memo six"))
    finally:
        await store.close()

    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            # FTS5 compares its index with the content table and raises on any difference.
            conn.exec_driver_sql(
                "INSERT INTO chunks_fts (chunks_fts, rank) VALUES ('integrity-check', 1)"
            )
            counts = [
                conn.exec_driver_sql(sql).scalar()
                for sql in (
                    "SELECT count(*) FROM chunks",
                    "SELECT count(*) FROM chunks_fts_docsize",
                    "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'memo'",
                )
            ]
            remaining = conn.exec_driver_sql("SELECT text FROM chunks ORDER BY id").scalars()
            assert list(remaining) == ["memo one", "memo two", "memo six"]
    finally:
        engine.dispose()
    assert counts == [3, 3, 3]


async def test_sqlite_leaves_words_in_half_the_chunks_out_of_the_match(
    sqlite_template: Path, tmp_path: Path, new_document: NewDocumentFactory
) -> None:
    """FTS5 scores such words 1e-6: they only made every chunk a match (`_informative`)."""
    path = tmp_path / "sheaf.db"
    shutil.copyfile(sqlite_template, path)
    store = await open_store(f"sqlite+aiosqlite:///{path}")
    try:
        document, _ = await store.create_document(new_document())
        body = ("the budget", "the harbour crane", "the minutes", "the weather", "a harbour")
        await completed(store, document, *texts(*body))
        hits = await store.keyword_search("docs", "the harbour", 10)
        assert [h.text for h in hits] == ["a harbour", "the harbour crane"]
        assert len(await store.keyword_search("docs", "the", 10)) == 4  # alone, still found
        assert len(await store.keyword_search("docs", "the zebra", 10)) == 0
    finally:
        await store.close()
