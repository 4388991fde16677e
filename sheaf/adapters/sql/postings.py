"""PostgreSQL keyword search's postings, kept in memory per collection between searches.

`_KEYWORD` (`sheaf.adapters.sql.postgres`) reads every matching chunk's tsvector to count
document frequencies and score: a query of two common words at 100,000 chunks reads
20,000 heap pages and regroups 100,000 term frequencies, 0.7 s, though the arithmetic
itself takes milliseconds. `PostingsCache` keeps, for each searched collection, every live
chunk's lexemes as postings (lexeme → chunk rows and term frequencies) with each chunk's
length, and scores a query with the same statistics and the same formula as `_KEYWORD`:
tf a lexeme's number of positions, dl the chunk's number of distinct lexemes, df the live
matching chunks that hold the lexeme, N the collection's `documents.chunk_count` sum and
avgdl the mean dl over the matching chunks. Only the query's own lexemes (its tsvector,
which needs the server's `english` stemmer) are asked of the database.

It is refreshed before every search exactly as `sheaf.adapters.sql.vectors.VectorCache`
is: from the `documents` rows alone, a completed document's live chunks being named by
`(id, chunks_token)`, which never changes while the pair stands. So a ranking from the
cache is the ranking `_KEYWORD` gives at the time of the listing.

Postings are appended in segments, one per load, each a CSR array (lexeme → a slice of
chunk rows); a segment at least half the size of the one before it is merged into it, so
a collection has O(log n) segments. Rows of gone documents stay in the segments, masked
as dead, until they are half of all rows: the collection is then loaded afresh.

A search that finds more than `INLINE_LOAD_CHUNKS` chunks to load (the first search of a
large collection in a new API process: 100,000 chunks take about 9 s) starts loading them
in the background and is scored on the server, as are the searches that come before the
load ends; smaller refreshes load before the search.

Memory is bounded by `budget_bytes` for the whole process: the least recently searched
collections make room, and a collection that cannot fit alone is not cached (searches
then run `_KEYWORD` on the server) until it has fewer chunks than when it did not fit.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from itertools import chain

import numpy as np
import numpy.typing as npt
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from sheaf.adapters.sql.vectors import best_of, document_batches, listed_token
from sheaf.domain.search import BM25_B, BM25_K1

Rows = npt.NDArray[np.int32]
Frequencies = npt.NDArray[np.uint16]  # a tsvector keeps at most 256 positions per lexeme
_COMPACT_WHEN_DEAD = 0.5
# More new chunks than this are loaded in the background (about a second's work here: 100,000
# chunks took 9 s), while the server scores the searches; fewer, before the search.
INLINE_LOAD_CHUNKS = 10_000
Connect = Callable[[], AbstractAsyncContextManager[AsyncConnection]]
log = logging.getLogger(__name__)
DEFAULT_KEYWORD_CACHE_BYTES = 256 * 1024 * 1024  # ~350,000 chunks of 1,000 characters

# The completed documents of a collection: id, token of the live chunks, chunk count
# (summed, it is the N of `_KEYWORD`, which counts documents without a token too).
_LISTING = text(
    "SELECT id, chunks_token, coalesce(chunk_count, 0) AS chunk_count FROM documents "
    "WHERE collection = :collection AND status = 'completed'"
)
# Each live chunk of some documents with its lexemes and their term frequencies (the
# chunk's length is how many). Per chunk, not grouped by lexeme: a GROUP BY over the
# 900,000 lexemes of 8,000 chunks took the server 1.1 s, this 0.3 s.
_LOAD = text(
    "SELECT c.document_id, c.id, p.lexemes, p.tfs "
    "FROM chunks AS c JOIN documents AS d ON d.id = c.document_id "
    "AND d.status = 'completed' AND d.chunks_token = c.lease_token "
    "CROSS JOIN LATERAL (SELECT array_agg(t.lexeme) AS lexemes, "
    "array_agg(coalesce(array_length(t.positions, 1), 1)) AS tfs "
    "FROM unnest(c.text_search) AS t) AS p "
    "WHERE c.document_id = ANY(CAST(:documents AS VARCHAR[])) AND c.collection = :collection "
    "ORDER BY c.document_id, c.id"
)
# The query's lexemes and weights, as `_KEYWORD`'s `terms` computes them.
QUERY_LEXEMES = text(
    "SELECT t.lexeme, coalesce(array_length(t.positions, 1), 1) AS qtf "
    "FROM unnest(to_tsvector('english'::regconfig, :query)) AS t "
    "WHERE t.lexeme !~ '[''\\\\]'"
)


@dataclass
class _Segment:
    """Postings of the rows loaded together: lexeme id l's rows are
    `rows[offsets[l]:offsets[l + 1]]` (lexeme ids past the end have none)."""

    offsets: npt.NDArray[np.int64]
    rows: Rows
    tf: Frequencies

    @property
    def nbytes(self) -> int:
        return int(self.offsets.nbytes + self.rows.nbytes + self.tf.nbytes)

    def postings(self, lexeme: int) -> tuple[Rows, Frequencies]:
        if lexeme + 1 >= len(self.offsets):
            return self.rows[:0], self.tf[:0]
        start, stop = self.offsets[lexeme], self.offsets[lexeme + 1]
        return self.rows[start:stop], self.tf[start:stop]

    def lexemes(self) -> npt.NDArray[np.int64]:
        """The lexeme id of every posting."""
        return np.repeat(np.arange(len(self.offsets) - 1), np.diff(self.offsets))


def _segment(lexemes: npt.NDArray[np.int64], rows: Rows, tf: Frequencies) -> _Segment:
    order = np.argsort(lexemes, kind="stable")  # rows stay ascending within a lexeme
    counts = np.bincount(lexemes, minlength=int(lexemes.max(initial=-1)) + 1)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return _Segment(offsets, rows[order], tf[order])


def _merged(first: _Segment, second: _Segment) -> _Segment:
    return _segment(
        np.concatenate([first.lexemes(), second.lexemes()]),
        np.concatenate([first.rows, second.rows]),
        np.concatenate([first.tf, second.tf]),
    )


@dataclass
class _Collection:
    """The live chunks of one collection: rows in load order, and their postings."""

    ids: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    lengths: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    alive: npt.NDArray[np.bool_] = field(default_factory=lambda: np.empty(0, dtype=np.bool_))
    size: int = 0
    dead: int = 0
    blocks: dict[str, tuple[str | None, int, int]] = field(default_factory=dict)
    lexicon: dict[str, int] = field(default_factory=dict)
    segments: list[_Segment] = field(default_factory=list)
    listed: dict[str, tuple[str | None, int]] = field(default_factory=dict)  # as last loaded

    @property
    def nbytes(self) -> int:
        rows = self.ids.nbytes + self.lengths.nbytes + self.alive.nbytes
        return int(rows + sum(s.nbytes for s in self.segments) + 100 * len(self.lexicon))

    def drop(self, document_id: str) -> None:
        _, start, stop = self.blocks.pop(document_id)
        self.alive[start:stop] = False
        self.dead += stop - start

    def append_rows(self, ids: Sequence[int], lengths: Sequence[int]) -> int:
        """Room for these chunks' rows, filled; the first row's index."""
        start, end = self.size, self.size + len(ids)
        if end > len(self.ids):
            capacity = max(int(1.25 * end), 64)
            self.ids = np.resize(self.ids, capacity)
            self.lengths = np.resize(self.lengths, capacity)
            self.alive = np.resize(self.alive, capacity)
        self.ids[start:end] = ids
        self.lengths[start:end] = lengths
        self.alive[start:end] = True
        self.size = end
        return start

    def append_postings(self, segment: _Segment) -> None:
        self.segments.append(segment)
        while len(self.segments) > 1 and len(self.segments[-2].rows) <= 2 * len(
            self.segments[-1].rows
        ):
            second = self.segments.pop()
            self.segments[-1] = _merged(self.segments[-1], second)

    def lexeme_ids(self, lexemes: list[str]) -> npt.NDArray[np.int64]:
        """The ids of these lexemes, new ones added to the lexicon (the lookups run in C:
        a Python loop over 11 million postings took seconds)."""
        lexicon = self.lexicon
        for lexeme in dict.fromkeys(lexemes).keys() - lexicon.keys():
            lexicon[lexeme] = len(lexicon)
        return np.fromiter(map(lexicon.__getitem__, lexemes), np.int64, count=len(lexemes))

    def top(
        self,
        terms: Sequence[tuple[str, int]],
        n: float,
        k: int,
        documents: set[str] | None = None,
    ) -> list[tuple[int, float]]:
        """The k best (chunk id, BM25) pairs, best first, ties in chunk-id order: `_KEYWORD`'s
        arithmetic, in its order, over float64. With `documents`, only their chunks are
        returned; the statistics stay the collection's."""
        found: list[tuple[int, Rows, npt.NDArray[np.float64]]] = []
        for lexeme, weight in terms:
            lexeme_id = self.lexicon.get(lexeme)
            if lexeme_id is None:
                continue
            pieces = [segment.postings(lexeme_id) for segment in self.segments]
            rows = np.concatenate([rows for rows, _ in pieces])
            tf = np.concatenate([tf for _, tf in pieces])
            live = self.alive[rows]
            if live.any():
                found.append((weight, rows[live], tf[live].astype(np.float64)))
        if not found or k <= 0:
            return []
        matched = np.zeros(self.size, dtype=np.bool_)
        for _, rows, _ in found:
            matched[rows] = True
        avgdl = max(float(self.lengths[: self.size][matched].mean()), 1.0)
        scores = np.zeros(self.size)
        for weight, rows, tf in found:
            df = float(len(rows))
            idf = math.log(1 + (max(n, df) - df + 0.5) / (df + 0.5))
            dl = self.lengths[rows]
            scores[rows] += (
                weight
                * idf
                * tf
                * (BM25_K1 + 1)
                / (tf + BM25_K1 * (1 - BM25_B + BM25_B * dl / avgdl))
            )
        if documents is not None:
            allowed = np.zeros(self.size, dtype=np.bool_)
            for doc, (_, start, stop) in self.blocks.items():
                if doc in documents:
                    allowed[start:stop] = True
            matched &= allowed
        chosen = np.flatnonzero(matched)
        return best_of(self.ids[chosen], scores[chosen], min(k, len(chosen)))


