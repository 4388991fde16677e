"""Search logic that needs no database: query words, filename patterns, rank fusion.

Hybrid search fuses a keyword (BM25) ranking and a vector (cosine) ranking with
reciprocal-rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009): a chunk scores
`Σ 1 / (RRF_K + rank)` over the rankings that found it. It needs no score calibration
(BM25 and cosine live on unrelated scales), rewards chunks both rankings agree on, and is
what Azure AI Search and Elasticsearch use for hybrid queries; `RRF_K = 60` is the
constant of the paper and of both products.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TypeVar

from sheaf.domain.models import SearchHit

RRF_K = 60
BM25_K1 = 1.2  # term-frequency saturation, the usual default (Lucene, Elasticsearch)
BM25_B = 0.75  # length normalisation, the usual default
MAX_QUERY_TERMS = 64  # a pasted page becomes a bounded OR of its first distinct words
MAX_TERM_WEIGHT = 8  # a word said more often weighs more, up to this many times
LIKE_ESCAPE = "\\"

_WORD = re.compile(r"\w+")


# English function words: they carry no topic, and a rare one ("can" in one chunk of a
# small collection) would outrank the words that do. The console leaves the same words
# unhighlighted (api/console/static/dom.js). PostgreSQL's `english` configuration drops
# its own list when it builds the tsvector; this one applies on every backend.
_STOP_WORDS = """
    a about above after again all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers him his how i if in into is it its itself
    just me more most my no nor not now of off on once only or other our ours out over own
    same she should so some such than that the their theirs them then there these they this
    those through to too under until up very was we were what when where which while who
    whom why will with would you your yours
"""
STOP_WORDS = frozenset(_STOP_WORDS.split())


def query_terms(query: str) -> dict[str, int]:
    """The distinct words of a query, lower-cased, in order of first appearance, each with
    how often the query says it (at most `MAX_TERM_WEIGHT`), without stop words (unless
    the query has nothing else: "to be or not to be").

    The count is BM25's query term frequency: a long question that names "retrieval"
    three times and "systems" once is mostly about retrieval, as Okapi BM25 and the usual
    rankers (rank_bm25, Lucene's BooleanQuery of repeated clauses) weigh it.
    """
    counts: dict[str, int] = {}
    for word in _WORD.findall(query.lower()):
        counts[word] = counts.get(word, 0) + 1
    words = [word for word in counts if word not in STOP_WORDS] or list(counts)
    return {word: min(counts[word], MAX_TERM_WEIGHT) for word in words[:MAX_QUERY_TERMS]}


def repeated(terms: Mapping[str, int]) -> list[str]:
    """Each term as many times as it weighs: for rankers that weigh a word by how often
    it appears in the query they are given (FTS5's match, PostgreSQL's tsvector)."""
    return [term for term, weight in terms.items() for _ in range(weight)]


K = TypeVar("K", int, tuple[str, int])


def bm25_rank(
    texts: Mapping[K, str],
    terms: Mapping[str, int],
    n: int,
    avgdl: float,
    allowed: Callable[[K], bool] = lambda _: True,
) -> list[tuple[K, float]]:
    """Okapi BM25 of whole words, for rankers without a full-text index.

    `texts` are the candidates: every chunk of the collection that may hold a term (a
    superset is fine; chunks without a whole-word match are dropped). `terms` maps each
    word to its weight in the query (`query_terms`). tf counts lower-cased
    `\\w+` words (no stemming), df the candidates holding a word, `n` is the number of
    chunks in the collection and `avgdl` their mean length in characters (dl is in
    characters too). Statistics come from all candidates; `allowed` only chooses which are
    returned. Best first; equal scores in key order.
    """
    wanted = set(terms)
    frequencies: dict[K, dict[str, int]] = {}
    holding = dict.fromkeys(wanted, 0)
    for key, body in texts.items():
        counts: dict[str, int] = {}
        for word in _WORD.findall(body.lower()):
            if word in wanted:
                counts[word] = counts.get(word, 0) + 1
        if counts:
            frequencies[key] = counts
            for word in counts:
                holding[word] += 1
    scored = []
    for key, counts in frequencies.items():
        if not allowed(key):
            continue
        norm = BM25_K1 * (1 - BM25_B + BM25_B * len(texts[key]) / max(avgdl, 1.0))
        score = sum(
            terms[w]
            * math.log(1 + (max(n, holding[w]) - holding[w] + 0.5) / (holding[w] + 0.5))
            * tf
            * (BM25_K1 + 1)
            / (tf + norm)
            for w, tf in counts.items()
        )
        scored.append((key, score))
    scored.sort(key=lambda pair: (-pair[1], pair[0]))
    return scored


def glob_to_like(pattern: str) -> str:
    """A filename glob (`*`, `?`) as a LIKE pattern with `LIKE_ESCAPE` as escape character.

    LIKE's own wildcards (`%`, `_`), SQL Server's `[`, and the escape character itself
    are escaped, so they match only themselves on every backend.
    """
    out = []
    for char in pattern:
        if char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        elif char in "%_[" + LIKE_ESCAPE:
            out.append(LIKE_ESCAPE + char)
        else:
            out.append(char)
    return "".join(out)


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """The same pattern as `glob_to_like`, for code that filters in Python (the fakes)."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def fuse(rankings: Mapping[str, Sequence[SearchHit]], k: int) -> list[SearchHit]:
    """Reciprocal-rank fusion of best-first rankings into the `k` best hits.

    A hit is identified by (document, chunk). Each fused hit carries the fused score and,
    in `rankings`, its 1-based rank in every ranking that found it. Ties keep the order
    of the first ranking that found the hit, so results are deterministic.
    """
    fused: dict[tuple[str, int], tuple[float, SearchHit, dict[str, int]]] = {}
    order: dict[tuple[str, int], tuple[int, int]] = {}
    for position, (name, hits) in enumerate(rankings.items()):
        for rank, hit in enumerate(hits, 1):
            key = (hit.document_id, hit.chunk_ordinal)
            score, first, ranks = fused.get(key, (0.0, hit, {}))
            if name in ranks:
                continue  # a ranking names a chunk once; keep its best rank
            ranks[name] = rank
            fused[key] = (score + 1.0 / (RRF_K + rank), first, ranks)
            order.setdefault(key, (position, rank))
    best = sorted(fused, key=lambda key: (-fused[key][0], order[key]))[: max(k, 0)]
    return [
        replace(fused[key][1], score=fused[key][0], rankings=dict(fused[key][2])) for key in best
    ]


def ranked(name: str, hits: Sequence[SearchHit]) -> list[SearchHit]:
    """One ranking's hits, each recording its own 1-based rank under `name`."""
    return [replace(hit, rankings={name: rank}) for rank, hit in enumerate(hits, 1)]
