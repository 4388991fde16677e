"""Generated corpora: real PDF, DOCX and text files, deterministic, every one unique.

Text is drawn from a seeded pseudo-vocabulary, so no two documents (and almost no two
chunks) share text: Sheaf's embedding cache, which reuses the vectors of chunk text it has
seen, would otherwise give it an edge the bare loop does not have.

PDFs are written with fpdf2 one line at a time (`FPDF.text`), about 45 lines of 12 words a
page, like a dense report; `tests.samples.make_pdf` wraps text with `multi_cell`, which is
fifty times slower to generate and would dominate a quick run. DOCX files come from
`tests.samples.make_docx` (python-docx), as in the tests.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from fpdf import FPDF

from sheaf.domain.models import ContentType
from tests.samples import make_docx

LINES_PER_PAGE = 45
WORDS_PER_LINE = 12


@dataclass(frozen=True, slots=True)
class CorpusFile:
    path: Path
    content_type: ContentType
    pages: int  # what the extractor will report: PDF pages, else 1


class _Writer:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        letters = "abcdefghijklmnopqrstuvwxyz"
        self.vocabulary = [
            "".join(self.rng.choice(letters) for _ in range(self.rng.randint(3, 10)))
            for _ in range(5000)
        ]

    def words(self, count: int) -> str:
        return " ".join(self.rng.choices(self.vocabulary, k=count))

    def pdf(self, pages: int) -> bytes:
        pdf = FPDF()
        pdf.set_font("Helvetica", size=11)
        for _ in range(pages):
            pdf.add_page()
            for line in range(LINES_PER_PAGE):
                pdf.text(15, 20 + 5.8 * line, self.words(WORDS_PER_LINE))
        return bytes(pdf.output())

    def docx(self, paragraphs: int) -> bytes:
        return make_docx([self.words(120) for _ in range(paragraphs)])

    def text(self, words: int) -> bytes:
        lines = [self.words(WORDS_PER_LINE) for _ in range(max(1, words // WORDS_PER_LINE))]
        return ("\n".join(lines) + "\n").encode()


def pdf_heavy(directory: Path, documents: int, seed: int = 1) -> list[CorpusFile]:
    """70% multi-page PDFs (4-20 pages), 20% DOCX, 10% text files of a few pages' worth."""
    writer = _Writer(seed)
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for n in range(documents):
        kind = n % 10
        if kind < 7:
            pages = writer.rng.randint(4, 20)
            files.append(
                _save(directory / f"{n:05d}.pdf", writer.pdf(pages), ContentType.PDF, pages)
            )
        elif kind < 9:
            data = writer.docx(paragraphs=12)
            files.append(_save(directory / f"{n:05d}.docx", data, ContentType.DOCX, 1))
        else:
            data = writer.text(words=1500)
            files.append(_save(directory / f"{n:05d}.txt", data, ContentType.TEXT, 1))
    return files


def tiny_text(directory: Path, documents: int, seed: int = 2) -> list[CorpusFile]:
    """Text files of about 40 words: one chunk each, so the pipeline's fixed cost shows."""
    writer = _Writer(seed)
    directory.mkdir(parents=True, exist_ok=True)
    return [
        _save(directory / f"{n:05d}.txt", writer.text(words=40), ContentType.TEXT, 1)
        for n in range(documents)
    ]


def _save(path: Path, data: bytes, content_type: ContentType, pages: int) -> CorpusFile:
    path.write_bytes(data)
    return CorpusFile(path, content_type, pages)


def large_pdf(path: Path, pages: int, seed: int = 3) -> CorpusFile:
    """One PDF of `pages` pages of prose (about 40 lines of 12 words each)."""
    return _save(path, _Writer(seed).pdf(pages), ContentType.PDF, pages)


def text_corpus(directory: Path, documents: int, words: int, seed: int = 5) -> list[CorpusFile]:
    """`documents` text files of about `words` words each."""
    writer = _Writer(seed)
    directory.mkdir(parents=True, exist_ok=True)
    return [
        _save(directory / f"{n:05d}.txt", writer.text(words), ContentType.TEXT, 1)
        for n in range(documents)
    ]
