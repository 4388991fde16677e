"""PostgreSQL keyword search from the postings kept in memory (`sheaf.adapters.sql.postings`).

The cache must rank exactly as `_KEYWORD` does on the server, whatever happened to the
collection since the last search: documents completed, re-ingested, deleted; chunks staged
but not live; another collection's chunks. Each test searches one database through two
stores, one with the cache and one without, and compares the rankings.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from sheaf.adapters.sql import open_store, postings
from sheaf.adapters.sql.store import SqlDocumentStore
from sheaf.domain.models import SearchFilter, SearchHit
from tests.integration.conftest import NewDocumentFactory
from tests.integration.test_store_contract import completed, lease_of, texts

pytestmark = pytest.mark.integration

VOCABULARY = [f"w{chr(97 + n // 26)}{chr(97 + n % 26)}" for n in range(120)]  # waa, wab, …
ZIPF = [1 / (rank + 1) for rank in range(len(VOCABULARY))]


@pytest.fixture
async def stores(empty_postgres_url: str) -> AsyncIterator[tuple[SqlDocumentStore, ...]]:
    """(cached, on the server): two stores on one empty PostgreSQL database."""
    cached = await open_store(empty_postgres_url)
    server = await open_store(empty_postgres_url, keyword_cache_bytes=0)
    try:
        yield cached, server
    finally:
        await cached.close()
        await server.close()


def server_scored(store: SqlDocumentStore) -> list[str]:
    """The statements that scored a query on the server (`_KEYWORD`), as they run."""
    seen: list[str] = []

    @sa.event.listens_for(store.engine.sync_engine, "before_cursor_execute")
    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "frequencies AS MATERIALIZED" in statement:
            seen.append(statement)

    return seen


def bodies(rng: random.Random, count: int) -> list[str]:
    return [" ".join(rng.choices(VOCABULARY, ZIPF, k=rng.randint(3, 40))) for _ in range(count)]


async def assert_same_rankings(
    cached: SqlDocumentStore,
    server: SqlDocumentStore,
    queries: list[str],
    filters: SearchFilter | None = None,
) -> int:
    """Each query's top k from the cache is the server's: the same score at every rank,
    and every chunk the cache returns scored the same by the server (chunks tied at the
    k-th place may be either; ties are broken by chunk id on both sides, but float sums
    in another order may differ in the last bit). Returns the hits compared."""
    compared = 0
    for query in queries:
        deep = await server.keyword_search("docs", query, 2000, filters)
        by_chunk = {_key(hit): hit.score for hit in deep}
        for k in (1, 5, 50):
            hits = await cached.keyword_search("docs", query, k, filters)
            assert len(hits) == min(k, len(deep)), query
            assert [h.score for h in hits] == pytest.approx([h.score for h in deep[:k]], rel=1e-9)
            assert len({_key(h) for h in hits}) == len(hits)
            for hit in hits:
                assert by_chunk[_key(hit)] == pytest.approx(hit.score, rel=1e-9), (query, k)
            compared += len(hits)
    return compared


def _key(hit: SearchHit) -> tuple[str, int]:
    return hit.document_id, hit.chunk_ordinal


async def test_cached_ranking_is_the_server_ranking_as_the_collection_changes(
    stores: tuple[SqlDocumentStore, SqlDocumentStore], new_document: NewDocumentFactory
) -> None:
    cached, server = stores
    scored_on_server = server_scored(cached)
    rng = random.Random(11)
    other, _ = await cached.create_document(new_document(collection="other"))
    await completed(cached, other, *texts(*bodies(rng, 80)))
    staged, _ = await cached.create_document(new_document())  # staged chunks: not live
    await cached.write_chunks(await lease_of(cached, staged), texts(*bodies(rng, 80)))
    docs = []
    for _ in range(5):
        document, _ = await cached.create_document(new_document())
        await completed(cached, document, *texts(*bodies(rng, 100)))
        docs.append(document)
    queries = [" ".join(rng.sample(VOCABULARY, rng.randint(1, 4))) for _ in range(25)]
    queries += [f"{VOCABULARY[0]} {VOCABULARY[0]} {VOCABULARY[50]}", "nothing matches this"]
    assert await assert_same_rankings(cached, server, queries) > 1000

    # Changes between searches: a document deleted, one added, one with no chunks.
    await cached.delete_document(docs[0].id)
    added, _ = await cached.create_document(new_document())
    await completed(cached, added, *texts(*bodies(rng, 60)))
    empty, _ = await cached.create_document(new_document())
    await completed(cached, empty)
    await assert_same_rankings(cached, server, queries)

    # Documents arriving one by one: each search loads one segment, merged into the ones
    # before it while it is at least half their size.
    for size in (40, 20, 10, 30):
        arrived, _ = await cached.create_document(new_document())
        await completed(cached, arrived, *texts(*bodies(rng, size)))
        await assert_same_rankings(cached, server, queries[:8])
    segments = cached._postings._collections["docs"].segments  # type: ignore[attr-defined]
    assert 1 < len(segments) < 6, [len(s.rows) for s in segments]

    # Filters choose among the chunks; the statistics stay the collection's.
    chosen = SearchFilter(document_ids=(docs[1].id, added.id))
    await assert_same_rankings(cached, server, queries[:10], chosen)
    assert scored_on_server == []  # every ranking above came from the cache


async def test_most_of_the_collection_gone_is_loaded_afresh(
    stores: tuple[SqlDocumentStore, SqlDocumentStore], new_document: NewDocumentFactory
) -> None:
    cached, server = stores
    rng = random.Random(12)
    docs = []
    for _ in range(4):
        document, _ = await cached.create_document(new_document())
        await completed(cached, document, *texts(*bodies(rng, 50)))
        docs.append(document)
    queries = [" ".join(rng.sample(VOCABULARY[:30], 2)) for _ in range(10)]
    await assert_same_rankings(cached, server, queries)
    for document in docs[:3]:
        await cached.delete_document(document.id)
    await assert_same_rankings(cached, server, queries)
    postings = cached._postings  # type: ignore[attr-defined]
    (space,) = postings._collections.values()
    assert (space.size, space.dead) == (50, 0)  # the dead rows were dropped by a reload


async def test_a_collection_over_the_budget_is_scored_on_the_server(
    empty_postgres_url: str, new_document: NewDocumentFactory
) -> None:
    small = await open_store(empty_postgres_url, keyword_cache_bytes=20_000)
    server = await open_store(empty_postgres_url, keyword_cache_bytes=0)
    scored_on_server = server_scored(small)
    rng = random.Random(13)
    try:
        document, _ = await small.create_document(new_document())
        await completed(small, document, *texts(*bodies(rng, 20)))
        await assert_same_rankings(small, server, ["waa wab"])
        assert scored_on_server == []  # 20 chunks fit
        large, _ = await small.create_document(new_document())
        await completed(small, large, *texts(*bodies(rng, 400)))
        await assert_same_rankings(small, server, ["waa wab", "wac"])
        assert len(scored_on_server) == 6  # each query at each k
        assert small._postings._collections == {}  # type: ignore[attr-defined]
    finally:
        await small.close()
        await server.close()


async def test_a_large_load_runs_in_the_background_while_the_server_scores(
    stores: tuple[SqlDocumentStore, SqlDocumentStore],
    new_document: NewDocumentFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Over `INLINE_LOAD_CHUNKS` new chunks, searches go to the server until the load ends."""
    monkeypatch.setattr(postings, "INLINE_LOAD_CHUNKS", 100)
    cached, server = stores
    scored_on_server = server_scored(cached)
    rng = random.Random(14)
    for size in (150, 60):
        document, _ = await cached.create_document(new_document())
        await completed(cached, document, *texts(*bodies(rng, size)))
    await assert_same_rankings(cached, server, ["waa wab"])  # 210 chunks: loads in background
    assert scored_on_server  # at least the first search was the server's
    await cached.caches_loaded()
    scored_on_server.clear()
    small, _ = await cached.create_document(new_document())
    await completed(cached, small, *texts(*bodies(rng, 90)))  # 90 new: loaded inline
    await assert_same_rankings(cached, server, ["waa wab", "wac wad"])
    assert scored_on_server == []
