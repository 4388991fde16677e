"""Hostile and broken Word files (bad-inputs.md #14-#18), built from a real DOCX."""

from __future__ import annotations

import random

from tests.samples import make_docx, rezip_docx

TEXT = "Board minutes approved"
SECRET_FILE = "/etc/hostname"  # what an external entity would try to pull into the text
MARKUP = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_MACRO_TYPES = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    b'<Default Extension="xml" ContentType="application/xml"/>'
    b'<Default Extension="bin" ContentType="application/vnd.ms-office.vbaProject"/>'
    b'<Override PartName="/word/document.xml" '
    b'ContentType="application/vnd.ms-word.document.macroEnabled.main+xml"/></Types>'
)


def healthy(text: str = TEXT) -> bytes:
    return make_docx([text])


def document_xml(body: str, doctype: str = "") -> bytes:
    """A `word/document.xml` whose body is `body` (WordprocessingML, prefix `w`)."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>{doctype}'
        f'<w:document xmlns:w="{MARKUP}"><w:body>{body}</w:body></w:document>'
    ).encode()


def paragraph(text: str) -> str:
    return f"<w:p><w:r><w:t>{text}</w:t></w:r></w:p>"


def zip_bomb() -> bytes:
    """#14: a 100 MB member of zeros, deflated to ~100 KB (ratio ~1000:1)."""
    return rezip_docx(healthy(), {"word/media/image1.bin": bytes(100 * 1024 * 1024)})


def entity_expansion() -> bytes:
    """#15: the billion-laughs chain in the main part: 10^9 'lol's if expanded."""
    chain = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    doctype = f'<!DOCTYPE w:document [<!ENTITY l0 "lol">{chain}]>'
    body = paragraph(TEXT) + paragraph("&l9;")
    return rezip_docx(healthy(), {"word/document.xml": document_xml(body, doctype)})


def external_entity() -> bytes:
    """#15: an external entity that would read a local file into the text (XXE)."""
    doctype = f'<!DOCTYPE w:document [<!ENTITY xxe SYSTEM "file://{SECRET_FILE}">]>'
    body = paragraph(TEXT) + paragraph("&xxe;")
    return rezip_docx(healthy(), {"word/document.xml": document_xml(body, doctype)})


def bad_crc() -> bytes:
    """#16: one stored byte changed after the CRC was computed."""
    stored = rezip_docx(healthy("integrity matters"), {}, stored=True)
    return stored.replace(b"integrity matters", b"integrity MATTERS")


def legacy_doc() -> bytes:
    """#17: an OLE2 compound file (Word 97-2003 .doc), as uploaded under a .docx name."""
    return b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(16) + b"\x3e\x00\x03\x00" + bytes(4068)


def macro_enabled() -> bytes:
    """#17: a .docm (macro content type and a vbaProject part) renamed .docx."""
    return rezip_docx(
        healthy(),
        {"[Content_Types].xml": _MACRO_TYPES, "word/vbaProject.bin": b"\xd0\xcf\x11\xe0" * 64},
    )


def pathological_structure(paragraphs: int = 200_000, per_section: int = 100) -> bytes:
    """#18: 2,000 sections x 100 paragraphs of varied words, stored (not deflated) so
    the size pre-checks pass it: only the per-document time limit can stop it."""
    words = random.Random(18).choices(["ledger", "audit", "asset", "accrual", "lease"], k=64)
    parts = []
    for n in range(paragraphs):
        section = "<w:pPr><w:sectPr/></w:pPr>" if n % per_section == 0 else ""
        parts.append(f"<w:p>{section}<w:r><w:t>{words[n % 64]} {n}</w:t></w:r></w:p>")
    xml = document_xml("".join(parts) + "<w:sectPr/>")
    return rezip_docx(healthy(), {"word/document.xml": xml}, stored=True)
