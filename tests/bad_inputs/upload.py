"""Hostile uploads (bad-inputs.md #19-#24): raw multipart bodies, lying names and types.

aiohttp's client would refuse to send most of these (NUL or non-UTF-8 bytes in a
filename, a body cut short), so `multipart` writes the bytes of the request itself.
"""

from __future__ import annotations

import codecs
import hashlib
from dataclasses import dataclass

from tests.bad_inputs.pdf import healthy as healthy_pdf

BOUNDARY = "sheaf-bad-input-boundary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
TEXT = "Grüße aus Köln: the minutes of the meeting, line one.\nLine two — with a dash.\n"


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    data: bytes
    params: bytes = b""  # raw Content-Disposition parameters after the name: any bytes
    content_type: str = "application/octet-stream"


def multipart(*parts: Part, close: bool = True) -> bytes:
    """A multipart/form-data body; without `close` it ends mid-part, as if cut off."""
    out = bytearray()
    for part in parts:
        out += f"--{BOUNDARY}\r\n".encode()
        out += f'Content-Disposition: form-data; name="{part.name}"'.encode() + part.params
        out += f"\r\nContent-Type: {part.content_type}\r\n\r\n".encode() + part.data + b"\r\n"
    if close:
        out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out)


def file_part(data: bytes, filename: bytes = b"upload.bin", content_type: str = "") -> Part:
    params = b'; filename="' + filename + b'"'
    return Part("file", data, params, content_type or "application/octet-stream")


# --- 19: the declared type lies ------------------------------------------------------


def pdf_declared_as_text() -> bytes:
    """#19: a real PDF named `notes.txt` and sent as text/plain."""
    return multipart(file_part(healthy_pdf(), b"notes.txt", "text/plain"))


def executable_declared_as_pdf() -> bytes:
    """#19: an ELF binary named `report.pdf` and sent as application/pdf."""
    elf = b"\x7fELF\x02\x01\x01\x00" + bytes(8) + b"\x02\x00\x3e\x00" + bytes(4000)
    return multipart(file_part(elf, b"report.pdf", "application/pdf"))


# --- 20: filenames that try to be paths, or are not names at all -------------------

HOSTILE_FILENAMES: dict[str, bytes] = {
    "double-extension": b'; filename="invoice.pdf.exe"',
    "path-traversal": b'; filename="../../../etc/passwd"',
    "windows-traversal": b'; filename="C:\\Windows\\win.ini"',
    "encoded-traversal": b"; filename*=UTF-8''..%2F..%2Fetc%2Fpasswd",
    "encoded-nul-and-controls": b"; filename*=UTF-8''report.txt%00%0D%0A%1B%5B31m.exe",
    "overlong": b'; filename="' + b"a" * 5000 + b'.txt"',
    "latin-1": b'; filename="' + "résumé.txt".encode("latin-1") + b'"',
    "invalid-utf8": b'; filename="\xff\xfe\xfd.txt"',
    "empty": b'; filename=""',
}
"""Content-Disposition parameters that HTTP can carry: accepted, the name made harmless."""

MALFORMED_FILENAMES: dict[str, bytes] = {
    "raw-nul-byte": b'; filename="report.txt\x00.exe"',
    "raw-line-break": b'; filename="line\r\nX-Injected: 1.txt"',
}
"""Bytes no valid header holds: the part's headers are malformed, so the upload is."""


def named(params: bytes) -> bytes:
    """#20: a small text file under the given raw Content-Disposition parameters."""
    data = b"a document uploaded under the name " + hashlib.sha256(params).hexdigest().encode()
    return multipart(Part("file", data, params, "text/plain"))


# --- 22: malformed bodies ----------------------------------------------------------


def truncated_body() -> bytes:
    """#22: the body ends inside the file part, with no closing boundary."""
    return multipart(file_part(b"the text goes on and on", b"a.txt"), close=False)[:-2]


def missing_file_part() -> bytes:
    """#22: a form with fields but no `file` part."""
    return multipart(Part("note", b"where is the file?"))


def two_files() -> bytes:
    """#22: two `file` parts where one is expected."""
    return multipart(file_part(b"first file", b"a.txt"), file_part(b"second file", b"b.txt"))


# --- 24: text in other Unicode encodings -------------------------------------------


def utf16_le_with_bom() -> bytes:
    return codecs.BOM_UTF16_LE + TEXT.encode("utf-16-le")


def utf16_be_with_bom() -> bytes:
    return codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be")


def utf8_with_bom() -> bytes:
    return codecs.BOM_UTF8 + TEXT.encode()


def utf8_with_invalid_bytes() -> bytes:
    """A stray Latin-1 byte and a cut-off sequence, further in otherwise good UTF-8."""
    return TEXT.encode() * 20 + b"caf\xe9 \xe2\x82 end\n"


def utf16_without_bom() -> bytes:
    """Refused: without a BOM, UTF-16 cannot be told from binary data reliably."""
    return TEXT.encode("utf-16-le")
