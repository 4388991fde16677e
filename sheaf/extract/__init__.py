"""Text extraction: the `Extractor` port's local implementation.

`LocalExtractor` holds nothing but limits, does no I/O until called and can be pickled,
so the worker can run it in a child process, where a parser that crashes or loops on a
hostile file (bad-inputs.md) takes down only that child. Each format module documents
the `ExtractionError` codes it raises; all of them are permanent failures.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sheaf.domain.models import ContentType, Page
from sheaf.errors import ExtractionError
from sheaf.extract.docx import ZipLimits, extract_docx
from sheaf.extract.pdf import PdfLimits, extract_pdf
from sheaf.extract.text import extract_text

__all__ = ["LocalExtractor", "PdfLimits", "ZipLimits"]


@dataclass(frozen=True, slots=True)
class LocalExtractor:
    """Dispatch on the content type decided at upload (by magic bytes, never by name)."""

    zip_limits: ZipLimits = field(default_factory=ZipLimits)
    pdf_limits: PdfLimits = field(default_factory=PdfLimits)

    def extract(self, path: Path, content_type: str) -> Iterator[Page]:
        """Pages of text as they are read; raises `ExtractionError` (while iterating) for
        files that can never be read."""
        try:
            kind = ContentType(content_type)
        except ValueError as exc:
            raise ExtractionError(
                f"Sheaf cannot extract text from content type {content_type!r}.",
                code="unsupported_type",
            ) from exc
        if kind is ContentType.PDF:
            yield from extract_pdf(path, self.pdf_limits)
        elif kind is ContentType.DOCX:
            yield from extract_docx(path, self.zip_limits)
        else:
            yield from extract_text(path)
