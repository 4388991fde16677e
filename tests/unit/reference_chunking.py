"""The list-based chunker as it was before chunking streamed (commit cd2756b), verbatim.

Kept only as the oracle that `iter_chunks` must match word for word on any input.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from sheaf.domain.models import Chunk, Page

_WORD = re.compile(r"\S+")


class _Word(NamedTuple):  # a tuple: cheap to build by the hundred thousand
    text: str
    page: int
    separator: str  # what joins it to the previous word: " " or "\n"


def reference_chunks(pages: Sequence[Page], size: int, overlap: int) -> list[Chunk]:
    """Chunks numbered 0..n-1; empty or whitespace-only pages contribute nothing."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1 character, got {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be between 0 and size - 1 ({size - 1}), got {overlap}")
    words = list(_words(pages, size))
    chunks: list[Chunk] = []
    start = 0
    while start < len(words):
        end, page_break = _chunk_end(words, start, size)
        chunks.append(_make_chunk(len(chunks), words[start:end]))
        if end == len(words):
            break
        start = end if page_break else _overlap_start(words, start, end, overlap)
    return chunks


def _words(pages: Sequence[Page], size: int) -> Iterator[_Word]:
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
