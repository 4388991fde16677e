"""Exact search from the vector cache answers exactly what a scan of the database answers.

Three stores share one database: one with the default cache, one with none (every search
streams the vectors), and one whose budget holds a single small space (so spaces are
evicted, and one that does not fit falls back to the stream). After every change — new
completions, deletions, chunks staged by a running attempt, enough deletions to compact a
cached matrix — all three must return the same hits with the same scores.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import numpy as np
import pytest

from sheaf.adapters.sql import SqlDocumentStore, open_store
from sheaf.domain.models import (
    AcquireOutcome,
    Chunk,
    Completion,
    EmbeddedChunk,
    Lease,
    NewDocument,
    SearchHit,
)

pytestmark = pytest.mark.integration

DIMENSIONS = 8
SMALL_BUDGET = 30 * (4 * DIMENSIONS + 13)  # about 30 rows of 8 dimensions
TIE = tuple(float(x) for x in range(1, DIMENSIONS + 1))


@pytest.fixture
async def stores(sql_url: str) -> AsyncIterator[list[SqlDocumentStore]]:
    """[cached, streamed, small budget] over one database."""
    opened = [
        await open_store(sql_url),
        await open_store(sql_url, search_cache_bytes=0),
        await open_store(sql_url, search_cache_bytes=SMALL_BUDGET),
    ]
    try:
        yield opened
    finally:
        for store in opened:
            await store.close()


class Corpus:
    """Documents with seeded random vectors (and deliberate ties) written through a store."""

    def __init__(self, store: SqlDocumentStore) -> None:
        self.store = store
        self.random = np.random.default_rng(7)

    def vectors(self, count: int) -> list[tuple[float, ...]]:
        rows = self.random.normal(size=(count, DIMENSIONS)).astype(np.float32)
        rows[0] = TIE  # every document's first chunk ties with every other's
        return [tuple(float(x) for x in row) for row in rows]

    async def lease(self, collection: str) -> Lease:
        document_id = str(uuid.uuid4())
        new = NewDocument(
            id=document_id,
            collection=collection,
            filename=f"{document_id}.txt",
            content_type="text/plain",
            size_bytes=1,
            sha256=uuid.uuid4().hex * 2,
            blob_key=f"{collection}/{document_id}",
            max_attempts=3,
        )
        await self.store.create_document(new)
        result = await self.store.acquire_document_lease(document_id, "w", 30)
        assert result.outcome is AcquireOutcome.ACQUIRED
        assert result.lease is not None
        return result.lease

    async def document(self, collection: str = "c", chunks: int = 4, model: str = "m") -> str:
        lease = await self.lease(collection)
        embedded = [
            EmbeddedChunk(Chunk(i, f"text {i}", 1, 1), vector, model)
            for i, vector in enumerate(self.vectors(chunks))
        ]
        await self.store.write_chunks(lease, embedded)
        await self.store.complete(lease, Completion(1, chunks, {}, model, DIMENSIONS))
        return lease.document_id


def _key(hits: list[SearchHit]) -> list[tuple[str, int, float]]:
    return [(h.document_id, h.chunk_ordinal, round(h.score, 5)) for h in hits]


async def assert_agree(
    stores: list[SqlDocumentStore], query: tuple[float, ...], collection: str = "c"
) -> list[SearchHit]:
    results = [await store.search(collection, query, "m", 7) for store in stores]
    assert _key(results[0]) == _key(results[1]) == _key(results[2])
    return results[0]


async def test_every_change_shows_in_the_next_search(stores: list[SqlDocumentStore]) -> None:
    corpus = Corpus(stores[0])
    query = TIE
    documents = [await corpus.document() for _ in range(6)]
    first = await assert_agree(stores, query)
    assert len(first) == 7
    assert [h.score for h in first[:6]] == pytest.approx([1.0] * 6, abs=1e-5)  # six-way tie
    assert [h.chunk_ordinal for h in first[:6]] == [0] * 6

    added = await corpus.document(chunks=3)
    assert added in {h.document_id for h in await assert_agree(stores, query)}
    await stores[1].delete_document(documents[0])  # through another store: no shared state
    assert documents[0] not in {h.document_id for h in await assert_agree(stores, query)}

    staged = await corpus.lease("c")  # a running attempt's chunks are never visible
    await stores[0].write_chunks(staged, [EmbeddedChunk(Chunk(0, "s", 1, 1), query, "m")])
    assert staged.document_id not in {h.document_id for h in await assert_agree(stores, query)}


async def test_a_matrix_compacted_after_many_deletions_still_agrees(
    stores: list[SqlDocumentStore],
) -> None:
    corpus = Corpus(stores[0])
    query = TIE
    documents = [await corpus.document(chunks=5) for _ in range(12)]
    await assert_agree(stores, query)
    for document_id in documents[:9]:  # three quarters of the rows belong to gone documents
        await stores[0].delete_document(document_id)
    await assert_agree(stores, query)
    for _ in range(4):
        await corpus.document(chunks=5)
    hits = await assert_agree(stores, query)
    assert {h.document_id for h in hits}.isdisjoint(documents[:9])


async def test_spaces_beyond_the_budget_are_evicted_or_streamed(
    stores: list[SqlDocumentStore],
) -> None:
    corpus = Corpus(stores[0])
    query = TIE
    for _ in range(3):
        await corpus.document(collection="small", chunks=4)  # 12 rows: fits the small budget
    for _ in range(5):
        await corpus.document(collection="medium", chunks=4)  # 20: fits, but not beside small
    for _ in range(10):
        await corpus.document(collection="large", chunks=4)  # 40: never fits
    for collection in ("small", "medium", "small", "large", "medium", "large", "small"):
        hits = await assert_agree(stores, query, collection)
        assert len(hits) == 7
    assert await stores[2].search("nowhere", query, "m", 3) == []
    assert await stores[2].search("small", query[:4], "m", 3) == []  # other dimensions
