"""DOCX text with python-docx, after the zip directory has been judged safe to open.

python-docx reads every part of the package fully into memory, so a zip bomb would be
inflated before any of our code sees a paragraph (bad-inputs.md #14). `check_package`
refuses the file from the zip directory alone (`sheaf.extract.ooxml`, shared with PPTX and
XLSX), reading no member data except the small `[Content_Types].xml`.

Error codes the caller may rely on:

    zip_bomb      too many entries, too much uncompressed data, or an entry that
                  compresses implausibly well
    corrupt_docx  not a readable zip, a CRC mismatch, or malformed XML inside
    not_a_docx    a zip that is not a Word document, or a macro-enabled one (.docm)

The text is the body's paragraphs and tables in document order, as a single page 1
(DOCX has no fixed pages). Table rows become cells joined by " | ". Headers, footers,
footnotes and comments are left out: they repeat or annotate, they do not carry the body.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import docx
from docx.opc.exceptions import PackageNotFoundError
from docx.table import Table
from docx.text.paragraph import Paragraph

from sheaf.domain.models import Page
from sheaf.errors import ExtractionError
from sheaf.extract.ooxml import CONTENT_TYPES, ZipLimits, check_sizes, content_types
from sheaf.extract.text import clean_text

__all__ = ["ZipLimits", "check_package", "extract_docx"]

_WORD_MAIN = b"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
_MACRO_MAIN = b"application/vnd.ms-word.document.macroEnabled.main+xml"


def extract_docx(path: Path, limits: ZipLimits | None = None) -> list[Page]:
    """The document body as page 1, after `check_package` accepted the zip."""
    check_package(path, limits or ZipLimits())
    try:
        document = docx.Document(str(path))
        blocks = [_block_text(block) for block in document.iter_inner_content()]
    except (zipfile.BadZipFile, zlib.error, SyntaxError, EOFError) as exc:
        raise _corrupt(exc) from exc  # lxml's XMLSyntaxError is a SyntaxError
    except (PackageNotFoundError, KeyError, ValueError) as exc:
        raise _not_a_docx("its Word parts are missing or of the wrong type") from exc
    text = "\n".join(block for block in blocks if block)
    return [Page(number=1, text=clean_text(text))]


def check_package(path: Path, limits: ZipLimits) -> None:
    """Refuse bombs, broken zips and non-Word packages from the directory alone."""
    try:
        with zipfile.ZipFile(path) as archive:
            check_sizes(archive.infolist(), limits, "DOCX")
            _check_content_types(archive)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise _corrupt(exc) from exc


def _check_content_types(archive: zipfile.ZipFile) -> None:
    """The package must declare a Word main document, and not a macro-enabled one."""
    declared = content_types(archive)
    if declared is None:
        raise _not_a_docx(f"it is a ZIP archive without a plausible {CONTENT_TYPES}")
    if _MACRO_MAIN in declared:
        raise _not_a_docx("it is a macro-enabled Word document (.docm); save it as .docx")
    if _WORD_MAIN not in declared:
        raise _not_a_docx("it is an Office file of another kind (Excel, PowerPoint, ...)")


def _block_text(block: Paragraph | Table) -> str:
    if isinstance(block, Paragraph):
        return block.text
    return "\n".join(_row_text(row.cells) for row in block.rows)


def _row_text(cells: list[docx.table._Cell]) -> str:
    """A row's cells joined by " | "; a merged cell, repeated by python-docx, counts once."""
    texts: list[str] = []
    previous = None
    for cell in cells:
        if cell._tc is not previous:
            texts.append(" ".join(cell.text.split()))
        previous = cell._tc
    return " | ".join(texts)


def _corrupt(exc: Exception) -> ExtractionError:
    return ExtractionError(
        f"The DOCX is damaged and cannot be read ({type(exc).__name__}: {str(exc)[:200]}). "
        "Open it in Word, save a new copy, and upload that.",
        code="corrupt_docx",
    )


def _not_a_docx(why: str) -> ExtractionError:
    return ExtractionError(f"The file is not a Word .docx document: {why}.", code="not_a_docx")
