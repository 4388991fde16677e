"""XLSX text with openpyxl: each worksheet is a page, numbered by its tab position.

openpyxl's read-only mode streams a sheet's rows from the zip instead of building every
cell in memory, and `data_only` gives each formula cell the value Excel cached when it
last saved the file (what the user saw), never the formula text. A sheet's page starts
with the sheet's name, then one line per row with its non-empty cells joined by " | ".
Chart sheets have no cells: their tab position stays reserved, so page N is always the
Nth tab. A workbook of a million formula cells is bounded by the extraction child's time
and memory limits (bad-inputs.md #34).

The package is checked first (`sheaf.extract.ooxml.check_package`: zip bombs,
DOCTYPE/entities, macro-enabled .xlsm). Error codes: `zip_bomb`, `unsafe_xml`,
`corrupt_xlsx`, `not_an_xlsx`.
"""

from __future__ import annotations

import warnings
import zipfile
import zlib
from collections.abc import Iterator
from datetime import date, datetime, time
from pathlib import Path

import openpyxl
from openpyxl.utils.exceptions import InvalidFileException

from sheaf.domain.models import Page
from sheaf.extract.ooxml import OfficeFormat, ZipLimits, check_package
from sheaf.extract.text import clean_text

XLSX = OfficeFormat(
    kind="XLSX",
    application="Excel",
    main_type=b"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml",
    macro_type=b"application/vnd.ms-excel.sheet.macroEnabled.main+xml",
    corrupt_code="corrupt_xlsx",
    wrong_code="not_an_xlsx",
)
_FAILURES: tuple[type[Exception], ...] = (zipfile.BadZipFile, zlib.error, SyntaxError, EOFError)
_FAILURES += (KeyError, ValueError, TypeError, IndexError, AttributeError, InvalidFileException)


def extract_xlsx(path: Path, limits: ZipLimits | None = None) -> Iterator[Page]:
    """One page per worksheet, numbered by tab position, after the package checks."""
    check_package(path, limits or ZipLimits(), XLSX)
    # A file object, not the path: openpyxl judges a path by its extension, and ours has
    # none (the content decided the type). Read-only mode reads it until `close`.
    with path.open("rb") as file, warnings.catch_warnings():
        # openpyxl warns about features it drops (data validation, conditional styles...);
        # none of them carries text, and a warning must not fail the document.
        warnings.simplefilter("ignore", UserWarning)
        try:
            workbook = openpyxl.load_workbook(file, read_only=True, data_only=True)
        except _FAILURES as exc:
            raise XLSX.corrupt(exc) from exc
        try:
            yield from _sheets(workbook)
        finally:
            workbook.close()


def _sheets(workbook: openpyxl.Workbook) -> Iterator[Page]:
    for number, name in enumerate(workbook.sheetnames, start=1):
        sheet = workbook[name]
        if not hasattr(sheet, "iter_rows"):
            continue  # a chart sheet
        try:
            rows = [_row_text(row) for row in sheet.iter_rows(values_only=True)]
        except _FAILURES as exc:
            raise XLSX.corrupt(exc) from exc
        text = "\n".join([sheet.title, *(row for row in rows if row)])
        yield Page(number=number, text=clean_text(text))


def _row_text(row: tuple[object, ...]) -> str:
    return " | ".join(_cell_text(value) for value in row if value is not None and value != "")


def _cell_text(value: object) -> str:
    if isinstance(value, datetime) and value.time() == time(0):
        return value.date().isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return " ".join(str(value).split())
