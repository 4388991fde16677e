"""Hostile and broken PDFs (bad-inputs.md #1-#13), written object by object.

`assemble` lays out numbered objects, a classic xref table and a trailer with correct
offsets, so each case differs from a valid file only in the one flaw it is about.
"""

from __future__ import annotations

import zlib

from pypdf._codecs._codecs import LzwCodec

from tests.samples import encrypt_pdf, make_pdf

TEXT = "Quarterly ledger reconciled"
BOMB_BYTES = 120_000_000  # past pypdf's 75 MB decompression cap

_FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def stream(data: bytes, extra: bytes = b"", *, length: bytes | None = None) -> bytes:
    """A stream object body; `length` overrides the true /Length (b"" omits it)."""
    declared = str(len(data)).encode() if length is None else length
    entry = b" /Length " + declared if declared else b""
    return b"<<" + entry + extra + b" >>\nstream\n" + data + b"\nendstream"


def text_ops(text: str = TEXT) -> bytes:
    return f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()


def page_objects(content: bytes, resources: bytes = b"") -> dict[int, bytes]:
    """Catalog 1, Pages 2, Page 3 with content stream 4 and font 5."""
    return {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        3: b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >>" + resources + b" >> >>",
        4: content,
        5: _FONT,
    }


def assemble(objects: dict[int, bytes], trailer: bytes = b"") -> bytes:
    """A complete PDF of `objects` (numbered from 1, no gaps) with a correct xref."""
    head, offsets = body(objects)
    return head + xref_table(offsets) + trailer_for(objects, trailer) + startxref(len(head))


def body(objects: dict[int, bytes]) -> tuple[bytes, dict[int, int]]:
    """Header and objects, and the offset of each object."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (number, objects[number])
    return bytes(out), offsets


def trailer_for(objects: dict[int, bytes], extra: bytes = b"") -> bytes:
    return b"trailer\n<< /Size %d /Root 1 0 R%s >>\n" % (max(objects) + 1, extra)


def startxref(offset: int) -> bytes:
    return b"startxref\n%d\n%%%%EOF\n" % offset


def xref_table(offsets: dict[int, int]) -> bytes:
    rows = [b"0000000000 65535 f \n"]
    rows += [b"%010d 00000 n \n" % offsets[n] for n in range(1, max(offsets) + 1)]
    return b"xref\n0 %d\n" % len(rows) + b"".join(rows)


def healthy(text: str = TEXT) -> bytes:
    return assemble(page_objects(stream(text_ops(text))))


# --- 1-4: inputs that made old pypdf releases loop forever ---------------------------


def circular_outline() -> bytes:
    """#1: an outline item that is its own next, previous and first child."""
    objects = page_objects(stream(text_ops()))
    objects[1] = b"<< /Type /Catalog /Pages 2 0 R /Outlines 6 0 R /PageMode /UseOutlines >>"
    objects[6] = b"<< /Type /Outlines /First 7 0 R /Last 7 0 R /Count 1 >>"
    objects[7] = b"<< /Title (loop) /Parent 6 0 R /Next 7 0 R /Prev 7 0 R /First 7 0 R >>"
    return assemble(objects)


def circular_xref_prev() -> bytes:
    """#2: two xref sections whose trailers name each other as /Prev."""
    objects = page_objects(stream(text_ops()))
    head, offsets = body(objects)
    table = xref_table(offsets)
    first_at = len(head)
    second_at = first_at + len(table + trailer_for(objects, b" /Prev %010d" % 0))
    first = table + trailer_for(objects, b" /Prev %010d" % second_at)
    second = table + trailer_for(objects, b" /Prev %d" % first_at)
    return head + first + second + startxref(second_at)


def comment_at_eof() -> bytes:
    """#3: a content stream, and the file itself, ending inside a comment."""
    data = assemble(page_objects(stream(text_ops() + b"\n% trailing comment")))
    return data.rstrip(b"\n") + b"\n%"


def inline_image_without_end() -> bytes:
    """#4: `BI ... ID` with binary data and no `EI` before the stream ends."""
    ops = text_ops() + b"\nq 10 0 0 10 0 0 cm BI /W 8 /H 8 /CS /G /BPC 8 ID " + bytes(range(64))
    return assemble(page_objects(stream(ops)))


# --- 5-7: decompression and allocation bombs -----------------------------------------


def flate_bomb() -> bytes:
    """#5: a content stream of ~120 KB that inflates to 120 MB."""
    data = zlib.compress(b" " * BOMB_BYTES, 9)
    return assemble(page_objects(stream(data, b" /Filter /FlateDecode")))


def lzw_bomb() -> bytes:
    """#5: the same with LZW: ~90 KB of codes for 120 MB of spaces."""
    data = lzw_run(ord(" "), BOMB_BYTES)
    return assemble(page_objects(stream(data, b" /Filter /LZWDecode")))


def lzw_run(byte: int, count: int) -> bytes:
    """LZW codes for `count` copies of `byte`, as pypdf's own encoder would emit them.

    On a run the table only ever learns runs one longer than the last match (code
    256 + k is the run of length k), so the codes follow without encoding byte by byte.
    """
    codes, longest, next_code = [LzwCodec.CLEAR_TABLE_MARKER], 1, 258
    while count > 0:
        take = min(longest, count)
        codes.append(byte if take == 1 else 256 + take)
        count -= take
        if next_code <= 4095:
            next_code, longest = next_code + 1, take + 1
        elif count:
            codes.append(LzwCodec.CLEAR_TABLE_MARKER)
            next_code, longest = 258, 1
    codes.append(LzwCodec.EOD_MARKER)
    return pack_codes(codes)


