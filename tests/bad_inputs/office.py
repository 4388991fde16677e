"""Hostile, broken and tricky PPTX, XLSX and HTML (bad-inputs.md #34, #35), built from
real files that python-pptx and openpyxl wrote."""

from __future__ import annotations

import io
import random
from collections.abc import Callable

import pptx
from pptx.util import Inches

from tests.bad_inputs.docx import SECRET_FILE
from tests.samples import make_docx, make_pptx, make_xlsx, rezip_docx

Maker = Callable[[], bytes]
TEXT = "Harbour ledger"
_SHEET = "xl/worksheets/sheet1.xml"
_SLIDE = "ppt/slides/slide1.xml"
_WORDS = ["ledger", "audit", "asset", "accrual", "lease", "harbour", "pier", "tide"]


def healthy_pptx(text: str = TEXT) -> bytes:
    return make_pptx([(text, "slide body")])


def healthy_xlsx(text: str = TEXT) -> bytes:
    return make_xlsx({"Sheet1": [[text, 1]]})


def _sheet_xml(cells: str, doctype: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>{doctype}'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        f'<sheetData><row r="1">{cells}</row></sheetData></worksheet>'
    ).encode()


def xlsx_with_cached_formula() -> bytes:
    """B1 holds =A1*2 with the value 42 that Excel cached when it saved the file."""
    cells = '<c r="A1"><v>21</v></c><c r="B1"><f>A1*2</f><v>42</v></c>'
    return rezip_docx(healthy_xlsx(), {_SHEET: _sheet_xml(cells)})


def pptx_with_table_and_group() -> bytes:
    deck = pptx.Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[6])  # blank
    table = slide.shapes.add_table(2, 2, Inches(1), Inches(1), Inches(4), Inches(1)).table
    for (row, col), text in {(0, 0): "Quarter", (0, 1): "Revenue", (1, 0): "Q1"}.items():
        table.cell(row, col).text = text
    table.cell(1, 1).text = "100"
    group = slide.shapes.add_group_shape()
    group.shapes.add_textbox(Inches(1), Inches(3), Inches(2), Inches(1)).text = "grouped words"
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def pptx_zip_bomb() -> bytes:
    """A 100 MB member of zeros, deflated to ~100 KB (ratio ~1000:1)."""
    return rezip_docx(healthy_pptx(), {"ppt/media/image1.bin": bytes(100 * 1024 * 1024)})


def xlsx_zip_bomb() -> bytes:
    """The sheet itself inflates to 150 MB: a million-row sheet of one repeated cell."""
    row = '<row><c t="inlineStr"><is><t>x</t></is></c></row>'
    sheet = _sheet_xml("").replace(b'<row r="1"></row>', (row * 3_000_000).encode())
    return rezip_docx(healthy_xlsx(), {_SHEET: sheet})


def xlsx_external_entity() -> bytes:
    """A cell whose inline string is an external entity that would read a local file."""
    doctype = f'<!DOCTYPE worksheet [<!ENTITY xxe SYSTEM "file://{SECRET_FILE}">]>'
    cells = '<c r="A1" t="inlineStr"><is><t>&xxe;</t></is></c>'
    return rezip_docx(healthy_xlsx(), {_SHEET: _sheet_xml(cells, doctype)})


def xlsx_entity_expansion() -> bytes:
    """The billion-laughs chain in a sheet: 10^9 'lol's if expanded."""
    chain = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    doctype = f'<!DOCTYPE worksheet [<!ENTITY l0 "lol">{chain}]>'
    cells = '<c r="A1" t="inlineStr"><is><t>&l9;</t></is></c>'
    return rezip_docx(healthy_xlsx(), {_SHEET: _sheet_xml(cells, doctype)})


def pptx_external_entity() -> bytes:
    """The slide part declares an external entity (UTF-16, to dodge a naive byte search)."""
    with_doctype = _slide_xml().replace(
        b"?>", f'?><!DOCTYPE p:sld [<!ENTITY xxe SYSTEM "file://{SECRET_FILE}">]>'.encode(), 1
    )
    text = with_doctype.decode("utf-8").replace('encoding="UTF-8"', 'encoding="UTF-16"')
    return rezip_docx(healthy_pptx(), {_SLIDE: text.encode("utf-16")})


def _slide_xml() -> bytes:
    import zipfile

    with zipfile.ZipFile(io.BytesIO(healthy_pptx())) as archive:
        return archive.read(_SLIDE)


_PPTM_TYPES = b"application/vnd.ms-powerpoint.presentation.macroEnabled.main+xml"
_PPTX_TYPES = b"application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml"
_XLSM_TYPES = b"application/vnd.ms-excel.sheet.macroEnabled.main+xml"
_XLSX_TYPES = b"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"


def _retyped(data: bytes, old: bytes, new: bytes) -> bytes:
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        types = archive.read("[Content_Types].xml")
    return rezip_docx(data, {"[Content_Types].xml": types.replace(old, new)})


def pptm() -> bytes:
    """A macro-enabled presentation (.pptm) renamed .pptx."""
    return _retyped(healthy_pptx(), _PPTX_TYPES, _PPTM_TYPES)


def xlsm() -> bytes:
    """A macro-enabled workbook (.xlsm) renamed .xlsx."""
    return _retyped(healthy_xlsx(), _XLSX_TYPES, _XLSM_TYPES)


def docx_as_xlsx() -> bytes:
    """A Word document that reached the XLSX extractor: its content types say so."""
    return make_docx([TEXT])


def xlsx_bad_crc() -> bytes:
    """One stored byte changed after the CRC was computed."""
    return rezip_docx(healthy_xlsx("integrity matters"), {}, stored=True).replace(
        b"integrity matters", b"integrity MATTERS"
    )


def pptx_truncated() -> bytes:
    data = healthy_pptx()
    return data[: len(data) // 2]


def html_one_line(size: int = 50 * 1024 * 1024) -> bytes:
    """#35: an HTML page of `size` bytes without one line break: a single paragraph."""
    words = " ".join(random.Random(35).choices(_WORDS, k=4096)).encode() + b" "
    body = words * (size // len(words) + 1)
    return b"<!DOCTYPE html><html><body><p>" + body[:size] + b"</p></body></html>"


def html_deeply_nested(depth: int) -> bytes:
    """#35: `depth` nested <div>s around a word, with one word before them."""
    return b"<html><body><p>top</p>" + b"<div>" * depth + b"deep" + b"</div>" * depth + b"</body>"
