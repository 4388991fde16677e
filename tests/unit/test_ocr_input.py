"""What Tesseract is handed: the uploaded PNG or JPEG as it is (no decode in Sheaf),
decoded pixels only where they must be, and nothing at all for a file that fails a check.

The real Tesseract reads every page; a wrapper in front of it on PATH only records the
arguments and a copy of the file it was given, then runs it."""

from __future__ import annotations

import io
import shutil
import struct
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from sheaf.domain.models import ContentType, Page
from sheaf.errors import ExtractionError
from sheaf.extract import LocalExtractor, OcrOptions
from tests.bad_inputs import images
from tests.samples import make_image

pytestmark = pytest.mark.usefixtures("tesseract")


@pytest.fixture
def handed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the wrapper copies the file Tesseract is handed (absent until it runs);
    what came on stdin instead, if anything did, is copied there and read from there."""
    real = shutil.which("tesseract")
    record = tmp_path / "handed.bin"
    wrapper = tmp_path / "bin" / "tesseract"
    wrapper.parent.mkdir()
    wrapper.write_text(
        f"#!{sys.executable}\n"
        "import os, shutil, sys\n"
        "source = '/dev/stdin' if sys.argv[1] == 'stdin' else sys.argv[1]\n"
        f"with open(source, 'rb') as src, open({str(record)!r}, 'wb') as dst:\n"
        "    shutil.copyfileobj(src, dst)\n"
        f"os.execv({real!r}, [{real!r}, {str(record)!r}, *sys.argv[2:]])\n"
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}:{Path(str(real)).parent}")
    return record


def extract(tmp_path: Path, data: bytes, kind: ContentType, **ocr: object) -> list[Page]:
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    return list(LocalExtractor(ocr=OcrOptions(**ocr)).extract(path, kind))  # type: ignore[arg-type]


def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError(f"Pillow decoded the {self.format} image")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def test_a_png_reaches_tesseract_as_its_own_bytes_without_a_decode(
    tmp_path: Path, handed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_image(["Quarterly tide tables"], "PNG")
    no_decoding(monkeypatch)
    [page] = extract(tmp_path, data, ContentType.PNG)
    assert handed.read_bytes() == data
    assert page.number == 1
    assert {"quarterly", "tide", "tables"} <= set(page.text.lower().split())


def test_a_jpeg_reaches_tesseract_as_its_own_bytes(tmp_path: Path, handed: Path) -> None:
    data = make_image(["Quarterly tide tables"], "JPEG")
    [page] = extract(tmp_path, data, ContentType.JPEG)
    assert handed.read_bytes() == data
    assert {"quarterly", "tide", "tables"} <= set(page.text.lower().split())


def test_a_tiff_frame_reaches_tesseract_as_its_uncompressed_pixels(
    tmp_path: Path, handed: Path
) -> None:
    data = make_image(["Anchor chain", "Signal flag"], "TIFF")
    pages = extract(tmp_path, data, ContentType.TIFF)
    assert [page.number for page in pages] == [1, 2]
    assert set(pages[1].text.lower().split()) == {"signal", "flag"}
    with Image.open(handed) as last, Image.open(io.BytesIO(data)) as source:
        source.seek(1)
        assert (last.format, last.info.get("compression")) == ("TIFF", "raw")
        assert last.tobytes() == source.convert("L").tobytes()


@pytest.mark.parametrize(
    ("data", "kind", "ocr", "code"),
    [
        (make_image(["words"]), ContentType.PNG, {"max_image_pixels": 10_000}, "image_too_large"),
        (images.png_pixel_bomb(), ContentType.PNG, {}, "image_too_large"),
        (images.truncated_png(), ContentType.PNG, {}, "corrupt_image"),
        (images.truncated_jpeg(), ContentType.JPEG, {}, "corrupt_image"),
    ],
    ids=["over-the-limit", "pixel-bomb", "truncated-png", "truncated-jpeg"],
)
def test_a_file_that_fails_a_check_never_reaches_tesseract(
    tmp_path: Path, handed: Path, data: bytes, kind: ContentType, ocr: dict[str, object], code: str
) -> None:
    with pytest.raises(ExtractionError) as caught:
        extract(tmp_path, data, kind, **ocr)
    assert caught.value.code == code
    assert not handed.exists()


def test_damage_only_tesseract_finds_is_ocr_failed_quoting_it(tmp_path: Path) -> None:
    """Every chunk whole and its CRC right, the compressed pixels garbage: the checks
    before Tesseract pass, and Tesseract's refusal is the named error."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 200, 100, 8, 0, 0, 0, 0)
    garbage = b"\x78\x9c" + bytes(range(256)) * 4
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", garbage)
    with pytest.raises(ExtractionError) as caught:
        extract(tmp_path, data + chunk(b"IEND", b""), ContentType.PNG)
    assert caught.value.code == "ocr_failed"
    assert "(Tesseract: " in caught.value.message
