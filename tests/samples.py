"""Small, real sample documents built in memory, for any test that needs a file.

Each generator returns the bytes of a genuine file of its kind (fpdf2 for PDF,
python-docx for DOCX, python-pptx, openpyxl, Pillow for images and scans), so the code
under test meets what users upload rather than a hand-written imitation. Helpers for
broken variants live next to the healthy ones.
"""

from __future__ import annotations

import codecs
import io
import zipfile
from collections.abc import Collection

import docx
import openpyxl
import pptx
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFont
from pypdf import PdfReader, PdfWriter


def make_pdf(pages: list[str]) -> bytes:
    """A PDF with one page per string, each holding that string as real text."""
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for text in pages:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


def encrypt_pdf(data: bytes, user_password: str, owner_password: str | None = None) -> bytes:
    """The same PDF encrypted (AES-256); an empty `user_password` opens without asking."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password, owner_password, algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def make_docx(paragraphs: list[str], table: list[list[str]] | None = None) -> bytes:
    """A DOCX with the paragraphs in order; `table` (rows of cells), if given, sits
    between the first half of the paragraphs and the rest, e.g. [a, b] → a, table, b."""
    document = docx.Document()
    split = (len(paragraphs) + 1) // 2
    for text in paragraphs[:split]:
        document.add_paragraph(text)
    if table:
        grid = document.add_table(rows=len(table), cols=max(len(row) for row in table))
        for row_cells, row in zip(grid.rows, table, strict=True):
            for cell, text in zip(row_cells.cells, row, strict=False):
                cell.text = text
    for text in paragraphs[split:]:
        document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def make_utf16_text(text: str, *, big_endian: bool = False) -> bytes:
    """UTF-16 text with its byte-order mark, as Windows tools like to write it."""
    if big_endian:
        return codecs.BOM_UTF16_BE + text.encode("utf-16-be")
    return codecs.BOM_UTF16_LE + text.encode("utf-16-le")


def make_zip(members: dict[str, bytes], *, stored: bool = False) -> bytes:
    """A zip of the given members (deflated unless `stored`)."""
    out = io.BytesIO()
    method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(out, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def rezip_docx(data: bytes, replace: dict[str, bytes], *, stored: bool = False) -> bytes:
    """A copy of a DOCX package with some members replaced or added."""
    with zipfile.ZipFile(io.BytesIO(data)) as source:
        members = {info.filename: source.read(info) for info in source.infolist()}
    return make_zip(members | replace, stored=stored)


def render_text(lines: list[str], *, dpi: int = 200) -> Image.Image:
    """A white letter-width page with `lines` in black at about 16 pt, as a scanner sees it."""
    width = int(8.5 * dpi)
    line_height = dpi // 3
    page = Image.new("L", (width, max(line_height * (len(lines) + 2), dpi)), 255)
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=dpi // 5)  # Pillow's bundled TrueType font
    for n, line in enumerate(lines, start=1):
        draw.text((dpi // 2, n * line_height), line, fill=0, font=font)
    return page


def make_image(pages: list[str], format_: str = "PNG", *, dpi: int = 200) -> bytes:
    """An image of each string rendered as text; several pages only make sense for TIFF."""
    frames = [render_text([text], dpi=dpi) for text in pages]
    out = io.BytesIO()
    frames[0].save(out, format=format_, save_all=len(frames) > 1, append_images=frames[1:])
    return out.getvalue()


def make_scanned_pdf(pages: list[str], typed: Collection[int] = ()) -> bytes:
    """A PDF with one page per string, each an image of its text (no text layer, like a
    scan), except the page numbers in `typed`, whose string is real text: a mixed PDF."""
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for number, text in enumerate(pages, start=1):
        pdf.add_page()
        if number in typed:
            pdf.multi_cell(0, 8, text)
        else:
            pdf.image(io.BytesIO(make_image([text])), x=0, y=10, w=210)
    return bytes(pdf.output())


def make_pptx(slides: list[tuple[str, str]], notes: dict[int, str] | None = None) -> bytes:
    """A deck with one (title, body) slide each; `notes` maps slide numbers to notes."""
    deck = pptx.Presentation()
    for number, (title, body) in enumerate(slides, start=1):
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
        if notes and number in notes:
            slide.notes_slide.notes_text_frame.text = notes[number]
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def make_xlsx(sheets: dict[str, list[list[object]]]) -> bytes:
    """A workbook with one worksheet per name, holding the rows in order."""
    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    for name, rows in sheets.items():
        sheet = workbook.create_sheet(name)
        for row in rows:
            sheet.append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()
