"""The offline embedder: deterministic, unit length, and good at finding word overlap."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sheaf.adapters.embed_lexical import LexicalEmbedder
from sheaf.ports import Embedder

pytestmark = pytest.mark.unit

PASSAGES = [
    "The auditors inspected the grain silo and found the moisture readings too high.",
    "Quarterly revenue grew because the bakery opened two new shops downtown.",
    "Bridge load testing showed hairline cracks in the northern support pillar.",
    "The committee postponed the vote on the new parking regulations until March.",
]


def cosine(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return float(np.dot(a, b))


async def test_it_is_an_embedder_with_a_model_naming_its_dimensions() -> None:
    embedder: Embedder = LexicalEmbedder(256)
    assert embedder.model == "sheaf-lexical-v1-256"
    assert embedder.dimensions == 256
    [vector] = await embedder.embed(["hello world"])
    assert len(vector) == 256
    assert all(isinstance(value, float) for value in vector)
    await embedder.close()


async def test_vectors_are_unit_length_and_empty_text_is_zero() -> None:
    vectors = await LexicalEmbedder().embed([*PASSAGES, "", "  ...  "])
    assert [len(v) for v in vectors] == [1024] * 6
    for vector in vectors[:4]:
        assert math.isclose(math.fsum(x * x for x in vector), 1.0, rel_tol=1e-9)
    assert vectors[4] == vectors[5] == (0.0,) * 1024


async def test_same_text_same_vector_in_any_batch_and_order() -> None:
    embedder = LexicalEmbedder()
    alone = await embedder.embed([PASSAGES[2]])
    batched = await embedder.embed(list(reversed(PASSAGES)))
    assert alone[0] == batched[1]


def test_vectors_do_not_depend_on_the_process_or_hash_seed() -> None:
    """`hash()` is salted per process; a fresh interpreter with another seed must agree."""
    script = (
        "import asyncio; from sheaf.adapters.embed_lexical import LexicalEmbedder; "
        f"print(repr(asyncio.run(LexicalEmbedder(64).embed([{PASSAGES[0]!r}]))[0]))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parents[2],
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1


async def test_a_query_of_a_passages_words_reordered_finds_that_passage() -> None:
    embedder = LexicalEmbedder()
    vectors = await embedder.embed(PASSAGES)
    for index, passage in enumerate(PASSAGES):
        words = passage.rstrip(".").split()
        [query] = await embedder.embed([" ".join(reversed(words)).upper()])
        scores = [cosine(query, vector) for vector in vectors]
        others = max(score for i, score in enumerate(scores) if i != index)
        assert scores[index] > 0.6
        assert scores[index] > others + 0.4


async def test_a_few_query_words_still_rank_their_passage_first() -> None:
    embedder = LexicalEmbedder()
    vectors = await embedder.embed(PASSAGES)
    [query] = await embedder.embed(["cracks pillar bridge"])
    scores = [cosine(query, vector) for vector in vectors]
    assert scores.index(max(scores)) == 2


async def test_case_and_ligatures_do_not_matter() -> None:
    embedder = LexicalEmbedder()
    first, second = await embedder.embed(["The FILE was filed", "the ﬁle was ﬁled"])
    assert first == pytest.approx(second)


async def test_large_batches_give_the_same_vectors() -> None:
    embedder = LexicalEmbedder(128)
    many = PASSAGES * 300  # big enough to be hashed on a worker thread
    vectors = await embedder.embed(many)
    assert vectors[-1] == (await embedder.embed([PASSAGES[-1]]))[0]
    assert len(vectors) == len(many)


@pytest.mark.parametrize("dimensions", [0, -1])
def test_dimensions_must_be_positive(dimensions: int) -> None:
    with pytest.raises(ValueError, match="dimensions"):
        LexicalEmbedder(dimensions)
