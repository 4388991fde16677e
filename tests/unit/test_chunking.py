"""Properties of `chunk_pages` that search and citations depend on."""

from __future__ import annotations

import random
from collections.abc import Iterator
from itertools import pairwise

import pytest

from sheaf.domain.chunking import chunk_pages, iter_chunks
from sheaf.domain.models import Chunk, Page
from tests.unit.reference_chunking import reference_chunks

pytestmark = pytest.mark.unit


def prose(seed: int, words: int) -> str:
    rng = random.Random(seed)
    vocabulary = ["the", "ledger", "shows", "a", "tidy", "sum", "of", "forty", "crowns", "paid"]
    return " ".join(rng.choice(vocabulary) + rng.choice(["", "s", "ed"]) for _ in range(words))


BOOK = [Page(n, prose(n, 300)) for n in range(1, 6)]


def all_words(chunks: list[Chunk]) -> set[str]:
    return {word for chunk in chunks for word in chunk.text.split()}


@pytest.mark.parametrize(("size", "overlap"), [(200, 0), (200, 50), (500, 100), (60, 59)])
def test_chunks_fit_the_size_and_never_split_words(size: int, overlap: int) -> None:
    chunks = chunk_pages(BOOK, size, overlap)
    source_words = {word for page in BOOK for word in page.text.split()}
    assert all(len(chunk.text) <= size for chunk in chunks)
    assert all_words(chunks) == source_words  # nothing lost, no word cut in two
    assert [chunk.ordinal for chunk in chunks] == list(range(len(chunks)))


def test_consecutive_chunks_share_about_the_overlap() -> None:
    pages = [Page(1, prose(7, 2000))]
    chunks = chunk_pages(pages, 300, 60)
    longest_word = max(len(word) for word in pages[0].text.split())
    for first, second in pairwise(chunks):
        shared = next(
            n
            for n in range(min(len(first.text), len(second.text)), -1, -1)
            if first.text.endswith(second.text[:n])
        )
        assert 60 - longest_word - 1 <= shared <= 60


def test_no_overlap_means_chunks_simply_follow_each_other() -> None:
    chunks = chunk_pages([Page(1, prose(3, 500))], 100, 0)
    assert " ".join(chunk.text for chunk in chunks).split() == prose(3, 500).split()


def test_page_spans_are_those_of_the_first_and_last_word() -> None:
    pages = [Page(1, "alpha beta"), Page(2, "gamma delta"), Page(3, "epsilon")]
    assert chunk_pages(pages, 100, 0) == [Chunk(0, "alpha beta\ngamma delta\nepsilon", 1, 3)]
    for chunk in chunk_pages(BOOK, 250, 40):
        first, last = chunk.text.split()[0], chunk.text.split()[-1]
        assert first in BOOK[chunk.page_start - 1].text
        assert last in BOOK[chunk.page_end - 1].text


def test_a_page_break_ends_a_half_full_chunk_and_the_next_starts_fresh() -> None:
    pages = [Page(1, "one two three four five six"), Page(2, "seven eight nine ten")]
    assert chunk_pages(pages, 40, 15) == [
        Chunk(0, "one two three four five six", 1, 1),  # 27 of 40: over half full
        Chunk(1, "seven eight nine ten", 2, 2),  # no overlap carried over the break
    ]


def test_most_chunks_lie_on_one_page() -> None:
    size = 400
    chunks = chunk_pages(BOOK, size, 80)
    spanning = [chunk for chunk in chunks if chunk.page_start != chunk.page_end]
    assert len(spanning) <= len(BOOK) - 1 < len(chunks) / 4
    for chunk in spanning:  # only chunks less than half full at the break run on
        on_first_page = chunk.text.split("\n")[0]
        assert len(on_first_page) * 2 < size


def test_a_nearly_empty_chunk_runs_on_across_a_page_break() -> None:
    pages = [Page(1, "short tail"), Page(2, "next page words")]
    assert chunk_pages(pages, 100, 10) == [Chunk(0, "short tail\nnext page words", 1, 2)]


def test_a_word_longer_than_the_size_is_the_only_thing_cut() -> None:
    chunks = chunk_pages([Page(1, "tiny " + "x" * 25 + " end")], 10, 3)
    assert [chunk.text for chunk in chunks] == ["tiny", "xxxxxxxxxx", "xxxxxxxxxx", "xxxxx end"]


