"""Running headers and footers leave the text; everything else, and every page, stays."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sheaf.domain.boilerplate import strip_repeated_edges
from sheaf.domain.chunking import chunk_pages
from sheaf.domain.models import Page

pytestmark = pytest.mark.unit

BODIES = [
    "The harbour master logged nine ships.\nTwo carried salt.",
    "Tolls rose in spring.\nThe guild protested.",
    "A storm closed the port for a week.",
    "Repairs to the quay cost forty crowns.\nThe council paid half.",
    "Trade recovered by midsummer.",
    "The ledger closes with a surplus.",
]


def report(bodies: list[str]) -> list[Page]:
    return [
        Page(n, f"ACME Harbour Trust\nAnnual Report 1724\n\n{body}\n\nPage {n} of {len(bodies)}\n")
        for n, body in enumerate(bodies, start=1)
    ]


def test_headers_and_footers_go_and_the_body_stays() -> None:
    pages = list(strip_repeated_edges(report(BODIES)))
    assert [page.number for page in pages] == [1, 2, 3, 4, 5, 6]
    assert [page.text.strip() for page in pages] == BODIES


def test_a_repeated_line_inside_the_text_stays() -> None:
    bodies = [f"{body}\nSee the appendix.\n{body.upper()}" for body in BODIES]
    pages = list(strip_repeated_edges(Page(n + 1, text) for n, text in enumerate(bodies)))
    assert all("See the appendix." in page.text for page in pages)  # 3rd line, not an edge run


def test_short_documents_and_lone_lines_are_left_alone() -> None:
    two = report(BODIES[:2])
    assert list(strip_repeated_edges(two)) == two
    # The same closing line on pages 1, 10 and 20 is too far apart to be a footer.
    words = ["oak", "ash", "elm", "yew", "fir", "pine", "beech", "birch", "alder", "hazel"]
    far = [
        Page(
            n,
            f"Of {words[n % 10]} and {words[n // 10]}."
            + ("\nThe clerk" if n in (1, 10, 20) else ""),
        )
        for n in range(1, 21)
    ]
    assert list(strip_repeated_edges(far)) == far


def test_long_numbered_sentences_of_one_shape_are_text() -> None:
    pages = [
        Page(
            n,
            f"Section {n}: the inspection of bridge pillar {n} found {n * 3} hairline cracks, "
            f"each measured; repairs to pillar {n} are scheduled for week {n + 10}.",
        )
        for n in range(1, 7)
    ]
    assert list(strip_repeated_edges(pages)) == pages


def test_a_page_is_never_emptied_and_identical_pages_stay() -> None:
    pages = report(BODIES)
    pages[2] = Page(3, "ACME Harbour Trust\nAnnual Report 1724\nPage 3 of 6")
    assert list(strip_repeated_edges(pages))[2] == pages[2]
    same = [Page(n, "Visitor form\nName:\nSigned:") for n in range(1, 6)]
    assert list(strip_repeated_edges(same)) == same
    assert chunk_pages(same, 300, 0)  # such a document still has text to search


def test_look_ahead_is_bounded() -> None:
    pulled = 0

    def stream() -> Iterator[Page]:
        nonlocal pulled
        for page in report(BODIES * 5):
            pulled += 1
            yield page

    pages = strip_repeated_edges(stream(), reach=2)
    first = next(pages)
    assert first.text.strip() == BODIES[0]
    assert pulled == 3  # page 1 and its two pages of look-ahead, no more
    assert len(list(pages)) == 29


def test_chunks_no_longer_carry_the_running_header() -> None:
    chunks = chunk_pages(strip_repeated_edges(report(BODIES)), 300, 0)
    text = " ".join(chunk.text for chunk in chunks)
    assert "ACME" not in text
    assert "Page" not in text
    assert all(body.split()[0] in text for body in BODIES)


def test_pieces_of_one_long_page_keep_their_edges() -> None:
    pieces = [
        Page(
            1,
            f"2024-01-0{n} started\nitem {n} of the log, a line of its own: {'x' * n}\n"
            f"2024-01-0{n} stopped",
        )
        for n in range(1, 8)
    ]
    assert list(strip_repeated_edges(pieces)) == pieces