class PostingsCache:
    """See the module docstring. One per store; safe for concurrent searches."""

    def __init__(self, budget_bytes: int, connect: Connect) -> None:
        self._budget = budget_bytes
        self._connect = connect
        self._loading: dict[str, asyncio.Task[None]] = {}
        self._collections: dict[str, _Collection] = {}  # the least recently searched first
        self._locks: dict[str, asyncio.Lock] = {}
        self._too_large: dict[str, int] = {}  # collection → chunks when it did not fit

    async def search(
        self,
        conn: AsyncConnection,
        collection: str,
        query: str,
        k: int,
        documents: set[str] | None = None,
    ) -> list[tuple[int, float]] | None:
        """The top k live chunks for `query`, refreshed through `conn`; None when the
        collection cannot be cached."""
        rows = (await conn.execute(_LISTING, {"collection": collection})).all()
        listed = {id_: (token, count) for id_, token, count in rows}  # unpacked: cheaper
        n = sum(count for _, count in listed.values())
        if n >= self._too_large.get(collection, n + 1):
            return None
        self._too_large.pop(collection, None)
        if collection in self._loading:
            return None  # loading in the background: the server scores meanwhile
        async with self._locks.setdefault(collection, asyncio.Lock()):
            space = self._collections.pop(collection, None) or _Collection()
            self._collections[collection] = space  # the most recently searched, last
            if listed != space.listed:
                if _unloaded(space, listed) > INLINE_LOAD_CHUNKS:
                    self._loading[collection] = asyncio.create_task(
                        self._load_later(collection, listed), name=f"postings-{collection}"
                    )
                    return None
                refreshed = await self._refresh(conn, collection, space, listed)
                if refreshed is None:
                    return None
                space = refreshed
            lexemes = await conn.execute(QUERY_LEXEMES, {"query": query})
            return space.top(lexemes.all(), float(n), k, documents)

    async def _load_later(self, collection: str, listed: dict[str, tuple[str | None, int]]) -> None:
        """`_refresh` on a connection of its own, while searches are scored on the server."""
        try:
            async with self._connect() as conn, self._locks[collection]:
                space = self._collections.pop(collection, None) or _Collection()
                self._collections[collection] = space
                await self._refresh(conn, collection, space, listed)
        except Exception:  # the next search tries again
            log.warning(
                "loading keyword postings failed", extra={"collection": collection}, exc_info=True
            )
        finally:
            del self._loading[collection]

    async def loaded(self) -> None:
        """Return once no collection is loading in the background."""
        while self._loading:
            await asyncio.gather(*self._loading.values(), return_exceptions=True)

    async def close(self) -> None:
        """Stop background loads."""
        for task in list(self._loading.values()):
            task.cancel()
        await asyncio.gather(*self._loading.values(), return_exceptions=True)

    async def _refresh(
        self,
        conn: AsyncConnection,
        collection: str,
        space: _Collection,
        listed: dict[str, tuple[str | None, int]],
    ) -> _Collection | None:
        """`space` brought to the `listed` documents (or a new one, loaded afresh, once
        half its rows are dead); None if the collection no longer fits."""
        for doc in [
            d for d, (token, _, _) in space.blocks.items() if listed_token(listed, d) != token
        ]:
            space.drop(doc)
        if space.dead > _COMPACT_WHEN_DEAD * space.size:
            space = self._collections[collection] = _Collection()
        new = {doc: listed[doc] for doc in listed.keys() - space.blocks.keys()}
        for batch in document_batches(new):
            await _load(conn, space, collection, batch, new)
            if not self._fits(collection):
                self._too_large[collection] = sum(count for _, count in listed.values())
                return None
        space.listed = listed
        return space

    def _fits(self, collection: str) -> bool:
        """Whether the cache fits its budget, evicting the least recently searched other
        collections if need be; if `collection` cannot fit even alone, it is forgotten."""
        for other in list(self._collections):
            if self._used() <= self._budget:
                return True
            if other != collection:
                del self._collections[other]
        if self._used() <= self._budget:
            return True
        self._collections.pop(collection, None)
        return False

    def _used(self) -> int:
        return sum(space.nbytes for space in self._collections.values())


