"""Decide what a file is from its first bytes, never from its name or declared type.

Uploads lie (OWASP File Upload Cheat Sheet): a client's Content-Type and the file
extension are whatever the client chose. Sheaf therefore accepts a file only when its
magic bytes match the allow-list below, and rejects everything else at upload with
`UnsupportedType` (415) whose message names what Sheaf accepts and what the file looks
like, so the person uploading can act on it.

    %PDF- within the first 1024 bytes          → PDF  (junk before the header is common)
    PK\\x03\\x04 with word/, ppt/ or xl/ entries  → DOCX, PPTX, XLSX (macro-enabled variants,
                                                 other zips: no)
    \\x89PNG / \\xff\\xd8\\xff / II*\\0 or MM\\0*    → PNG, JPEG, TIFF (read by OCR)
    <!DOCTYPE html>, <html>, <head> or <body>
      first (after a BOM, blanks, comments)    → HTML (in whatever charset it declares)
    BOM-less UTF-8, or a UTF-8/UTF-16 BOM, with
    no NUL and few control characters         → TEXT (MARKDOWN only by a .md filename hint)

The filename hint can only relabel text as Markdown: Markdown is text, and nothing in its
bytes tells them apart. It can never make a file acceptable.
"""

from __future__ import annotations

import codecs
import re
import struct
import unicodedata

from sheaf.domain.models import ContentType
from sheaf.errors import UnsupportedType

HEAD_BYTES = 8192
"""How many leading bytes callers pass in; enough for every signature checked here."""

PDF_HEADER_WINDOW = 1024
"""Readers accept `%PDF-` anywhere in the first 1024 bytes (Acrobat's rule); so do we."""

MAX_BAD_CHAR_RATIO = 0.02
"""Text may hold a few stray control characters or invalid bytes, binary data holds many."""

ACCEPTED = (
    "Sheaf accepts PDF, DOCX, PPTX, XLSX, HTML, PNG, JPEG, TIFF, and UTF-8/UTF-16 text or Markdown"
)

_ZIP_LOCAL_HEADER = struct.Struct("<4s2xH10xII2H")  # signature, flags, sizes, name/extra len
_ZIP_MAGIC = b"PK\x03\x04"
_ZIP_CENTRAL_MAGIC = b"PK\x01\x02"
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_MARKDOWN_SUFFIXES = (".md", ".markdown")
_ALLOWED_CONTROLS = frozenset("\t\n\r\f\v")
_IMAGES: tuple[tuple[bytes, ContentType], ...] = (
    (b"\x89PNG\r\n\x1a\n", ContentType.PNG),
    (b"\xff\xd8\xff", ContentType.JPEG),
    (b"II*\x00", ContentType.TIFF),
    (b"MM\x00*", ContentType.TIFF),
)
# Office packages by the folder of their main part; a macro project there means the
# macro-enabled variant (.docm/.pptm/.xlsm), which Sheaf does not open.
_OFFICE_FOLDERS: tuple[tuple[str, ContentType, str], ...] = (
    ("word/", ContentType.DOCX, "Word"),
    ("ppt/", ContentType.PPTX, "PowerPoint"),
    ("xl/", ContentType.XLSX, "Excel"),
)
# The WHATWG sniffing rule, narrowed to the tags every HTML page starts with: optional
# XML prolog, comments and blanks, then a doctype or <html>, <head> or <body>.
_HTML_START = re.compile(
    rb"(?:\s|<\?xml[^>]{0,200}\?>|<!--.{0,4096}?-->)*<(?:!doctype\s+html|html|head|body)[\s>/]",
    re.IGNORECASE | re.DOTALL,
)

# Recognised only to tell the uploader what they sent; none of these is accepted. Each is
# specific enough that no plain-text file starts with it (hence no bare "MZ").
_KNOWN_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (_OLE2_MAGIC, "a legacy Office file (.doc/.xls/.ppt); save it as .docx or PDF"),
    (b"GIF87a", "a GIF image; save it as PNG"),
    (b"GIF89a", "a GIF image; save it as PNG"),
    (b"\x7fELF", "an ELF executable"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"{\\rtf", "an RTF document; save it as .docx or PDF"),
    (b"\xff\xfe\x00\x00", "UTF-32 text; save it as UTF-8"),
    (b"\x00\x00\xfe\xff", "UTF-32 text; save it as UTF-8"),
)


