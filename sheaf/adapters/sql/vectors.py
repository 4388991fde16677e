"""Exact search's vectors, kept in memory per (collection, model, dimensions) between searches.

Reading every vector of a collection from the database is what made exact search slow (a
100,000-chunk collection is 400 MB of 1,024-dimension vectors per query); the product
itself takes milliseconds. `VectorCache` keeps each searched space as one float32 matrix
with its rows' norms and refreshes it before every search from the `documents` rows
alone: a completed document's live chunks are named by `(id, chunks_token)` and never
change while that pair stands (chunks are written only under a held lease, and completion
clears the lease), so a document whose pair is new is loaded, one whose pair is gone
(deleted, or superseded) has its rows dropped, and nothing else is read. Results are
therefore exactly those of a scan of the database at the time of the listing.

Memory is bounded by `budget_bytes` for the whole process: the least recently searched
spaces make room, and a space that cannot fit alone is not cached at all (the store then
streams it from the database, as it does with a zero budget). Only processes that search
(the API) ever fill it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Join, select
from sqlalchemy.ext.asyncio import AsyncConnection

from sheaf.adapters.sql.schema import chunks as chunk_table
from sheaf.adapters.sql.schema import documents
from sheaf.domain.models import Status

FloatMatrix = npt.NDArray[np.float32]
_DOCUMENTS_PER_LOAD = 500  # stays far below every driver's bound-parameter limit
_ROWS_PER_LOAD = 8192  # bounds what one load query holds in memory (32 MiB at 1,024 dims)
_INLINE_PRODUCT = 1024 * 1024  # floats: scoring this few takes about a millisecond at most
_COMPACT_WHEN_DEAD = 0.5  # rebuild a matrix once half its rows belong to gone documents

Key = tuple[str, str, int]  # collection, model, dimensions


@dataclass
class _Space:
    """The live vectors of one (collection, model, dimensions), rows in load order."""

    dimensions: int
    matrix: FloatMatrix = field(init=False)
    norms: npt.NDArray[np.float32] = field(init=False)
    ids: npt.NDArray[np.int64] = field(init=False)
    alive: npt.NDArray[np.bool_] = field(init=False)
    size: int = 0
    dead: int = 0
    blocks: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # id → token, rows
    listed: dict[str, tuple[str, int]] = field(default_factory=dict)  # as last loaded
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self._allocate(0)

    @property
    def row_bytes(self) -> int:
        return 4 * self.dimensions + 4 + 8 + 1  # vector, norm, chunk id, alive flag

    @property
    def nbytes(self) -> int:
        return int(self.matrix.nbytes + self.norms.nbytes + self.ids.nbytes + self.alive.nbytes)

    def _allocate(self, capacity: int) -> None:
        self.matrix = np.empty((capacity, self.dimensions), dtype=np.float32)
        self.norms = np.empty(capacity, dtype=np.float32)
        self.ids = np.empty(capacity, dtype=np.int64)
        self.alive = np.zeros(capacity, dtype=np.bool_)

    def drop(self, document_id: str) -> None:
        _, start, stop = self.blocks.pop(document_id)
        self.alive[start:stop] = False
        self.dead += stop - start

    def reserve(self, rows: int, limit: int | None = None) -> None:
        """Room for `rows` more rows (growing by a quarter, up to `limit` rows in all);
        also compacts away the rows of gone documents once they are many."""
        live = self.size - self.dead
        if self.size + rows <= len(self.ids) and self.dead <= _COMPACT_WHEN_DEAD * self.size:
            return
        capacity = max(int(1.25 * (live + rows)), 64)
        capacity = max(live + rows, capacity if limit is None else min(capacity, limit))
        keep = np.flatnonzero(self.alive[: self.size])
        old = (self.matrix, self.norms, self.ids)
        self._allocate(capacity)
        self.matrix[:live], self.norms[:live], self.ids[:live] = (a[keep] for a in old)
        self.alive[:live] = True
        self.blocks = {
            doc: (token, _moved(keep, start), _moved(keep, start) + (stop - start))
            for doc, (token, start, stop) in self.blocks.items()
        }
        self.size, self.dead = live, 0

    def append(self, document_id: str, token: str, ids: Sequence[int], raw: bytes) -> None:
        rows = len(ids)
        if self.size + rows > len(self.ids):
            self.reserve(rows)
        start = self.size
        if rows:
            vectors = np.frombuffer(raw, dtype="<f4").reshape(rows, self.dimensions)
            self.matrix[start : start + rows] = vectors
            self.norms[start : start + rows] = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
            self.ids[start : start + rows] = ids
            self.alive[start : start + rows] = True
        self.blocks[document_id] = (token, start, start + rows)
        self.size += rows

    def top(
        self, query: npt.NDArray[np.float32], k: int, documents: set[str] | None = None
    ) -> list[tuple[int, float]]:
        """The k best (chunk id, cosine) pairs, best first; ties in chunk-id order. With
        `documents`, only the rows of those documents are scored."""
        if documents is not None:
            return self._top_of(query, k, documents)
        n = self.size
        if n == 0 or k <= 0:
            return []
        scale = self.norms[:n] * np.float32(np.linalg.norm(query))
        dots = self.matrix[:n] @ query
        scores = np.divide(dots, scale, out=np.zeros_like(dots), where=scale > 0)
        scores[~self.alive[:n]] = -np.inf
        return best_of(self.ids[:n], scores, min(k, n - self.dead))

    def _top_of(
        self, query: npt.NDArray[np.float32], k: int, documents: set[str]
    ) -> list[tuple[int, float]]:
        ranges = [
            np.arange(start, stop)
            for doc, (_, start, stop) in self.blocks.items()
            if doc in documents
        ]
        rows = np.concatenate(ranges) if ranges else np.empty(0, dtype=np.intp)
        if rows.size == 0 or k <= 0:
            return []
        scale = self.norms[rows] * np.float32(np.linalg.norm(query))
        dots = self.matrix[rows] @ query
        scores = np.divide(dots, scale, out=np.zeros_like(dots), where=scale > 0)
        return best_of(self.ids[rows], scores, min(k, int(rows.size)))


def _moved(keep: npt.NDArray[np.intp], old_start: int) -> int:
    """Where row `old_start` (a kept row, or the end of an empty block) lands after `keep`."""
    return int(np.searchsorted(keep, old_start))


def best_of(ids: npt.NDArray[np.int64], scores: Any, k: int) -> list[tuple[int, float]]:
    """The k highest scores, best first, equal scores in chunk-id order; deterministic
    even when ties straddle the k-th place (every row tied with it is a candidate)."""
    if k <= 0 or ids.size == 0:
        return []
    if ids.size > k:
        kth = np.partition(scores, ids.size - k)[ids.size - k]
        chosen = np.flatnonzero(scores >= kth)
        ids, scores = ids[chosen], scores[chosen]
    order = np.lexsort((ids, -scores))[:k]
    return [(int(ids[i]), float(scores[i])) for i in order]


class VectorCache:
    """See the module docstring. One per store; safe for concurrent searches."""

    def __init__(self, budget_bytes: int) -> None:
        self._budget = budget_bytes
        self._spaces: OrderedDict[Key, _Space] = OrderedDict()  # least recently searched first

    async def search(
        self,
        conn: AsyncConnection,
        key: Key,
        query: npt.NDArray[np.float32],
        k: int,
        live_chunks: Join,
        documents: set[str] | None = None,
    ) -> list[tuple[int, float]] | None:
        """The top k of the space, refreshed through `conn`; None when it cannot be cached.
        With `documents`, only chunks of those documents are candidates."""
        space = self._spaces.get(key)
        if space is None:
            space = self._spaces[key] = _Space(key[2])
        self._spaces.move_to_end(key)
        async with space.lock:
            listed = await _live_documents(conn, key[0])
            if listed != space.listed:  # else nothing changed since the last search
                blocks = space.blocks.items()
                gone = [doc for doc, (token, _, _) in blocks if listed_token(listed, doc) != token]
                for doc in gone:
                    space.drop(doc)
                new = {doc: listed[doc] for doc in listed.keys() - space.blocks.keys()}
                if not self._make_room(key, space, sum(count for _, count in new.values())):
                    return None
                await _load(conn, space, key, new, live_chunks)
                space.listed = listed
            if space.size * space.dimensions < _INLINE_PRODUCT:
                return space.top(query, k, documents)
            # Tens of milliseconds of memory-bound arithmetic (numpy releases the GIL):
            # the event loop keeps serving uploads and health checks meanwhile.
            return await asyncio.to_thread(space.top, query, k, documents)

    def _make_room(self, key: Key, space: _Space, rows: int) -> bool:
        """Room for `rows` more rows of `space` within the budget, evicting the least
        recently searched other spaces if need be; False (and `space` forgotten) when it
        cannot fit even alone."""
        row_bytes = space.row_bytes
        needed = (space.size - space.dead + rows) * row_bytes
        if needed > self._budget:
            self._spaces.pop(key, None)  # another search may have evicted it meanwhile
            return False
        for other in list(self._spaces):
            if self._used(besides=key) + needed <= self._budget:
                break
            if other != key:
                self._spaces.pop(other, None)
        space.reserve(rows, limit=(self._budget - self._used(besides=key)) // row_bytes)
        return True

    def _used(self, *, besides: Key) -> int:
        return sum(space.nbytes for key, space in self._spaces.items() if key != besides)


def listed_token(listed: Mapping[str, tuple[str | None, int]], document_id: str) -> str | None:
    """The live chunks' token of a listed document; None if it is not listed."""
    found = listed.get(document_id)
    return None if found is None else found[0]