def _unloaded(space: _Collection, listed: dict[str, tuple[str | None, int]]) -> int:
    """Chunks of listed documents that `space` does not hold."""
    blocks = space.blocks
    return sum(
        count
        for doc, (token, count) in listed.items()
        if doc not in blocks or blocks[doc][0] != token
    )


async def _load(
    conn: AsyncConnection,
    space: _Collection,
    collection: str,
    batch: list[str],
    new: dict[str, tuple[str | None, int]],
) -> None:
    """Append the live chunks of the `batch` documents with their postings; a document
    with none still gets a block."""
    arguments = {"documents": batch, "collection": collection}
    loaded = (await conn.execute(_LOAD, arguments)).all()
    owners, ids, lexemes, tfs = zip(*loaded, strict=True) if loaded else ((), (), (), ())
    lengths = [len(chunk) if chunk else 0 for chunk in lexemes]  # NULL: an empty tsvector
    start = space.append_rows(ids, lengths)
    blocks = {doc: [start, start] for doc in batch}  # rows come grouped by document
    for row, doc in enumerate(owners, start):
        if blocks[doc][1] == start:
            blocks[doc][0] = row
        blocks[doc][1] = row + 1
    for doc, (first, stop) in blocks.items():
        space.blocks[doc] = (new[doc][0], first, stop)
    rows = np.repeat(np.arange(start, start + len(ids), dtype=np.int32), lengths)
    lexeme_ids = space.lexeme_ids(list(chain.from_iterable(chunk for chunk in lexemes if chunk)))
    frequencies = np.fromiter(chain.from_iterable(f for f in tfs if f), np.uint16, len(rows))
    if len(rows):
        space.append_postings(_segment(lexeme_ids, rows, frequencies))
