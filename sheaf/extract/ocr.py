"""OCR of page images with Tesseract, run as a program, one page at a time.

Tesseract is called directly (`tesseract FILE stdout`), not through a wrapper library:
a wrapper adds temporary files and nothing Sheaf needs, while a direct call gives exact
control of the per-page time limit and of the process's lifetime. Tesseract opens the
page itself, as `/dev/fd/N` of a descriptor it inherits, and the text comes back on
stdout. Two ways in:

    ocr_file    an encoded image (PNG, JPEG) whose header the caller has checked, open
                on a descriptor: Tesseract reads the original file, unchanged; nothing
                is decoded or copied in Python
    ocr_image   pixels already decoded (a rendered PDF page, a TIFF frame): written once
                as an uncompressed TIFF into an anonymous in-memory file (`memfd`, gone
                with the last process that holds it, so a killed child leaves nothing)

Not stdin: Tesseract reads stdin a character at a time, and a 300-dpi page as an 8 MB
PGM there took it 0.1-0.2 s more CPU than the same pixels read from a file.

Limits, so OCR stays inside the extraction child's budget (`sheaf.extract.isolated`):
Tesseract inherits the child's address-space limit; each page has its own time limit; a
Tesseract process dies with the child that started it (`PR_SET_PDEATHSIG`), so a child
killed for overrunning the document's time limit leaves no OCR running; and it runs one
thread (`OMP_THREAD_LIMIT=1`): a worker already runs documents side by side, and extra
threads per page only fight them for the cores.

Error codes the caller may rely on (all permanent):

    ocr_unavailable  no OCR engine is installed (install Debian's `tesseract-ocr`) or
                     the configured language data is missing
    ocr_disabled     the document can only be read by OCR and SHEAF_OCR_ENABLED is false
    timeout          OCR of one page took longer than SHEAF_OCR_PAGE_TIMEOUT_SECONDS
    ocr_failed       Tesseract could not read a page (its message is quoted)
    ocr_page_limit   more pages need OCR than SHEAF_OCR_MAX_PAGES
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass

from PIL import Image

from sheaf.errors import ExtractionError
from sheaf.extract.text import clean_text

_PR_SET_PDEATHSIG = 1
_INSTALL = (
    "Install Tesseract on the workers (Debian/Ubuntu: `apt-get install tesseract-ocr`, "
    "plus `tesseract-ocr-LANG` for languages other than English), then retry the "
    "document with `sheaf failed retry`."
)


@dataclass(frozen=True, slots=True)
class OcrOptions:
    """How pages without text are read; picklable, so it travels to extraction children."""

    enabled: bool = True
    languages: str = "eng"  # Tesseract's -l: "eng", "deu+eng", ...
    dpi: int = 300  # PDF pages are rendered at this resolution
    page_timeout_seconds: float = 30.0
    max_pages: int = 500  # pages of one document that may need OCR
    max_image_pixels: int = 100_000_000  # per page or frame; checked before decoding


def ocr_file(fd: int, options: OcrOptions, page: int) -> str:
    """The text Tesseract reads on the image file open on descriptor `fd` (page `page` of
    its document), as the file is: the caller has checked its size and that it is whole."""
    return _tesseract(fd, options, page)


def ocr_image(image: Image.Image, options: OcrOptions, page: int) -> str:
    """The text Tesseract reads on `image`, which is page `page` of its document."""
    if image.mode not in ("L", "RGB"):
        image = image.convert("L" if image.mode in ("1", "I", "I;16", "F") else "RGB")
    fd = os.memfd_create("sheaf-ocr-page")
    try:
        with os.fdopen(os.dup(fd), "wb") as out:
            image.save(out, format="TIFF")  # uncompressed: nothing to encode or inflate
        return _tesseract(fd, options, page)
    finally:
        os.close(fd)


def _tesseract(fd: int, options: OcrOptions, page: int) -> str:
    binary = shutil.which("tesseract")
    if binary is None:
        raise ExtractionError(
            f"This document needs OCR (page {page} has no text layer) but no OCR engine is "
            f"installed. {_INSTALL}",
            code="ocr_unavailable",
        )
    source = f"/dev/fd/{fd}"  # opened afresh by Tesseract: its own offset, from the start
    command = [binary, source, "stdout", "-l", options.languages, "--dpi", str(options.dpi)]
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=options.page_timeout_seconds,
            env={"OMP_THREAD_LIMIT": "1"},
            pass_fds=(fd,),
            preexec_fn=_die_with_parent,  # safe here: the child holds no locks while forking
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ExtractionError(
            f"OCR of page {page} took longer than {options.page_timeout_seconds:g} s, so it "
            "was stopped (the image may be too complex or noisy). Upload a cleaner scan, or "
            "raise SHEAF_OCR_PAGE_TIMEOUT_SECONDS.",
            code="timeout",
        ) from exc
    if done.returncode != 0:
        raise _failed(page, done.stderr.decode("utf-8", "replace"), options)
    return clean_text(done.stdout.decode("utf-8", "replace")).strip()


def ocr_refused(page: int) -> ExtractionError:
    """The error for a document that only OCR could read while OCR is turned off."""
    return ExtractionError(
        f"Page {page} of this document is an image without a text layer, and OCR is turned "
        "off (SHEAF_OCR_ENABLED=false). Turn it on, or upload a file that has text.",
        code="ocr_disabled",
    )


def too_many_pages(count: str, options: OcrOptions) -> ExtractionError:
    return ExtractionError(
        f"The document has {count} pages that need OCR (limit {options.max_pages}, "
        "SHEAF_OCR_MAX_PAGES). Split it into smaller files and upload those.",
        code="ocr_page_limit",
    )


def _die_with_parent() -> None:
    """In the forked Tesseract, before exec: be SIGKILLed when our parent dies."""
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _failed(page: int, stderr: str, options: OcrOptions) -> ExtractionError:
    if "Failed loading language" in stderr or "Error opening data file" in stderr:
        return ExtractionError(
            f"OCR cannot run: Tesseract has no language data for {options.languages!r} "
            f"(SHEAF_OCR_LANGUAGES). {_INSTALL}",
            code="ocr_unavailable",
        )
    return ExtractionError(
        f"OCR could not read page {page} (Tesseract: {stderr.strip()[-300:]}). The image "
        "may be damaged: re-scan or re-export it and upload it again.",
        code="ocr_failed",
    )