def pack_codes(codes: list[int]) -> bytes:
    """High-order bit first, 9 to 12 bits wide; widths grow as the decoder's table does."""
    out, buffer, bits, width, next_code = bytearray(), 0, 0, 9, 258
    for code in codes:
        buffer, bits = (buffer << width) | code, bits + width
        while bits >= 8:
            bits -= 8
            out.append((buffer >> bits) & 0xFF)
        buffer &= (1 << bits) - 1
        if code == LzwCodec.CLEAR_TABLE_MARKER:
            width, next_code = 9, 258
        elif code != LzwCodec.EOD_MARKER:
            next_code += 1
            width = min(12, max(width, next_code.bit_length()))
    if bits:
        out.append((buffer << (8 - bits)) & 0xFF)
    return bytes(out)


def run_length_bomb() -> bytes:
    """#5: RunLengthDecode: two bytes per 128 repeated bytes (~1.9 MB on disk)."""
    data = b"\x81 " * (BOMB_BYTES // 128) + b"\x80"
    return assemble(page_objects(stream(data, b" /Filter /RunLengthDecode")))


def huge_declared_length() -> bytes:
    """#6: a /Length of a terabyte in front of a short stream."""
    return assemble(page_objects(stream(text_ops(), length=b"999999999999")))


def stream_without_length() -> bytes:
    """#6: no /Length at all: the reader must find `endstream` itself."""
    return assemble(page_objects(stream(text_ops(), length=b"")))


def pixel_bomb() -> bytes:
    """#7: a 100,000 x 100,000 RGB image (30 GB decoded) drawn on a page with text."""
    pixels = zlib.compress(bytes(1_000_000), 9)
    image = stream(
        pixels,
        b" /Type /XObject /Subtype /Image /Width 100000 /Height 100000"
        b" /ColorSpace /DeviceRGB /BitsPerComponent 8 /Filter /FlateDecode",
    )
    objects = page_objects(
        stream(text_ops() + b"\nq 500 0 0 500 50 50 cm /Im1 Do Q"), b" /XObject << /Im1 6 0 R >>"
    )
    objects[6] = image
    return assemble(objects)


# --- 8-10: structures that are slow or recursive --------------------------------------


def cyclic_pages_tree() -> bytes:
    """#8: a /Pages node that lists its own parent among its kids."""
    objects = page_objects(stream(text_ops()))
    objects[2] = b"<< /Type /Pages /Kids [3 0 R 6 0 R] /Count 2 >>"
    objects[6] = b"<< /Type /Pages /Parent 2 0 R /Kids [2 0 R] /Count 1 >>"
    return assemble(objects)


def broken_xref_with_whitespace(megabytes: int = 8) -> bytes:
    """#9: an xref table padded with megabytes of whitespace and wrong offsets in it."""
    objects = page_objects(stream(text_ops()))
    head, offsets = body(objects)
    wrong = {number: offset + 7 for number, offset in offsets.items()}
    table = xref_table(wrong).replace(b"xref\n", b"xref\n" + b" \n" * (megabytes << 19), 1)
    return head + table + trailer_for(objects) + startxref(len(head))


def hostile_xmp_metadata() -> bytes:
    """#10: XMP with a billion-laughs entity chain and 200,000 elements."""
    laughs = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    xml = (
        f'<?xml version="1.0"?><!DOCTYPE x:xmpmeta [<!ENTITY l0 "lol">{laughs}]>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/">'
        "<dc:title>&l9;</dc:title>"
        + "<dc:subject/>" * 200_000
        + "</rdf:Description></rdf:RDF></x:xmpmeta>"
    ).encode()
    objects = page_objects(stream(text_ops()))
    objects[1] = b"<< /Type /Catalog /Pages 2 0 R /Metadata 6 0 R >>"
    objects[6] = stream(xml, b" /Type /Metadata /Subtype /XML")
    return assemble(objects)


# --- 11-13: files that cannot be read ------------------------------------------------


def encrypted() -> bytes:
    """#11: needs a user password."""
    return encrypt_pdf(make_pdf([TEXT]), "secret")


def scanned_without_text_layer() -> bytes:
    """#12: one page that only draws an image: what a scanner produces without OCR."""
    image = stream(
        zlib.compress(bytes(range(256)) * 64),
        b" /Type /XObject /Subtype /Image /Width 128 /Height 128 /ColorSpace /DeviceGray"
        b" /BitsPerComponent 8 /Filter /FlateDecode",
    )
    objects = page_objects(
        stream(b"q 400 0 0 400 100 200 cm /Im1 Do Q"), b" /XObject << /Im1 6 0 R >>"
    )
    objects[6] = image
    return assemble(objects)


def truncated() -> bytes:
    """#13: cut off in the middle of its objects, no xref, no trailer."""
    data = make_pdf([TEXT, TEXT])
    return data[: len(data) // 3]


def garbage_after_eof() -> bytes:
    """#13: a valid file followed by 64 KB of junk (a common mail-gateway artefact)."""
    return healthy() + bytes(range(256)) * 256


def empty() -> bytes:
    """#13: zero bytes."""
    return b""
