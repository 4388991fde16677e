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
import random
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sheaf.adapters.sql import open_store, sqlite
from sheaf.adapters.sql.store import scan_keyword_ranking
from sheaf.domain.models import Document, ErrorInfo, ReleaseOutcome
from sheaf.domain.search import query_terms
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


@pytest.mark.parametrize("fts_first", [False, True], ids=["joined", "fts-first"])
async def test_sqlite_pruned_keyword_ranking_is_the_plain_match_ranking(
    sqlite_template: Path,
    tmp_path: Path,
    new_document: NewDocumentFactory,
    monkeypatch: pytest.MonkeyPatch,
    fts_first: bool,
) -> None:
    """MaxScore (`SqliteDocumentStore._keyword_ranking`) skips chunks that cannot reach the
    top k; what it returns must be what one match of every term, ranked by `bm25()`,
    returns: the same chunks in the same order, with the same scores.

    `fts-first` has every match ranked by FTS5 alone first (`_bm25`), a few rows deep so
    the ranking must go deeper and, at times, to the join: the staged chunks and another
    collection's, which FTS5 ranks among the live ones, must still never be returned."""
    if fts_first:
        monkeypatch.setattr(sqlite, "FTS_FIRST_ROWS", 0)
        monkeypatch.setattr(sqlite, "FTS_FIRST_DEPTH", 2)
        monkeypatch.setattr(sqlite, "FTS_FIRST_GROWTH", 4)
        monkeypatch.setattr(sqlite, "FTS_FIRST_MAX_DEPTH", 64)
    else:
        monkeypatch.setattr(sqlite, "FTS_FIRST_ROWS", 10**9)
    path = tmp_path / "sheaf.db"
    shutil.copyfile(sqlite_template, path)
    rng = random.Random(5)
    vocabulary = [f"w{chr(97 + n // 26)}{chr(97 + n % 26)}" for n in range(120)]  # waa, wab, …
    zipf = [1 / (rank + 1) for rank in range(len(vocabulary))]
    bodies = [" ".join(rng.choices(vocabulary, zipf, k=rng.randint(3, 40))) for _ in range(600)]
    store = await open_store(f"sqlite+aiosqlite:///{path}")
    searched: list[str] = []
    plain = store._bm25  # type: ignore[attr-defined]

    async def spied(conn: Any, collection: str, match: str, k: int, filters: Any, **kw: Any) -> Any:
        searched.append(match)
        return await plain(conn, collection, match, k, filters, **kw)

    store._bm25 = spied  # type: ignore[attr-defined]
    try:
        # Chunks that are not live ones of "docs" first: they take the lower ids, which win
        # ties, so FTS5's ranking puts them ahead of their live twins.
        other, _ = await store.create_document(new_document(collection="other"))
        await completed(store, other, *texts(*bodies[:100]))
        stale, _ = await store.create_document(new_document())  # staged chunks: not live
        await store.write_chunks(await lease_of(store, stale), texts(*bodies[:100]))
        for start in range(0, len(bodies), 100):
            document, _ = await store.create_document(new_document())
            await completed(store, document, *texts(*bodies[start : start + 100]))
        engine = sa.create_engine(f"sqlite:///{path}")

        def held(word: str) -> int:
            with engine.connect() as conn:
                sql = "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH :m"
                return int(conn.execute(sa.text(sql), {"m": f'"{word}"'}).scalar_one())

        # Words in under half the chunks (`_informative` leaves the others out), common and rare.
        usable = [w for w in vocabulary if held(w) * 2 < len(bodies) + 200]
        queries = [" ".join(rng.sample(usable, rng.randint(2, 4))) for _ in range(40)]
        queries += [f"{usable[0]} {usable[0]} {usable[-1]}", f"{usable[1]} {usable[40]}"]
        queries += [f"{usable[2]} {usable[2]}", usable[3]]  # one word: one phrase, scaled
        pruned = 0
        for query in queries:
            for k in (1, 5, 50):
                searched.clear()
                hits = await store.keyword_search("docs", query, k)
                terms = query_terms(query)
                match = " OR ".join(f'"{t}"' for t in terms for _ in range(terms[t]))
                with engine.connect() as conn:
                    expected = conn.execute(_PLAIN_MATCH, {"match": match, "k": k}).all()
                assert [(h.chunk_ordinal, h.document_id) for h in hits] == [
                    (row.ordinal, row.document_id) for row in expected
                ], (query, k)
                assert [h.score for h in hits] == pytest.approx([row.score for row in expected])
                pruned += match not in searched  # never ran the plain match
        engine.dispose()
    finally:
        await store.close()
    assert pruned >= len(queries)  # the test saw pruning, not only the plain match


_PLAIN_MATCH = sa.text(
    "SELECT c.document_id, c.ordinal, -bm25(chunks_fts) AS score FROM chunks_fts "
    "JOIN chunks AS c ON c.id = chunks_fts.rowid "
    "JOIN documents AS d ON d.id = c.document_id AND d.status = 'completed' "
    "AND d.chunks_token = c.lease_token "
    "WHERE chunks_fts MATCH :match AND c.collection = 'docs' "
    "ORDER BY bm25(chunks_fts), c.id LIMIT :k"
)
