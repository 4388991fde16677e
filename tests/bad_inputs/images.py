"""Hostile and broken images (bad-inputs.md #31, #32), written by hand where Pillow would
refuse to write them, otherwise by Pillow itself."""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Callable

from PIL import Image, ImageDraw, ImageFont

from tests.samples import make_image

Maker = Callable[[], bytes]
TEXT = "Harbour inspection"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_pixel_bomb(side: int = 100_000) -> bytes:
    """#31: a valid 1 KB PNG that declares side x side pixels of 8-bit grey (10 GB)."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    pixels = zlib.compress(bytes(side + 1) * 8)  # a few rows; the rest never comes
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", pixels)
        + _png_chunk(b"IEND", b"")
    )


def tiff_pixel_bomb() -> bytes:
    """#31: a one-strip TIFF whose first frame declares 100,000 x 100,000 pixels."""
    small = io.BytesIO()
    Image.new("L", (8, 8), 255).save(small, format="TIFF")
    data = bytearray(small.getvalue())
    # Pillow writes ImageWidth (256) and ImageLength (257) as LONG entries: patch both.
    for tag in (256, 257):
        entry = struct.pack("<HH", tag, 4) + struct.pack("<I", 1) + struct.pack("<I", 8)
        at = data.find(entry)
        assert at >= 0, f"tag {tag} not found"
        data[at + 8 : at + 12] = struct.pack("<I", 100_000)
    return bytes(data)


def truncated_png() -> bytes:
    data = make_image([TEXT], "PNG")
    return data[: len(data) // 2]


def truncated_jpeg() -> bytes:
    data = make_image([TEXT], "JPEG")
    return data[: len(data) // 2]


def tiff_with_frames(count: int = 10_000) -> bytes:
    """#32: a multi-page TIFF of `count` white 8 x 8 frames sharing one strip (~1 MB).

    Written by hand: Pillow takes minutes to append 10,000 frames."""
    strip_at = 8
    first_ifd = strip_at + 64
    entries = [  # tag, type (3 SHORT, 4 LONG), value
        (256, 3, 8),  # ImageWidth
        (257, 3, 8),  # ImageLength
        (258, 3, 8),  # BitsPerSample
        (259, 3, 1),  # Compression: none
        (262, 3, 1),  # PhotometricInterpretation: BlackIsZero
        (273, 4, strip_at),  # StripOffsets
        (278, 3, 8),  # RowsPerStrip
        (279, 4, 64),  # StripByteCounts
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    out = bytearray(b"II*\x00" + struct.pack("<I", first_ifd) + b"\xff" * 64)
    for n in range(count):
        out += struct.pack("<H", len(entries))
        for tag, kind, value in entries:
            packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
            out += struct.pack("<HHI", tag, kind, 1) + packed
        following = first_ifd + (n + 1) * ifd_size if n + 1 < count else 0
        out += struct.pack("<I", following)
    return bytes(out)


def dense_page(seed: int = 33) -> bytes:
    """#33: a letter page at 300 dpi packed with 60,000 tiny random words: seconds of OCR
    for Tesseract, far past a test's two-second limit."""
    rng = random.Random(seed)
    page = Image.new("L", (2550, 3300), 255)
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=14)
    for top in range(0, 3300, 16):
        line = " ".join(rng.choice(["ab", "cd", "ef", "gh", "ij", "kl"]) for _ in range(300))
        draw.text((0, top), line, fill=0, font=font)
    out = io.BytesIO()
    page.save(out, format="PNG")
    return out.getvalue()
