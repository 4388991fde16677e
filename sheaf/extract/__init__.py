"""Text extraction: the `Extractor` port's local implementation.

`LocalExtractor` holds nothing but limits, does no I/O until called and can be pickled,
so the worker can run it in a child process, where a parser that crashes or loops on a
hostile file (bad-inputs.md) takes down only that child. Each format module documents
the `ExtractionError` codes it raises; all of them are permanent failures. Pages without
text (scans, images) are read by OCR (`sheaf.extract.ocr`) under `OcrOptions`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sheaf.domain.models import ContentType, Page
from sheaf.errors import ExtractionError
from sheaf.extract.docx import ZipLimits, extract_docx
from sheaf.extract.html import extract_html
from sheaf.extract.image import extract_image
from sheaf.extract.ocr import OcrOptions
from sheaf.extract.pdf import PdfLimits, extract_pdf
from sheaf.extract.pptx import extract_pptx
from sheaf.extract.scan import ocr_textless_pages
from sheaf.extract.text import extract_text
from sheaf.extract.xlsx import extract_xlsx

__all__ = ["LocalExtractor", "OcrOptions", "PdfLimits", "ZipLimits"]

_IMAGES = frozenset({ContentType.PNG, ContentType.JPEG, ContentType.TIFF})


@dataclass(frozen=True, slots=True)
class LocalExtractor:
    """Dispatch on the content type decided at upload (by magic bytes, never by name)."""

    zip_limits: ZipLimits = field(default_factory=ZipLimits)
    pdf_limits: PdfLimits = field(default_factory=PdfLimits)
    ocr: OcrOptions = field(default_factory=OcrOptions)

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
            yield from ocr_textless_pages(path, extract_pdf(path, self.pdf_limits), self.ocr)
        elif kind is ContentType.DOCX:
            yield from extract_docx(path, self.zip_limits)
        elif kind is ContentType.PPTX:
            yield from extract_pptx(path, self.zip_limits)
        elif kind is ContentType.XLSX:
            yield from extract_xlsx(path, self.zip_limits)
        elif kind is ContentType.HTML:
            yield from extract_html(path)
        elif kind in _IMAGES:
            yield from extract_image(path, self.ocr)
        else:
            yield from extract_text(path)
