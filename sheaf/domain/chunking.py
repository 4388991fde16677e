"""Split page text into overlapping chunks that respect words and, where cheap, pages.

A pure function of its arguments: the same pages, size and overlap always give the same
chunks, which is what lets a re-processed document replace its chunks one for one.

What callers may rely on:

- every chunk is at most `size` characters and never starts or ends inside a word; a
  single word longer than `size` is the one thing cut, into `size`-character pieces;
- consecutive chunks share up to `overlap` characters (whole words, so usually a little
  less), except across a page break taken on purpose (below);
- a chunk ends early at a page break once it is at least half full, and the next chunk
  starts fresh on the new page. Most chunks then lie on one page, so a search hit can
  cite "page 7" rather than "pages 6-7"; the price is a few shorter chunks;
- `page_start`/`page_end` are the pages of the chunk's first and last word;
- whitespace inside a chunk is collapsed to one space, or one newline where the source
  had a line break, so paragraphs stay visible in a cited passage;
- running headers and footers (lines repeated at the edges of nearby pages) are left out
  (`sheaf.domain.boilerplate`), so they neither fill chunks nor match every query.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from sheaf.domain.boilerplate import strip_repeated_edges
from sheaf.domain.models import Chunk, Page

# Words only: a pattern that also captured the gap before each word would backtrack over
# a long whitespace run once per position (quadratic on a file that ends in blank space).
_WORD = re.compile(r"\S+")


class _Word(NamedTuple):  # a tuple: cheap to build by the hundred thousand
    text: str
    page: int
    separator: str  # what joins it to the previous word: " " or "\n"


def chunk_pages(pages: Sequence[Page], size: int, overlap: int) -> list[Chunk]:
    """Chunks numbered 0..n-1; empty or whitespace-only pages contribute nothing."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1 character, got {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be between 0 and size - 1 ({size - 1}), got {overlap}")
    words = list(_words(strip_repeated_edges(pages), size))
    chunks: list[Chunk] = []
    start = 0
    while start < len(words):
        end, page_break = _chunk_end(words, start, size)
        chunks.append(_make_chunk(len(chunks), words[start:end]))
        if end == len(words):
            break
        start = end if page_break else _overlap_start(words, start, end, overlap)
    return chunks


def _words(pages: Iterable[Page], size: int) -> Iterator[_Word]:
    """Every word with its page and separator; words longer than `size` in pieces."""
    for page in pages:
        separator = "\n"  # a page break reads as a line break
        previous_end = 0
        for match in _WORD.finditer(page.text):
            word = match.group()
            if "\n" in page.text[previous_end : match.start()]:
                separator = "\n"
            previous_end = match.end()
            if len(word) <= size:
                yield _Word(word, page.number, separator)
            else:
                for offset in range(0, len(word), size):
                    yield _Word(word[offset : offset + size], page.number, separator)
                    separator = " "
            separator = " "


def _chunk_end(words: Sequence[_Word], start: int, size: int) -> tuple[int, bool]:
    """Index after the chunk's last word, and whether it stopped at a page break."""
    length = len(words[start].text)
    end = start + 1
    while end < len(words):
        word = words[end]
        if word.page != words[end - 1].page and length * 2 >= size:
            return end, True
        length += len(word.separator) + len(word.text)
        if length > size:
            break
        end += 1
    return end, False


def _overlap_start(words: Sequence[_Word], start: int, end: int, overlap: int) -> int:
    """Where the next chunk starts: the most trailing words that fit in `overlap`.

    Always after `start`, so every chunk makes progress even when nothing fits.
    """
    begin = end
    length = -1  # the first word counted has no separator inside the overlap
    while begin - 1 > start:
        length += len(words[begin - 1].text) + 1
        if length > overlap:
            break
        begin -= 1
    return begin


def _make_chunk(ordinal: int, words: Sequence[_Word]) -> Chunk:
    text = words[0].text + "".join(word.separator + word.text for word in words[1:])
    return Chunk(ordinal=ordinal, text=text, page_start=words[0].page, page_end=words[-1].page)


def content_hash(text: str) -> str:
    """The embedding cache key of a chunk: SHA-256 of its text."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
