"""Detection trusts bytes, not names: each accepted type, and the usual lies."""

from __future__ import annotations

import codecs

import pytest

from sheaf.domain.models import ContentType
from sheaf.errors import UnsupportedType
from sheaf.extract.detect import ACCEPTED, HEAD_BYTES, detect_content_type
from tests.samples import (
    make_docx,
    make_image,
    make_pdf,
    make_pptx,
    make_utf16_text,
    make_xlsx,
    make_zip,
    rezip_docx,
)

pytestmark = pytest.mark.unit


def detect(data: bytes, filename: str | None = None) -> ContentType:
    return detect_content_type(data[:HEAD_BYTES], filename)


def rejection(data: bytes, filename: str | None = None) -> str:
    with pytest.raises(UnsupportedType) as caught:
        detect(data, filename)
    assert caught.value.message.startswith(ACCEPTED)
    return caught.value.message


def test_pdf_is_pdf_whatever_its_name() -> None:
    assert detect(make_pdf(["hello"]), "notes.txt") is ContentType.PDF


def test_pdf_header_after_leading_junk_is_still_pdf() -> None:
    assert detect(b"\r\n  \x00junk" * 50 + make_pdf(["hello"])) is ContentType.PDF


def test_pdf_header_beyond_the_first_kilobyte_is_not_a_pdf() -> None:
    rejection(b"\x01" * 2000 + make_pdf(["hello"]))


def test_docx_is_docx_whatever_its_name() -> None:
    assert detect(make_docx(["hello"]), "report.pdf") is ContentType.DOCX


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "empty"),
        (make_zip({"a.txt": b"hello", "b.txt": b"world"}), "ZIP archive"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600, "legacy Office"),
        (b"GIF89a" + b"\x00\x01" * 20, "GIF"),
        (b"\x7fELF\x02\x01\x01" + b"\x00" * 100, "ELF"),
        (bytes(range(256)) * 4, "binary"),
        ("utf-32 text".encode("utf-32"), "UTF-32"),
        (make_zip({"xl/vbaProject.bin": b"\x00", "xl/workbook.xml": b"<x/>"}), "macro-enabled"),
        (make_zip({"[Content_Types].xml": b"<T/>", "visio/page.xml": b"<v/>"}), "not a Word"),
    ],
    ids=["empty", "plain-zip", "ole2-doc", "gif", "elf", "binary", "utf-32", "xlsm", "other-ooxml"],
)
def test_unsupported_files_are_named(data: bytes, says: str) -> None:
    assert says in rejection(data, "innocent.docx")


def test_macro_enabled_word_is_refused_at_upload() -> None:
    docm = rezip_docx(make_docx(["hi"]), {"word/vbaProject.bin": b"\x00" * 64})
    # the macro part must come before the head ends for detection to see it
    names_first = make_zip({"word/vbaProject.bin": b"\x00", "[Content_Types].xml": b"<T/>"})
    assert "macro" in rejection(names_first)
    assert detect(docm) is ContentType.DOCX  # seen later: left to the extractor's check


def test_utf8_text_with_and_without_bom() -> None:
    assert detect("plain words, ünïcödé".encode()) is ContentType.TEXT
    assert detect(codecs.BOM_UTF8 + b"with a BOM") is ContentType.TEXT


@pytest.mark.parametrize("big_endian", [False, True])
def test_utf16_with_bom_is_text(big_endian: bool) -> None:
    data = make_utf16_text("Grüße aus Köln\r\n" * 1000, big_endian=big_endian)
    assert detect(data) is ContentType.TEXT  # the head cuts it at an arbitrary byte


def test_utf16_without_bom_is_refused_with_a_hint() -> None:
    assert "byte-order mark" in rejection("no bom here".encode("utf-16-le"))


def test_utf8_cut_in_the_middle_of_a_character_is_still_text() -> None:
    data = ("€" * HEAD_BYTES).encode()
    assert len(data[:HEAD_BYTES]) % 3 != 0  # the head really ends inside a character
    assert detect(data) is ContentType.TEXT


def test_text_that_starts_like_a_signature_is_still_text() -> None:
    assert detect(b"MZ Ventures: annual report") is ContentType.TEXT


def test_a_few_invalid_bytes_do_not_make_text_binary() -> None:
    assert detect(b"mostly fine text " * 50 + b"\xff\xfe oops") is ContentType.TEXT


def test_latin1_text_full_of_accents_is_refused() -> None:
    assert "encoding" in rejection("àéîõü çñ ".encode("latin-1") * 100)


def test_filename_only_labels_text_as_markdown() -> None:
    assert detect(b"# Title\n\nBody", "README.MD") is ContentType.MARKDOWN
    assert detect(b"# Title\n\nBody", "notes.markdown") is ContentType.MARKDOWN
    assert detect(b"# Title\n\nBody", "notes.txt") is ContentType.TEXT
    assert detect(make_pdf(["x"]), "evil.md") is ContentType.PDF
    rejection(b"\x7fELF\x02\x01\x01" + b"\x00" * 100, "evil.md")


@pytest.mark.parametrize(
    ("format_", "kind"),
    [("PNG", ContentType.PNG), ("JPEG", ContentType.JPEG), ("TIFF", ContentType.TIFF)],
)
def test_images_are_detected_by_their_signature(format_: str, kind: ContentType) -> None:
    assert detect(make_image(["scanned words"], format_=format_), "photo.pdf") is kind


def test_big_endian_tiff_is_tiff() -> None:
    assert detect(b"MM\x00*\x00\x00\x00\x08" + bytes(200)) is ContentType.TIFF


def test_pptx_and_xlsx_are_detected_by_their_folders() -> None:
    assert detect(make_pptx([("Title", "body")]), "deck.docx") is ContentType.PPTX
    assert detect(make_xlsx({"Sheet": [["a", 1]]}), "book.pdf") is ContentType.XLSX


def test_macro_enabled_powerpoint_is_refused_at_upload() -> None:
    pptm = make_zip({"ppt/vbaProject.bin": b"\x00", "[Content_Types].xml": b"<T/>"})
    assert "macro-enabled PowerPoint" in rejection(pptm)


@pytest.mark.parametrize(
    "data",
    [
        b"<!DOCTYPE html><html><body>hi</body></html>",
        b"<!doctype HTML>\n<title>x</title>",
        b"  \n<HTML lang=en><p>hi",
        b"<!-- saved from url -->\n<html>",
        b'<?xml version="1.0" encoding="utf-8"?>\n<html xmlns="http://www.w3.org/1999/xhtml">',
        codecs.BOM_UTF8 + b"<head><meta charset=utf-8>",
        b"<body>\xe9t\xe9 en latin-1 \xe0 la plage" * 50,  # not UTF-8: still HTML
        make_utf16_text("<!DOCTYPE html><html><body>hi</body></html>"),
    ],
    ids=["doctype", "upper", "blanks", "comment", "xhtml", "bom", "latin1", "utf16"],
)
def test_html_is_detected_by_its_opening_markup(data: bytes) -> None:
    assert detect(data, "page.txt") is ContentType.HTML


@pytest.mark.parametrize(
    "data", [b"<p>just a fragment</p>", b"notes about <html> tags", b"<htmlish>"]
)
def test_text_that_mentions_markup_is_still_text(data: bytes) -> None:
    assert detect(data) is ContentType.TEXT
