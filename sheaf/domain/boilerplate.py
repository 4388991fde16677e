"""Drop running headers and footers: lines repeated at the top or bottom of nearby pages.

A report's "ACME Corp — Annual Report 2024" and "Page 7 of 80" are on every page; left in,
they land in every chunk, match every query that mentions the company, and push the
passage itself out of the snippet. They are recognisable without a layout model: the same
line (page numbers aside) at the same edge of most pages around it.

A pure, streaming function of its pages. What callers may rely on:

- **Bounded look-ahead.** Pages are read lazily and yielded in order; deciding about page
  n needs pages up to n + `reach`, so at most 2 * `reach` + 1 pages are held at a time,
  and a caller that extracts pages one by one keeps doing so.
- **Only edges, only repeats.** A line can go only if it is among the first or last
  `edge_lines` non-blank lines of its page, and only while every line between it and the
  page's edge goes too (a repeated line in the middle of the text stays). It goes when
  the same line, compared after folding case, whitespace and digits (so "Page 7" matches
  "Page 8"), is at an edge of at least `min_pages` - 1 of the `reach` pages either side.
  A document shorter than `min_pages` pages keeps every line. Numbers are folded only in
  short lines (`FOLD_DIGITS_UP_TO` characters: "Page 7 of 80", "- 12 -"): text of the same
  shape on every page ("Pillar 3 found 9 cracks ...", wrapped or not) stays.
- **Only whole pages.** A long page that comes in pieces (several `Page`s with one
  number, as a text file does) is passed on as it is and confirms nothing: the edges of
  its pieces are places in its text, not the edges of a page.
- **Never a whole page.** A page whose every line would go keeps them all: pages that
  repeat each other entirely (a form, a slide template, a test file) are content, and a
  document of identical pages must not come out empty. The price: a blank page of a
  report keeps its header and footer.
- **Nothing else changes.** Every page is yielded, with its number, and kept lines are
  unchanged (so page counts and citations stay right).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from sheaf.domain.models import Page

REACH = 4  # pages either side that may confirm a repeat (look-ahead and look-behind)
EDGE_LINES = 3  # non-blank lines at the top, and at the bottom, that may be boilerplate
MIN_PAGES = 3  # a line must be at an edge of this many pages, this one included
FOLD_DIGITS_UP_TO = 40  # page-number lines are short; longer lines must repeat exactly

_DIGITS = re.compile(r"\d+")
_SPACE = re.compile(r"\s+")


def strip_repeated_edges(
    pages: Iterable[Page],
    *,
    reach: int = REACH,
    edge_lines: int = EDGE_LINES,
    min_pages: int = MIN_PAGES,
) -> Iterator[Page]:
    """The pages in order, each without its running header and footer lines."""
    if reach < 1 or edge_lines < 1 or min_pages < 2:
        raise ValueError("reach and edge_lines must be at least 1, min_pages at least 2")
    window: deque[_Seen] = deque()  # pages n - reach .. n + reach
    current = 0  # index in `window` of the next page to yield
    for page in pages:
        seen = _Seen(page, _edge_keys(page.text, edge_lines))
        if window and window[-1].page.number == page.number:  # not yet yielded: reach >= 1
            window[-1].piece = seen.piece = True
        window.append(seen)
        if len(window) > 2 * reach + 1:
            window.popleft()
            current -= 1
        if len(window) - 1 - current == reach:  # page `current` has its full look-ahead
            yield _strip(window, current, edge_lines, min_pages)
            current += 1
    while current < len(window):
        yield _strip(window, current, edge_lines, min_pages)
        current += 1


@dataclass(slots=True)
class _Seen:
    page: Page
    keys: frozenset[str]  # its edge lines, as compared
    piece: bool = False  # one of several `Page`s of one long page (see `Page`)


def _strip(window: deque[_Seen], index: int, edge_lines: int, min_pages: int) -> Page:
    page = window[index].page
    if len(window) < min_pages or window[index].piece:
        return page
    others = [seen.keys for i, seen in enumerate(window) if i != index and not seen.piece]

    def repeated(line: str) -> bool:
        key = _key(line)
        return sum(key in keys for keys in others) >= min_pages - 1

    lines = page.text.splitlines(keepends=True)
    top = _edge_run(lines, range(len(lines)), edge_lines, repeated)
    bottom = _edge_run(lines, range(len(lines) - 1, top - 1, -1), edge_lines, repeated)
    kept = "".join(lines[top:bottom])
    if not kept.strip():  # nothing but repeats: identical pages are content, not furniture
        return page
    return Page(page.number, kept)


def _edge_run(
    lines: list[str], order: range, edge_lines: int, repeated: Callable[[str], bool]
) -> int:
    """Where the kept text starts (walking down) or ends (walking up): the index after
    (before) the last repeated line that only blank or repeated lines separate from the
    edge, among the first `edge_lines` non-blank lines."""
    step = order.step
    keep_from = order.start if step > 0 else order.start + 1
    seen = 0
    for i in order:
        if not lines[i].strip():
            continue
        seen += 1
        if seen > edge_lines or not repeated(lines[i]):
            break
        keep_from = i + 1 if step > 0 else i
    return keep_from


def _edge_keys(text: str, edge_lines: int) -> frozenset[str]:
    lines = [line for line in text.splitlines() if line.strip()]
    edges = lines[:edge_lines] + lines[-edge_lines:]
    return frozenset(_key(line) for line in edges)


def _key(line: str) -> str:
    """A line as compared across pages: case and spacing folded, numbers too if it is short."""
    folded = _SPACE.sub(" ", line.strip().casefold())
    return _DIGITS.sub("#", folded) if len(folded) <= FOLD_DIGITS_UP_TO else folded
