"""Extraction of real files, and a clear, permanent `ExtractionError` for broken ones."""

from __future__ import annotations

import codecs
import struct
from pathlib import Path
from typing import Protocol

import pytest

from sheaf.domain.models import ContentType, Page
from sheaf.errors import ExtractionError, PermanentError
from sheaf.extract import LocalExtractor, ZipLimits
from sheaf.extract.text import extract_text
from tests.samples import encrypt_pdf, make_docx, make_pdf, make_utf16_text, make_zip, rezip_docx

pytestmark = pytest.mark.unit

PDF, DOCX, TEXT, MARKDOWN = (t.value for t in list(ContentType)[:4])


class Extract(Protocol):
    def __call__(
        self, data: bytes, content_type: str, extractor: LocalExtractor | None = None
    ) -> list[Page]: ...


@pytest.fixture
def extract(tmp_path: Path) -> Extract:
    """Write bytes to a file and extract it as the given content type."""

    def run(data: bytes, content_type: str, extractor: LocalExtractor | None = None) -> list[Page]:
        path = tmp_path / "upload.bin"
        path.write_bytes(data)
        return list((extractor or LocalExtractor()).extract(path, content_type))

    return run


def failure(
    extract: Extract, data: bytes, content_type: str, extractor: LocalExtractor | None = None
) -> ExtractionError:
    with pytest.raises(ExtractionError) as caught:
        extract(data, content_type, extractor)
    assert isinstance(caught.value, PermanentError)
    return caught.value


# --- PDF ------------------------------------------------------------------------------


def test_pdf_pages_are_numbered_from_one(extract: Extract) -> None:
    pages = extract(make_pdf(["Alpha first page", "Beta second page", "Gamma third"]), PDF)
    assert [p.number for p in pages] == [1, 2, 3]
    assert [p.text.split()[0] for p in pages] == ["Alpha", "Beta", "Gamma"]


def test_pdf_without_text_is_pages_of_empty_text_not_an_error(extract: Extract) -> None:
    assert extract(make_pdf(["", ""]), PDF) == [Page(1, ""), Page(2, "")]


def test_password_protected_pdf_fails_as_encrypted(extract: Extract) -> None:
    error = failure(extract, encrypt_pdf(make_pdf(["secret"]), "pw"), PDF)
    assert error.code == "encrypted"
    assert "password" in error.message


def test_pdf_with_only_an_owner_password_opens_like_in_any_reader(extract: Extract) -> None:
    pages = extract(encrypt_pdf(make_pdf(["open to read"]), "", "owner-pw"), PDF)
    assert pages[0].text == "open to read"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "not_a_pdf"),
        (b"this is plainly not a PDF " * 40, "not_a_pdf"),
        (b"%PDF-1.7\n" + bytes(range(256)) * 8, "corrupt_pdf"),
        (make_pdf(["one", "two"])[:600], "corrupt_pdf"),
        (make_pdf(["one", "two"])[:-40], "corrupt_pdf"),
    ],
    ids=["zero-bytes", "garbage", "header-then-garbage", "truncated-early", "truncated-late"],
)
def test_broken_pdfs_fail_with_an_actionable_message(
    extract: Extract, data: bytes, code: str
) -> None:
    error = failure(extract, data, PDF)
    assert error.code == code
    assert error.__cause__ is not None or code == "not_a_pdf"
    assert "PDF" in error.message


def test_garbage_after_eof_marker_is_tolerated(extract: Extract) -> None:
    pages = extract(make_pdf(["still here"]) + b"\x00trailing junk" * 100, PDF)
    assert pages == [Page(1, "still here")]


# --- DOCX -----------------------------------------------------------------------------


def test_docx_keeps_a_table_between_paragraphs_in_place(extract: Extract) -> None:
    data = make_docx(["Before the table.", "After the table."], [["Name", "Qty"], ["Tea", "3"]])
    assert extract(data, DOCX) == [
        Page(1, "Before the table.\nName | Qty\nTea | 3\nAfter the table.")
    ]


def test_docx_ratio_bomb_is_refused_from_the_directory(extract: Extract) -> None:
    bomb = rezip_docx(make_docx(["hi"]), {"word/media/zeros.bin": bytes(32 * 1024 * 1024)})
    error = failure(extract, bomb, DOCX)
    assert error.code == "zip_bomb"
    assert "expands" in error.message


def test_docx_declaring_too_much_data_is_refused_without_reading_it(extract: Extract) -> None:
    # The member really holds 5 bytes: had anything read it, the CRC/size check would
    # have failed as corrupt_docx. zip_bomb means only the directory was consulted.
    data = rezip_docx(make_docx(["hi"]), {"word/huge.xml": b"small"})
    forged = declare_size(data, "word/huge.xml", 300 * 1024 * 1024)
    error = failure(extract, forged, DOCX)
    assert error.code == "zip_bomb"
    assert "unpacks to" in error.message


