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
- consecutive pages with the same number are pieces of one page (an extractor cuts a
  long page so that no piece is large): the chunks are those of the joined page;
- `iter_chunks` makes the same chunks while the pages stream in, holding only the words
  of the chunk being made, so its memory does not grow with the document.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import NamedTuple

from sheaf.domain.boilerplate import strip_repeated_edges
from sheaf.domain.models import Chunk, ChunkBatch, Chunking, Page
from sheaf.errors import PermanentError

# Words only: a pattern that also captured the gap before each word would backtrack over
# a long whitespace run once per position (quadratic on a file that ends in blank space).
_WORD = re.compile(r"\S+")
READ_AHEAD = 256  # words read past the one a chunk needs: a bound, not the document


class _Word(NamedTuple):  # a tuple: cheap to build by the hundred thousand
    text: str
    page: int
    separator: str  # what joins it to the previous word: " " or "\n"


def chunk_pages(pages: Iterable[Page], size: int, overlap: int) -> list[Chunk]:
    """Chunks numbered 0..n-1; empty or whitespace-only pages contribute nothing."""
    return list(iter_chunks(pages, size, overlap))


def iter_chunks(pages: Iterable[Page], size: int, overlap: int) -> Iterator[Chunk]:
    """The chunks of `chunk_pages`, made as the pages arrive.

    Holds one chunk's words and the piece of the page being read, never the document:
    pages are pulled from `pages` only when the next chunk needs their words.
    """
    if size < 1:
        raise ValueError(f"chunk size must be at least 1 character, got {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be between 0 and size - 1 ({size - 1}), got {overlap}")
    words = _Window(_words(pages, size))
    ordinal = 0
    while words.has(0):
        end, page_break = _chunk_end(words, size)
        yield _make_chunk(ordinal, words.first(end))
        ordinal += 1
        if not words.has(end):
            return
        words.drop(end if page_break else _overlap_start(words, end, overlap))


class DocumentChunks:
    """A document's chunks, in batches, made from its pages as they are read.

    Running headers and footers leave the pages first (`strip_repeated_edges`); pages are
    counted against `chunking.max_pages` as they arrive (`too_many_pages` as soon as one
    too many is read), and `on_page` is called for every page or piece read. The time
    spent waiting for pages is kept apart from the rest (chunking). The same code runs in
    the worker and in an extraction child (`IsolatedExtractor.extract_chunks`).
    """

    def __init__(
        self, pages: Iterable[Page], chunking: Chunking, on_page: Callable[[], None] | None = None
    ) -> None:
        self._pages = iter(pages)
        self._chunking = chunking
        self._on_page = on_page
        self.pages = 0
        self.extract_seconds = 0.0

    def batches(self) -> Iterator[ChunkBatch]:
        """Closing this iterator early (or an error) closes the pages' source too, so an
        isolated child stops parsing a document nobody reads."""
        chunking = self._chunking
        chunks = iter_chunks(strip_repeated_edges(self._counted()), chunking.size, chunking.overlap)
        try:
            while batch := list(islice(chunks, chunking.batch)):
                yield ChunkBatch(batch, self.pages, self.extract_seconds)
        finally:
            close: Callable[[], object] | None = getattr(self._pages, "close", None)
            if close is not None:
                close()

    def _counted(self) -> Iterator[Page]:
        number = None
        limit = self._chunking.max_pages
        while True:
            started = time.perf_counter()
            page = next(self._pages, None)
            self.extract_seconds += time.perf_counter() - started
            if page is None:
                return
            if self._on_page is not None:
                self._on_page()
            if page.number != number:  # a new page, not another piece of the same one
                number = page.number
                self.pages += 1
                if self.pages > limit:
                    raise PermanentError(
                        f"the document has more than {limit} pages "
                        "(SHEAF_DOCUMENT_MAX_PAGES); split it into smaller files, or raise "
                        "the limit",
                        code="too_many_pages",
                    )
            yield page


class _Window:
    """The words from the current chunk's start on, read from the stream on demand."""

    def __init__(self, words: Iterator[_Word]) -> None:
        self._words = words
        self.held: list[_Word] = []  # the same list object for the window's whole life

    def has(self, index: int) -> bool:
        """Whether word `index` exists, reading as far as needed to know (and up to
        `READ_AHEAD` words further: one call per word would cost more than the chunking)."""
        if index >= len(self.held):
            self.held.extend(islice(self._words, index + 1 - len(self.held) + READ_AHEAD))
        return index < len(self.held)

    def first(self, count: int) -> list[_Word]:
        return self.held[:count]

    def drop(self, count: int) -> None:
        del self.held[:count]


def _words(pages: Iterable[Page], size: int) -> Iterator[_Word]:
    """Every word with its page and separator; words longer than `size` in pieces.

    Consecutive `Page`s with the same number are one page sent in pieces (`Page`), so a
    word cut by a piece boundary is joined again; a long word is cut as it arrives, and
    at most `size` characters of it are held.
    """
    number: int | None = None
    word, word_separator = "", "\n"  # a word that may go on in the next piece
    separator = "\n"  # joins the next word to the previous one; a page break reads as "\n"
    for page in pages:
        if page.number != number:
            if word:
                yield from _pieces(word, number or 0, word_separator, size)
            number, word, separator = page.number, "", "\n"
        text = page.text
        previous_end = 0
        for match in _WORD.finditer(text):
            if word and match.start() == 0:  # the word of the last piece goes on
                word += match.group()
            else:
                if word:
                    yield from _pieces(word, page.number, word_separator, size)
                    separator = " "
                if "\n" in text[previous_end : match.start()]:
                    separator = "\n"
                word, word_separator, separator = match.group(), separator, " "
            previous_end = match.end()
            while len(word) > size:  # cut from the word's start, as if it were whole
                yield _Word(word[:size], page.number, word_separator)
                word, word_separator = word[size:], " "
            if previous_end < len(text):
                yield from _pieces(word, page.number, word_separator, size)
                word = ""
        if previous_end < len(text):  # the piece ends in white space
            if word:
                yield from _pieces(word, page.number, word_separator, size)
                word = ""
            if "\n" in text[previous_end:]:
                separator = "\n"
    if word:
        yield from _pieces(word, number or 0, word_separator, size)


def _pieces(word: str, page: int, separator: str, size: int) -> Iterator[_Word]:
    for offset in range(0, len(word), size):
        yield _Word(word[offset : offset + size], page, separator)
        separator = " "


def _chunk_end(words: _Window, size: int) -> tuple[int, bool]:
    """Index after the chunk's last word, and whether it stopped at a page break."""
    held = words.held  # indexed directly: this loop runs once per word of the document
    length = len(held[0].text)
    end = 1
    while end < len(held) or words.has(end):
        word = held[end]
        if word.page != held[end - 1].page and length * 2 >= size:
            return end, True
        length += len(word.separator) + len(word.text)
        if length > size:
            break
        end += 1
    return end, False


def _overlap_start(words: _Window, end: int, overlap: int) -> int:
    """Where the next chunk starts: the most trailing words that fit in `overlap`.

    Always after the chunk's start, so every chunk makes progress even when nothing fits.
    """
    held = words.held
    begin = end
    length = -1  # the first word counted has no separator inside the overlap
    while begin - 1 > 0:
        length += len(held[begin - 1].text) + 1
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
