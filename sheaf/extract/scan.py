"""OCR for the pages of a PDF that have no text layer (scans, and scans inside mixed PDFs).

`ocr_textless_pages` takes the pages pypdf extracted and passes every page with text
through unchanged; a page without text is rendered with PDFium (pypdfium2) and read by
Tesseract, so page numbers stay exactly the PDF's. A page that renders blank (white) is
not sent to Tesseract at all: nothing to read, and no OCR time spent on empty pages.

More text-less pages than `max_pages` fail the document with `ocr_page_limit`: before any
is read when the pages come as a list, else when the first one over the limit comes.
PDFium is opened only when the first text-less page comes, so a PDF with text on every
page costs nothing extra. A page is rendered at `OcrOptions.dpi`, scaled down as far as
needed to stay under `max_image_pixels` (a poster-sized page is legitimate; a 200-inch
MediaBox at 300 dpi would be a pixel bomb). Error codes: those of `sheaf.extract.ocr`,
plus `corrupt_pdf` when PDFium cannot open or render a file pypdf could read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pypdfium2 as pdfium
from PIL import Image

from sheaf.domain.models import Page
from sheaf.errors import ExtractionError
from sheaf.extract.ocr import OcrOptions, ocr_image, too_many_pages

_POINTS_PER_INCH = 72


def ocr_textless_pages(path: Path, pages: Iterable[Page], options: OcrOptions) -> Iterator[Page]:
    """`pages` in order, each one without text replaced by what OCR reads on it."""
    if not options.enabled:
        yield from pages  # a scan then ends as `no_text`, whose message says to run OCR
        return
    if isinstance(pages, Sequence):  # all known already: refuse before reading any
        textless = sum(1 for page in pages if not page.text.strip())
        if textless > options.max_pages:
            raise too_many_pages(str(textless), options)
    document: pdfium.PdfDocument | None = None
    ocr_count = 0
    try:
        for page in pages:
            if page.text.strip():
                yield page
                continue
            ocr_count += 1
            if ocr_count > options.max_pages:
                raise too_many_pages(f"more than {options.max_pages}", options)
            if document is None:
                document = _open(path)
            yield Page(page.number, _read_page(document, page.number, options))
    finally:
        if document is not None:
            document.close()


def _open(path: Path) -> pdfium.PdfDocument:
    try:
        return pdfium.PdfDocument(path)
    except pdfium.PdfiumError as exc:
        raise _corrupt(f"the renderer cannot open it ({exc})") from exc


def _read_page(document: pdfium.PdfDocument, number: int, options: OcrOptions) -> str:
    image = render_page(document, number, options)
    if _blank(image):
        return ""
    return ocr_image(image, options, number)


def render_page(document: pdfium.PdfDocument, number: int, options: OcrOptions) -> Image.Image:
    """Page `number` (1-based) as a greyscale image at the OCR resolution, or smaller."""
    try:
        page = document[number - 1]
        width, height = page.get_size()
        scale = options.dpi / _POINTS_PER_INCH
        pixels = width * height * scale * scale
        if pixels > options.max_image_pixels:
            scale *= math.sqrt(options.max_image_pixels / pixels)
        bitmap = page.render(scale=scale, grayscale=True)
        image: Image.Image = bitmap.to_pil()
    except (pdfium.PdfiumError, IndexError, ValueError) as exc:
        raise _corrupt(f"page {number} cannot be rendered for OCR ({exc})") from exc
    return image


def _blank(image: Image.Image) -> bool:
    low, _ = image.getextrema()
    return bool(low >= 250)  # type: ignore[operator]


def _corrupt(why: str) -> ExtractionError:
    return ExtractionError(
        f"The PDF cannot be read: {why}. Re-export or repair it (for example by printing it "
        "to a new PDF) and upload again.",
        code="corrupt_pdf",
    )