def detect_content_type(head: bytes, filename: str | None = None) -> ContentType:
    """The content type of a file whose first `HEAD_BYTES` bytes are `head`.

    Raises `UnsupportedType` for anything outside the allow-list. `head` may end in the
    middle of a multi-byte character; that is not held against it.
    """
    if not head:
        raise _unsupported("an empty file")
    if head.startswith(_ZIP_MAGIC):
        return _office_package(head)
    for magic, kind in _IMAGES:
        if head.startswith(magic):
            return kind
    for magic, description in _KNOWN_SIGNATURES:
        if head.startswith(magic):
            raise _unsupported(description)
    if b"%PDF-" in head[: PDF_HEADER_WINDOW + 4]:
        return ContentType.PDF
    if _looks_like_html(head):
        return ContentType.HTML
    _check_text(head)
    if filename is not None and filename.lower().endswith(_MARKDOWN_SUFFIXES):
        return ContentType.MARKDOWN
    return ContentType.TEXT


def _unsupported(description: str) -> UnsupportedType:
    return UnsupportedType(f"{ACCEPTED}; this file looks like {description}.")


def _office_package(head: bytes) -> ContentType:
    """The Office format whose main-part folder the zip's leading entries show.

    The entry names are read from the local file headers inside `head`. When the walk
    cannot reach the end of the entries (the head ends first, or sizes are deferred to
    data descriptors) and no folder was seen yet, the `[Content_Types].xml` of an Office
    package is benefit enough of the doubt for DOCX, as before other formats were read:
    the extractor checks the whole package's declared type before opening it.
    """
    names, complete = _zip_entry_names(head)
    for folder, _, product in _OFFICE_FOLDERS:
        if any(name.startswith(folder + "vbaProject") for name in names):
            raise _unsupported(f"a macro-enabled {product} file; save it without macros")
    for folder, kind, _ in _OFFICE_FOLDERS:
        if any(name.startswith(folder) for name in names):
            return kind
    if not complete:
        for folder, kind, _ in _OFFICE_FOLDERS:
            if folder.encode() in head:
                return kind
        if b"[Content_Types].xml" in head:
            return ContentType.DOCX
    raise _unsupported("a ZIP archive that is not a Word, PowerPoint or Excel document")


def _looks_like_html(head: bytes) -> bool:
    """True if the markup starts like an HTML page, in UTF-16 (by BOM) or any charset
    that writes ASCII as ASCII (UTF-8, the ISO-8859 and Windows code pages, Shift_JIS...)."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = codecs.getincrementaldecoder("utf-16")(errors="replace").decode(head[:2048])
        head = text.encode("ascii", "replace")
    return _HTML_START.match(head.removeprefix(codecs.BOM_UTF8)[:8192]) is not None


def _zip_entry_names(head: bytes) -> tuple[list[str], bool]:
    """Names of the zip entries whose local headers lie within `head`, and whether
    that is all of them (the walk reached the central directory)."""
    names: list[str] = []
    offset = 0
    while offset + _ZIP_LOCAL_HEADER.size <= len(head):
        magic, flags, compressed, _, name_len, extra_len = _ZIP_LOCAL_HEADER.unpack_from(
            head, offset
        )
        name_start = offset + _ZIP_LOCAL_HEADER.size
        if magic != _ZIP_MAGIC:
            return names, magic == _ZIP_CENTRAL_MAGIC
        if name_start + name_len > len(head):
            break
        names.append(head[name_start : name_start + name_len].decode("utf-8", "replace"))
        if flags & 0x08:  # sizes follow the data in a descriptor: cannot skip ahead
            break
        offset = name_start + name_len + extra_len + compressed
    return names, False


def _check_text(head: bytes) -> None:
    """Raise unless `head` is UTF-8 or BOM-marked UTF-16 text with few odd characters."""
    encoding = _text_encoding(head)
    if encoding == "utf-8" and b"\x00" in head:
        raise _unsupported(_describe_binary(head))
    # final=False: an incomplete character cut off by the head's end is held back.
    text = codecs.getincrementaldecoder(encoding)(errors="replace").decode(head, final=False)
    if "\x00" in text:
        raise _unsupported("binary data")
    if _bad_char_count(text) > MAX_BAD_CHAR_RATIO * max(len(text), 1):
        raise _unsupported("binary data or text in an encoding other than UTF-8/UTF-16")


def _text_encoding(head: bytes) -> str:
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"  # the BOM picks the byte order and is dropped while decoding
    return "utf-8"


def _bad_char_count(text: str) -> int:
    """Control characters other than whitespace, plus replacements for invalid bytes."""
    return sum(
        1
        for char in text
        if char == "\ufffd"
        or (unicodedata.category(char) == "Cc" and char not in _ALLOWED_CONTROLS)
    )


def _describe_binary(head: bytes) -> str:
    """UTF-16 without a BOM is the one common text case with NULs; say so if it is that."""
    sample = head[:512]
    if _mostly_nul(sample[0::2]) or _mostly_nul(sample[1::2]):
        return "UTF-16 text without a byte-order mark; save it as UTF-8"
    return "binary data"


def _mostly_nul(data: bytes) -> bool:
    return len(data) > 0 and data.count(0) > 0.9 * len(data)
