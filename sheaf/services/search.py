"""Search a collection: keyword, vector, or both fused (hybrid, the default).

The adapters rank; this service chooses the rankings, fuses them
(`sheaf.domain.search.fuse`, reciprocal-rank fusion) and says which rankings found each
hit. A search that finds nothing in a collection that does not exist is an error that
says so, not an empty answer.
"""

from __future__ import annotations

import asyncio

from sheaf.domain.models import SearchFilter, SearchHit, SearchMode
from sheaf.domain.search import fuse, ranked
from sheaf.errors import ClientError, NotFound
from sheaf.services.deps import Deps
from sheaf.services.ingest import check_collection

MAX_K = 100
# How deep each ranking is read before fusion: a chunk ranked 50th by one ranking and
# well by the other can still make the fused top k (Azure AI Search reads 50 as well).
FUSION_DEPTH = 50
KEYWORD = "keyword"
VECTOR = "vector"


class CollectionNotFound(NotFound):
    code = "collection_not_found"


async def search(
    deps: Deps,
    collection: str,
    query: str,
    k: int,
    mode: SearchMode = SearchMode.HYBRID,
    filters: SearchFilter | None = None,
) -> list[SearchHit]:
    """The best `k` (1-100, clamped) chunks for `query`, best first, each with its
    `rankings` ({"keyword": rank, "vector": rank}, 1-based, for the rankings that found it)."""
    check_collection(collection)
    if not query.strip():
        raise ClientError("the query is empty; pass words to search for in q", code="empty_query")
    k = max(1, min(k, MAX_K))
    if mode is SearchMode.KEYWORD:
        hits = ranked(KEYWORD, await deps.store.keyword_search(collection, query, k, filters))
    elif mode is SearchMode.VECTOR:
        hits = ranked(VECTOR, await _vector(deps, collection, query, k, filters))
    else:
        depth = max(k, FUSION_DEPTH)
        vector, keyword = await asyncio.gather(
            _vector(deps, collection, query, depth, filters),
            deps.store.keyword_search(collection, query, depth, filters),
        )
        hits = fuse({VECTOR: vector, KEYWORD: keyword}, k)  # equal scores: vector's order
    if not hits and not await deps.store.collection_exists(collection):
        raise CollectionNotFound(
            f"collection {collection!r} does not exist (no document was ever uploaded into "
            "it); check the name, or upload documents into it first"
        )
    return hits


async def _vector(
    deps: Deps, collection: str, query: str, k: int, filters: SearchFilter | None
) -> list[SearchHit]:
    [vector] = await deps.embedder.embed([query])
    return await deps.store.search(collection, vector, deps.embedder.model, k, filters)
