"""PNG, JPEG and TIFF through OCR: one page per image, or per frame of a multi-page TIFF.

Pillow opens an image lazily (it reads the header, not the pixels), so the size a file
declares is checked before anything is decoded: a few-KB PNG that declares 100,000 x
100,000 pixels (bad-inputs.md #31) is refused with `image_too_large`, and Pillow's own
bomb check is set to the same limit in case a later frame declares more. Frames are
counted only up to the OCR page limit, so a TIFF with 10,000 frames (#32) is refused
with `ocr_page_limit` after walking the first `max_pages` frame headers, without decoding one.

A single-frame PNG (any mode) or a single-frame greyscale or RGB JPEG is not decoded in
Sheaf at all: once its declared size has passed the limit and the file has been checked
whole (PNG: every chunk and its CRC, up to IEND; JPEG: a decode at 1/8 scale, which
reads all the compressed data), Tesseract reads the original file itself (`ocr_file`),
exactly as `tesseract FILE` run by hand does, colour and alpha included. (Decoding in
Pillow and handing Tesseract the pixels held 300-dpi pages to ~80 % of its own rate.)
Everything else (TIFF frames, CMYK JPEGs, animated PNGs) is decoded frame by frame to
grey pixels, which Tesseract gets uncompressed (`ocr_image`). A truncated file ends as
`corrupt_image` either way, before Tesseract sees it; a damaged one that passes these
checks ends as `ocr_failed`, quoting Tesseract.

Error codes: `image_too_large`, `corrupt_image` (truncated, damaged or not decodable),
and those of `sheaf.extract.ocr` (`ocr_disabled`, `ocr_unavailable`, `timeout`, ...).
"""

from __future__ import annotations

import struct
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from sheaf.domain.models import Page
from sheaf.errors import ExtractionError
from sheaf.extract.ocr import OcrOptions, ocr_file, ocr_image, ocr_refused, too_many_pages

_DECODE_FAILURES = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)
_AS_IS = {"PNG": None, "JPEG": frozenset({"L", "RGB"})}  # format: modes (None: any)


def extract_image(path: Path, options: OcrOptions) -> Iterator[Page]:
    """One page per frame, numbered from 1, each the text OCR reads on it."""
    if not options.enabled:
        raise ocr_refused(1)
    Image.MAX_IMAGE_PIXELS = options.max_image_pixels  # this process only: a child's
    with path.open("rb") as file, _open(file) as image:
        frames = _count_frames(image, options)
        if frames == 1 and _readable_as_is(image):
            _check_whole(image, options)
            yield Page(1, ocr_file(file.fileno(), options, 1))
            return
        for number in range(1, frames + 1):
            yield Page(number, ocr_image(_decoded(image, number, options), options, number))


def _open(file: BinaryIO) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(file)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large(str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise _corrupt("it is not an image Sheaf can decode", exc) from exc
    except _DECODE_FAILURES as exc:
        raise _corrupt("its header is damaged", exc) from exc


def _count_frames(image: Image.Image, options: OcrOptions) -> int:
    """Frames up to the limit, by seeking (header walks only); over it → `ocr_page_limit`."""
    count = 1
    try:
        while True:
            image.seek(count)  # EOFError past the last frame
            count += 1
            if count > options.max_pages:
                raise too_many_pages(f"more than {options.max_pages}", options)
    except EOFError:
        pass
    except _DECODE_FAILURES as exc:
        raise _corrupt(f"frame {count + 1} is damaged", exc) from exc
    return count


def _readable_as_is(image: Image.Image) -> bool:
    """Whether Tesseract (Leptonica) reads this file as Pillow would: one frame, and a
    format and mode it decodes itself."""
    if image.format not in _AS_IS:
        return False
    modes = _AS_IS[image.format]
    return modes is None or image.mode in modes


def _check_whole(image: Image.Image, options: OcrOptions) -> None:
    """The size check, then a cheap read of all the compressed data, without a full
    decode: a truncated or damaged file is `corrupt_image` before Tesseract opens it."""
    _check_size(image, "it", options)
    try:
        if image.format == "PNG":
            image.verify()  # walks the chunks to IEND, checking each CRC; no inflating
        else:
            image.draft("L", (1, 1))  # JPEG: decodes at 1/8 scale, reading every byte
            image.load()
    except _DECODE_FAILURES as exc:
        raise _corrupt("it is truncated or damaged", exc) from exc


def _decoded(image: Image.Image, number: int, options: OcrOptions) -> Image.Image:
    """Frame `number` decoded to pixels, after its declared size passed the limit."""
    try:
        image.seek(number - 1)
        _check_size(image, f"frame {number}", options)
        image.load()
        return image.convert("L")
    except ExtractionError:
        raise
    except Image.DecompressionBombError as exc:
        raise _too_large(str(exc)) from exc
    except _DECODE_FAILURES as exc:
        raise _corrupt(f"frame {number} is truncated or damaged", exc) from exc


def _check_size(image: Image.Image, what: str, options: OcrOptions) -> None:
    """Refuse the current frame if the size it declares is over the limit (nothing decoded)."""
    width, height = image.size
    if width * height > options.max_image_pixels:
        raise _too_large(f"{what} declares {width} x {height} pixels")


def _too_large(why: str) -> ExtractionError:
    return ExtractionError(
        f"The image is too large to read ({why}); it may be a decompression bomb. The limit "
        "is SHEAF_OCR_MAX_IMAGE_PIXELS: scale the image down, or raise the limit.",
        code="image_too_large",
    )


def _corrupt(why: str, exc: Exception) -> ExtractionError:
    return ExtractionError(
        f"The image cannot be read: {why} ({type(exc).__name__}: {str(exc)[:200]}). "
        "Re-save or re-scan it and upload it again.",
        code="corrupt_image",
    )