def test_docx_with_too_many_entries_is_refused(extract: Extract) -> None:
    extra = {f"word/media/{i}.bin": b"x" for i in range(30)}
    limits = LocalExtractor(ZipLimits(max_entries=40))
    error = failure(extract, rezip_docx(make_docx(["hi"]), extra), DOCX, extractor=limits)
    assert error.code == "zip_bomb"


def test_docx_with_a_bad_crc_is_corrupt(extract: Extract) -> None:
    stored = rezip_docx(make_docx(["integrity matters"]), {}, stored=True)
    assert stored.count(b"integrity matters") == 1
    error = failure(extract, stored.replace(b"integrity matters", b"integrity MATTERS"), DOCX)
    assert error.code == "corrupt_docx"


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (
            rezip_docx(
                make_docx(["macro"]),
                {"[Content_Types].xml": b"application/vnd.ms-word.document.macroEnabled.main+xml"},
            ),
            "macro-enabled",
        ),
        (make_zip({"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<x/>"}), "another"),
        (make_zip({"readme.txt": b"just a zip"}), "without a plausible [Content_Types].xml"),
    ],
    ids=["docm", "xlsx", "plain-zip"],
)
def test_packages_that_are_not_word_documents(extract: Extract, data: bytes, says: str) -> None:
    error = failure(extract, data, DOCX)
    assert error.code == "not_a_docx"
    assert says in error.message


def test_legacy_doc_or_garbage_as_docx_is_corrupt(extract: Extract) -> None:
    ole2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(4096)
    assert failure(extract, ole2, DOCX).code == "corrupt_docx"


def test_docx_entity_expansion_is_not_performed(extract: Extract) -> None:
    entities = "".join(f'<!ENTITY {chr(98 + i)} "{f"&{chr(97 + i)};" * 10}">' for i in range(8))
    laughs = (
        f'<?xml version="1.0"?><!DOCTYPE w:document [<!ENTITY a "ha">{entities}'.encode()
        + b']><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        + b"<w:body><w:p><w:r><w:t>&i;</w:t></w:r></w:p></w:body></w:document>"
    )
    data = rezip_docx(make_docx(["x"]), {"word/document.xml": laughs})
    # libxml2 refuses the amplification (corrupt_docx); an older one leaves it unexpanded.
    try:
        outcome = "expanded" if len(extract(data, DOCX)[0].text) > 1000 else "unexpanded"
    except ExtractionError as error:
        outcome = error.code
    assert outcome in {"corrupt_docx", "unexpanded"}


# --- text -----------------------------------------------------------------------------


@pytest.mark.parametrize("big_endian", [False, True])
def test_utf16_text_is_decoded_by_its_bom(extract: Extract, big_endian: bool) -> None:
    data = make_utf16_text("Grüße\r\naus Köln\r\n", big_endian=big_endian)
    assert extract(data, TEXT) == [Page(1, "Grüße\naus Köln\n")]


def test_utf8_bom_is_dropped_and_invalid_bytes_replaced(extract: Extract) -> None:
    data = codecs.BOM_UTF8 + b"caf\xc3\xa9 \xff ok\r\nnul:\x00."
    assert extract(data, TEXT) == [Page(1, "café \ufffd ok\nnul:.")]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16"])
def test_text_is_read_in_bounded_pieces_of_one_page(tmp_path: Path, encoding: str) -> None:
    text = "Grüße aus Köln, €5 für 🍺\n" * 50  # characters of 1 to 4 bytes, cut anywhere
    path = tmp_path / "long.txt"
    path.write_bytes(text.encode(encoding))
    pieces = list(extract_text(path, piece_bytes=7))
    assert {piece.number for piece in pieces} == {1}
    assert max(len(piece.text) for piece in pieces) <= 7
    assert "".join(piece.text for piece in pieces) == text


def test_an_empty_text_file_is_one_empty_page(extract: Extract) -> None:
    assert extract(b"", TEXT) == [Page(1, "")]


def test_markdown_is_extracted_as_text(extract: Extract) -> None:
    assert extract(b"# Title\n\nBody", MARKDOWN) == [Page(1, "# Title\n\nBody")]


def test_an_unknown_content_type_is_a_permanent_failure(extract: Extract) -> None:
    assert failure(extract, b"x", "image/gif").code == "unsupported_type"


def declare_size(data: bytes, name: str, size: int) -> bytes:
    """Rewrite the central directory so that `name` claims `size` uncompressed bytes."""
    record = b"PK\x01\x02"
    at = data.find(record)
    while at != -1:
        (name_len,) = struct.unpack_from("<H", data, at + 28)
        if data[at + 46 : at + 46 + name_len] == name.encode():
            return data[: at + 24] + struct.pack("<I", size) + data[at + 28 :]
        at = data.find(record, at + 46)
    raise AssertionError(f"{name} is not in the zip")
