"""OCR with the real Tesseract: scans, mixed PDFs, images and multi-page TIFFs read with
exact page numbers, and every way OCR can fail ends in its own named error."""

from __future__ import annotations

import time
from pathlib import Path

import pypdfium2 as pdfium
import pytest
from fpdf import FPDF

from sheaf.domain.models import ContentType, Page
from sheaf.errors import ExtractionError
from sheaf.extract import LocalExtractor, OcrOptions
from sheaf.extract.scan import render_page
from tests.bad_inputs import images
from tests.samples import make_image, make_scanned_pdf

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("tesseract")]


def extract(tmp_path: Path, data: bytes, kind: ContentType, **ocr: object) -> list[Page]:
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    return list(LocalExtractor(ocr=OcrOptions(**ocr)).extract(path, kind))  # type: ignore[arg-type]


def failure(tmp_path: Path, data: bytes, kind: ContentType, **ocr: object) -> ExtractionError:
    with pytest.raises(ExtractionError) as caught:
        extract(tmp_path, data, kind, **ocr)
    assert len(caught.value.message) > 40
    return caught.value


def words(page: Page) -> set[str]:
    return set(page.text.lower().split())


def test_a_scanned_pdf_is_read_page_by_page(tmp_path: Path) -> None:
    data = make_scanned_pdf(["Harbour inspection found rust", "Lighthouse keeper retired"])
    first, second = extract(tmp_path, data, ContentType.PDF)
    assert (first.number, second.number) == (1, 2)
    assert {"harbour", "inspection", "rust"} <= words(first)
    assert {"lighthouse", "keeper", "retired"} <= words(second)


def test_a_mixed_pdf_keeps_its_text_pages_and_reads_its_scans(tmp_path: Path) -> None:
    data = make_scanned_pdf(
        ["Scanned opening page", "Typed middle page", "Scanned closing page"], typed={2}
    )
    pages = extract(tmp_path, data, ContentType.PDF)
    assert [page.number for page in pages] == [1, 2, 3]
    assert pages[1].text == "Typed middle page"  # from the text layer, untouched
    assert {"opening", "page"} <= words(pages[0])
    assert {"closing", "page"} <= words(pages[2])


@pytest.mark.parametrize("format_", ["PNG", "JPEG"])
def test_an_image_is_one_page_of_ocr_text(tmp_path: Path, format_: str) -> None:
    kind = ContentType.PNG if format_ == "PNG" else ContentType.JPEG
    [page] = extract(tmp_path, make_image(["Quarterly tide tables"], format_), kind)
    assert page.number == 1
    assert {"quarterly", "tide", "tables"} <= words(page)


def test_a_multi_page_tiff_is_one_page_per_frame(tmp_path: Path) -> None:
    data = make_image(["Anchor chain", "Rope ladder", "Signal flag"], "TIFF")
    pages = extract(tmp_path, data, ContentType.TIFF)
    assert [page.number for page in pages] == [1, 2, 3]
    assert [sorted(words(page)) for page in pages] == [
        ["anchor", "chain"],
        ["ladder", "rope"],
        ["flag", "signal"],
    ]


def test_with_ocr_off_images_fail_and_scans_stay_empty(tmp_path: Path) -> None:
    error = failure(tmp_path, make_image(["words"]), ContentType.PNG, enabled=False)
    assert error.code == "ocr_disabled"
    assert "SHEAF_OCR_ENABLED" in error.message
    pages = extract(tmp_path, make_scanned_pdf(["words"]), ContentType.PDF, enabled=False)
    assert pages == [Page(1, "")]  # the pipeline then fails it as `no_text`


def test_without_tesseract_ocr_fails_naming_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a directory without a tesseract program
    error = failure(tmp_path, make_scanned_pdf(["words"]), ContentType.PDF)
    assert error.code == "ocr_unavailable"
    assert "apt-get install tesseract-ocr" in error.message


def test_a_language_without_data_is_ocr_unavailable(tmp_path: Path) -> None:
    error = failure(tmp_path, make_image(["words"]), ContentType.PNG, languages="xqz")
    assert (error.code, "SHEAF_OCR_LANGUAGES" in error.message) == ("ocr_unavailable", True)


def test_a_page_over_its_time_limit_fails_as_timeout(tmp_path: Path) -> None:
    started = time.monotonic()
    error = failure(tmp_path, make_image(["words"] * 3), ContentType.PNG, page_timeout_seconds=0.01)
    assert error.code == "timeout"
    assert "SHEAF_OCR_PAGE_TIMEOUT_SECONDS" in error.message
    assert time.monotonic() - started < 5


def test_more_pages_to_ocr_than_the_cap_fail_before_reading_past_it(tmp_path: Path) -> None:
    """Pages stream, so the cap is met while reading: the page past it is never OCR'd."""
    data = make_scanned_pdf(["one", "two", "three", "four"], typed={2})
    assert len(extract(tmp_path, data, ContentType.PDF, max_pages=3)) == 4  # typed pages free
    error = failure(tmp_path, data, ContentType.PDF, max_pages=2)
    assert error.code == "ocr_page_limit"
    assert "more than 2 pages that need OCR" in error.message


BAD_IMAGES = {
    "31-png-pixel-bomb": (images.png_pixel_bomb, ContentType.PNG, "image_too_large"),
    "31-tiff-pixel-bomb": (images.tiff_pixel_bomb, ContentType.TIFF, "image_too_large"),
    "32-truncated-png": (images.truncated_png, ContentType.PNG, "corrupt_image"),
    "32-truncated-jpeg": (images.truncated_jpeg, ContentType.JPEG, "corrupt_image"),
    "32-tiff-10000-frames": (images.tiff_with_frames, ContentType.TIFF, "ocr_page_limit"),
}


@pytest.mark.parametrize(("make", "kind", "code"), BAD_IMAGES.values(), ids=BAD_IMAGES)
def test_bad_images_are_refused_by_name(
    tmp_path: Path, make: images.Maker, kind: ContentType, code: str
) -> None:
    started = time.monotonic()
    assert failure(tmp_path, make(), kind).code == code
    assert time.monotonic() - started < 5  # refused from headers, nothing big decoded


def test_a_huge_pdf_page_is_rendered_within_the_pixel_limit(tmp_path: Path) -> None:
    pdf = FPDF(format=(5000, 5000))  # 5 x 5 metres: 3.5 billion pixels at 300 dpi
    pdf.add_page()
    path = tmp_path / "poster.pdf"
    path.write_bytes(bytes(pdf.output()))
    document = pdfium.PdfDocument(path)
    try:
        image = render_page(document, 1, OcrOptions(max_image_pixels=4_000_000))
    finally:
        document.close()
    width, height = image.size
    assert 3_900_000 < width * height <= 4_000_000