def test_line_breaks_survive_as_single_newlines() -> None:
    text = "Title\r\n\r\n  First   paragraph\there.\n\nSecond."
    assert chunk_pages([Page(1, text)], 100, 0)[0].text == "Title\nFirst paragraph here.\nSecond."


def test_empty_and_blank_pages_produce_nothing() -> None:
    assert chunk_pages([], 100, 10) == []
    assert chunk_pages([Page(1, ""), Page(2, " \n\t ")], 100, 10) == []
    only_two = chunk_pages([Page(1, ""), Page(2, "words"), Page(3, "  ")], 100, 10)
    assert only_two == [Chunk(0, "words", 2, 2)]


def test_chunking_is_deterministic() -> None:
    assert chunk_pages(BOOK, 300, 50) == chunk_pages(list(BOOK), 300, 50)


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (-5, 0), (100, -1), (100, 100), (10, 11)])
def test_invalid_arguments_are_refused(size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match=r"size|overlap"):
        chunk_pages(BOOK, size, overlap)


def test_long_whitespace_runs_are_linear_not_quadratic() -> None:
    # A quadratic scan of 4 MB of trailing blanks would never finish (the timeout fails it).
    text = "first words here" + " " * 4_000_000 + "\n" + "last"
    chunks = chunk_pages([Page(1, text)], size=100, overlap=10)
    assert [c.text for c in chunks] == ["first words here\nlast"]


def random_text(rng: random.Random) -> str:
    """Words of any length (some longer than a chunk) between runs of spaces, tabs and
    line breaks of any length, sometimes at the start or end."""
    parts = []
    for _ in range(rng.randrange(0, 120)):
        parts.append(rng.choice([" ", "  ", "\n", " \n\t", "\r\n", "\n\n  "]))
        parts.append("x" * rng.choice([1, 2, 3, 5, 8, 13, 40, 90]) + str(rng.randrange(99)))
    if rng.random() < 0.5:
        parts.append(rng.choice([" ", "\n", "\t\n "]))
    return "".join(parts[rng.randrange(2) :])


def random_pages(rng: random.Random) -> list[Page]:
    return [Page(number, random_text(rng)) for number in range(1, rng.randrange(1, 6))]


def cut(pages: list[Page], rng: random.Random) -> list[Page]:
    """Each page as pieces of the same number, cut at random places (inside words too)."""
    pieces = []
    for page in pages:
        cuts = sorted(rng.randrange(len(page.text) + 1) for _ in range(rng.randrange(4)))
        bounds = [0, *cuts, len(page.text)]
        pieces += [Page(page.number, page.text[a:b]) for a, b in pairwise(bounds)]
    return pieces


@pytest.mark.parametrize("seed", range(300))
def test_streaming_makes_the_chunks_the_list_chunker_made(seed: int) -> None:
    rng = random.Random(seed)
    pages = random_pages(rng)
    size = rng.choice([20, 50, 100, 300])
    overlap = rng.randrange(size)
    expected = reference_chunks(pages, size, overlap)
    assert list(iter_chunks(iter(pages), size, overlap)) == expected
    assert list(iter_chunks(iter(cut(pages, rng)), size, overlap)) == expected


def test_streaming_reads_pages_only_as_chunks_need_them() -> None:
    read: list[int] = []

    def pages() -> Iterator[Page]:
        for number in range(1, 1000):
            read.append(number)
            yield Page(number, prose(number, 1000))

    stream = iter_chunks(pages(), 200, 20)
    next(stream)
    assert read == [1]  # a chunk of page 1 needs page 1 (and a few hundred words of it)


def test_a_long_word_arriving_in_pieces_is_cut_as_if_whole() -> None:
    word = "y" * 1050
    pieces = [Page(1, "a " + word[:7]), *(Page(1, word[i : i + 7]) for i in range(7, 1050, 7))]
    chunks = list(iter_chunks([*pieces, Page(1, " b")], 100, 10))
    assert chunks == reference_chunks([Page(1, f"a {word} b")], 100, 10)
    assert [len(chunk.text) for chunk in chunks][1:11] == [100] * 10
