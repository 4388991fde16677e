"""PDF text, page by page, with pypdf; every failure becomes a permanent `ExtractionError`.

Error codes the caller may rely on (they become the document's `error_code`):

    not_a_pdf           empty file, or no `%PDF-` header in the first 1024 bytes
    pdf_too_large       more bytes or pages than `PdfLimits` allows; checked before any
                        page is parsed
    encrypted           needs a password to open; reported at once, never retried
    corrupt_pdf         pypdf cannot parse the file or one of its pages (truncated, broken
                        xref, malformed objects); the message names the page when known
    pdf_limit_exceeded  pypdf's safety limits tripped (decompression bomb and the like)

Decisions:

- A PDF encrypted with only an *owner* password opens without one in every reader (the
  user password is empty; only permissions are restricted), so it is extracted normally.
  Only a PDF that really needs a password is `encrypted`.
- A PDF without a text layer (a scan) is NOT an error here: its pages come back with
  empty text. Whether zero text means "completed with zero chunks" or "failed" is the
  caller's policy, decided once where the chunks are counted, not hidden in the parser.
- pypdf reports what it recognises as its own errors and the rest of malformed input as
  built-in exceptions (KeyError, ValueError, ...), so those are translated too. OS
  errors are not: a missing or unreadable local file is Sheaf's problem, not the PDF's.
- Crashes and endless loops on hostile files (bad-inputs.md #1-#10) are bounded by the
  caller, which runs extraction in a child process under a time limit.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pypdf import PageObject, PasswordType, PdfReader
from pypdf.errors import DependencyError, LimitReachedError, PyPdfError

from sheaf.domain.models import Page
from sheaf.errors import ExtractionError
from sheaf.extract.text import clean_text

_HEADER_WINDOW = 1024
_PARSE_FAILURES: tuple[type[Exception], ...] = (
    PyPdfError,
    AssertionError,
    AttributeError,
    IndexError,
    KeyError,
    RecursionError,
    TypeError,
    ValueError,
    struct.error,
    zlib.error,
)


@dataclass(frozen=True, slots=True)
class PdfLimits:
    """What a PDF may be before Sheaf refuses to parse it."""

    max_bytes: int = 100 * 1024 * 1024
    max_pages: int = 10_000


def extract_pdf(path: Path, limits: PdfLimits | None = None) -> Iterator[Page]:
    """One `Page` per PDF page, numbered from 1, each as soon as it is read; text may be
    empty (see module doc). Size, page count and encryption are checked before page 1."""
    limits = limits or PdfLimits()
    _check_header(path, limits)
    reader = _open(path)
    try:
        pages = reader.pages
        if len(pages) > limits.max_pages:
            raise _too_large(f"it has {len(pages)} pages (limit {limits.max_pages})")
        for number, page in enumerate(pages, start=1):
            yield _page_text(page, number)
    except ExtractionError:
        raise
    except LimitReachedError as exc:
        raise _limit_exceeded(exc) from exc
    except _PARSE_FAILURES as exc:
        raise _corrupt("its page tree cannot be read", exc) from exc


def _check_header(path: Path, limits: PdfLimits) -> None:
    """Reject non-PDFs and oversized files before pypdf tries (and slowly fails) to parse them."""
    with path.open("rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size > limits.max_bytes:
            raise _too_large(f"it is {size} bytes (limit {limits.max_bytes})")
        head = file.read(_HEADER_WINDOW + 4)
    if not head:
        raise ExtractionError("The PDF file is empty (0 bytes).", code="not_a_pdf")
    if b"%PDF-" not in head:
        raise ExtractionError(
            "The file is not a PDF: it has no %PDF- header in its first 1024 bytes.",
            code="not_a_pdf",
        )


def _open(path: Path) -> PdfReader:
    """Parse the file structure and refuse a password-protected file before any page."""
    try:
        reader = PdfReader(path, strict=False)
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise _encrypted()
    except (DependencyError, NotImplementedError) as exc:
        raise _encrypted() from exc  # an encryption scheme we cannot open
    except LimitReachedError as exc:
        raise _limit_exceeded(exc) from exc
    except _PARSE_FAILURES as exc:
        raise _corrupt("it is truncated or damaged", exc) from exc
    return reader


def _page_text(page: PageObject, number: int) -> Page:
    """Text of one page; a failure names the page so the reader can find it."""
    try:
        text = page.extract_text()
    except LimitReachedError:
        raise
    except _PARSE_FAILURES as exc:
        raise _corrupt(f"page {number} cannot be read", exc) from exc
    return Page(number=number, text=clean_text(text))


def _encrypted() -> ExtractionError:
    return ExtractionError(
        "The PDF is password-protected. Remove the password (print or save an unprotected "
        "copy) and upload it again.",
        code="encrypted",
    )


def _corrupt(what: str, exc: Exception) -> ExtractionError:
    return ExtractionError(
        f"The PDF cannot be read: {what} ({type(exc).__name__}: {str(exc)[:200]}). "
        "Re-export or repair it (for example by printing it to a new PDF) and upload again.",
        code="corrupt_pdf",
    )


def _too_large(why: str) -> ExtractionError:
    return ExtractionError(
        f"The PDF is too large to process: {why}. Split it into smaller files and upload those.",
        code="pdf_too_large",
    )


def _limit_exceeded(exc: Exception) -> ExtractionError:
    return ExtractionError(
        f"The PDF exceeds a safety limit of the PDF parser ({exc}); it may be a "
        "decompression bomb. Re-export it without oversized embedded content.",
        code="pdf_limit_exceeded",
    )
