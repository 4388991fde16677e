"""An offline, deterministic embedder: hashed word unigrams and bigrams.

It needs no model download and no network, so the embedded default and the tests can
ingest and search for real. It matches words, not meanings: good enough to find the
passage a query's words come from, not a substitute for a neural model.

How a text becomes a vector, and why:

- NFKC + casefold, then Unicode word tokens (`\\w+`): "ﬁle", "File" and "FILE" are one
  word (PDF text is full of ligatures);
- features are words plus adjacent word pairs; pairs reward phrase matches, and weigh
  half as much so that the same words in another order still score high;
- each feature is hashed with blake2b (never `hash()`, which is salted per process) to
  a column and a sign; signed hashing makes collisions cancel out on average instead
  of piling up;
- term frequency is damped to 1 + log(tf) so one repeated word cannot dominate;
- the vector is L2-normalised, so a dot product is the cosine. An empty text (or one
  with no word characters) has no direction and gets the zero vector.

Vectors depend only on the text and `dimensions`; `model` names both, and a change to
anything above must change the name ("-v2"), because stored vectors would no longer
compare with new ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from itertools import pairwise

import numpy as np

_TOKEN = re.compile(r"\w+")
_BIGRAM_WEIGHT = 0.5
_THREAD_THRESHOLD_CHARS = 50_000  # above this, hashing would stall the event loop
_HASH_PERSON = b"sheaf-lexical-v1"


class LexicalEmbedder:
    """The `Embedder` port without a model: see the module docstring for the recipe."""

    def __init__(self, dimensions: int = 1024) -> None:
        if dimensions < 1:
            raise ValueError(f"dimensions must be positive, got {dimensions}")
        self.dimensions = dimensions
        self.model = f"sheaf-lexical-v1-{dimensions}"

    async def embed(self, texts: Sequence[str]) -> list[tuple[float, ...]]:
        """One vector per text, in order; big batches are hashed off the event loop."""
        if sum(len(text) for text in texts) > _THREAD_THRESHOLD_CHARS:
            return await asyncio.to_thread(self.embed_sync, texts)
        return self.embed_sync(texts)

    def embed_sync(self, texts: Sequence[str]) -> list[tuple[float, ...]]:
        """The same vectors as `embed`, for callers that are not async."""
        matrix = np.zeros((len(texts), self.dimensions), dtype=np.float64)
        for row, text in enumerate(texts):
            columns, values = _features(text, self.dimensions)
            np.add.at(matrix[row], columns, values)  # add.at: colliding columns sum up
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
        return [tuple(row) for row in matrix.tolist()]

    async def close(self) -> None:
        """Nothing to release; present because every `Embedder` has it."""


def tokenize(text: str) -> list[str]:
    """Lower-cased Unicode words, compatibility forms (ligatures, widths) folded."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())


def _features(text: str, dimensions: int) -> tuple[list[int], list[float]]:
    """Columns and signed, damped weights of the text's words and word pairs."""
    tokens = tokenize(text)
    words = Counter(tokens)
    pairs = Counter(f"{first} {second}" for first, second in pairwise(tokens))
    columns: list[int] = []
    values: list[float] = []
    for counts, weight in ((words, 1.0), (pairs, _BIGRAM_WEIGHT)):
        for feature, tf in counts.items():
            column, sign = _bucket(feature, dimensions)
            columns.append(column)
            values.append(sign * weight * (1.0 + math.log(tf)))
    return columns, values


@lru_cache(maxsize=65_536)
def _bucket(feature: str, dimensions: int) -> tuple[int, float]:
    """Column and sign of a feature; stable across processes, machines and releases."""
    digest = hashlib.blake2b(
        feature.encode("utf-8", "surrogatepass"), digest_size=8, person=_HASH_PERSON
    ).digest()
    value = int.from_bytes(digest, "little")
    return (value >> 1) % dimensions, 1.0 if value & 1 else -1.0