async def _live_documents(conn: AsyncConnection, collection: str) -> dict[str, tuple[str, int]]:
    """Completed documents of the collection: id → (chunks_token, chunk_count)."""
    d = documents.c
    query = select(d.id, d.chunks_token, d.chunk_count).where(
        d.collection == collection, d.status == Status.COMPLETED, d.chunks_token.is_not(None)
    )
    rows = (await conn.execute(query)).all()  # unpacked: a Row's attributes by name cost
    return {id_: (token, count) for id_, token, count in rows}  # more than the query


async def _load(
    conn: AsyncConnection,
    space: _Space,
    key: Key,
    new: dict[str, tuple[str, int]],
    live_chunks: Join,
) -> None:
    """Append the live vectors of `new` documents; a document with none still gets a block."""
    collection, model, dimensions = key
    c = chunk_table.c
    for batch in document_batches(new):
        query = (
            select(c.document_id, c.id, c.embedding)
            .select_from(live_chunks)
            .where(c.document_id.in_(batch), c.collection == collection)
            .where(c.model == model, c.dimensions == dimensions)
            .order_by(c.document_id, c.id)
        )
        found: dict[str, tuple[list[int], list[bytes]]] = {doc: ([], []) for doc in batch}
        for row in await conn.execute(query):
            ids, raw = found[row.document_id]
            ids.append(row.id)
            raw.append(row.embedding)
        space.reserve(sum(len(ids) for ids, _ in found.values()))
        for doc, (ids, raw) in found.items():
            space.append(doc, new[doc][0], ids, b"".join(raw))


def document_batches(new: Mapping[str, tuple[str | None, int]]) -> Iterator[list[str]]:
    """Document ids in groups of at most `_DOCUMENTS_PER_LOAD` documents and, unless one
    document alone has more, `_ROWS_PER_LOAD` chunks (by their `chunk_count`)."""
    batch: list[str] = []
    rows = 0
    for document_id in sorted(new):
        count = new[document_id][1]
        if batch and (len(batch) == _DOCUMENTS_PER_LOAD or rows + count > _ROWS_PER_LOAD):
            yield batch
            batch, rows = [], 0
        batch.append(document_id)
        rows += count
    if batch:
        yield batch
