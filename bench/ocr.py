"""OCR: character error rate and pages/s per worker, Sheaf against `tesseract` run directly.

The pages are made here: paragraphs of known text rendered to images at 150 and 300 dpi,
clean, and with noise and a 1.5° skew as a cheap scanner adds them. Each image is read
twice, alternately: by Sheaf (`IsolatedExtractor` with one child, as a worker runs it:
Pillow checks the PNG's header and chunks, then Tesseract reads the file itself; see
`sheaf.extract.image`) and by `tesseract FILE stdout` with the same language and one
thread. (Sheaf passes `--dpi` of `OcrOptions.dpi`, 300; the direct run the page's own.)
The character error rate is the edit distance between the text read and the source text,
both with whitespace collapsed, divided by the source length. Target: Sheaf at ≥ 90 % of
the direct throughput, at the same error rate.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from bench.harness import Context, percent, ratio
from sheaf.domain.models import ContentType
from sheaf.extract import LocalExtractor, OcrOptions
from sheaf.extract.isolated import IsolatedExtractor

NAME = "ocr"
TITLE = "6. OCR: error rate and throughput against Tesseract run directly"

_SOURCE = (
    "the harbour board met on tuesday to review the annual inspection of the northern "
    "pier where rust and loose railings were found along with a cracked bollard the "
    "committee approved repairs before winter and asked the engineer for a schedule of "
    "works the budget for paint and steel was raised by twelve percent after three "
    "quotes were compared and the lowest bidder was chosen for the contract"
)
_WORDS = tuple(_SOURCE.split())
_LINE_CHARS = 64
_FONT_POINTS = 11


async def run(ctx: Context) -> None:
    binary = shutil.which("tesseract")
    if binary is None:
        ctx.note("Tesseract is not installed (Debian: tesseract-ocr): nothing to measure.")
        return
    pages = 1 if ctx.quick else 6
    ctx.note(
        f"{pages} pages per variant, {len(_page_text(0).split())} words each; "
        "both sides one Tesseract thread (OMP_THREAD_LIMIT=1), language eng."
    )
    rows = []
    with IsolatedExtractor(300.0, 1024**3, 1, extractor=_extractor()) as sheaf:
        sheaf.warm()
        for dpi in (150, 300):
            for distorted in (False, True):
                ctx.progress(f"{dpi} dpi, {'noise+skew' if distorted else 'clean'}")
                rows.append(_variant(ctx, sheaf, binary, dpi, distorted, pages))
    ctx.table(
        "OCR per worker (one process, pages one after another)",
        [
            "variant",
            "pages",
            "direct pages/s",
            "Sheaf pages/s",
            "Sheaf / direct",
            "CER direct",
            "CER Sheaf",
        ],
        rows,
    )


def _extractor() -> LocalExtractor:
    return LocalExtractor(ocr=OcrOptions(page_timeout_seconds=300.0))


def _variant(
    ctx: Context, sheaf: IsolatedExtractor, binary: str, dpi: int, distorted: bool, pages: int
) -> list[object]:
    direct_seconds = sheaf_seconds = 0.0
    direct_errors = sheaf_errors = 0
    total_chars = 0
    for n in range(pages):
        source = _page_text(n)
        path = ctx.workdir / f"page-{dpi}-{int(distorted)}-{n}.png"
        _render(source, dpi, distorted, seed=n).save(path)
        started = time.perf_counter()
        direct = _tesseract(binary, path, dpi)
        direct_seconds += time.perf_counter() - started
        started = time.perf_counter()
        [page] = sheaf.extract(path, ContentType.PNG)
        sheaf_seconds += time.perf_counter() - started
        reference = _collapse(source)
        total_chars += len(reference)
        direct_errors += _distance(_collapse(direct), reference)
        sheaf_errors += _distance(_collapse(page.text), reference)
    direct_rate, sheaf_rate = pages / direct_seconds, pages / sheaf_seconds
    return [
        f"{dpi} dpi {'noise+skew' if distorted else 'clean'}",
        pages,
        round(direct_rate, 2),
        round(sheaf_rate, 2),
        percent(ratio(sheaf_rate, direct_rate)),
        percent(direct_errors / total_chars),
        percent(sheaf_errors / total_chars),
    ]


def _page_text(seed: int) -> str:
    """About 25 lines of plain words; the same seed gives the same page."""
    rng = random.Random(seed)
    lines, line = [], ""
    while len(lines) < 25:
        word = rng.choice(_WORDS)
        if len(line) + len(word) + 1 > _LINE_CHARS:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join(lines)


def _render(text: str, dpi: int, distorted: bool, seed: int) -> Image.Image:
    """A letter-size page at `dpi` with `text` in 11 pt; noise and skew if `distorted`."""
    size = round(_FONT_POINTS / 72 * dpi)
    page = Image.new("L", (int(8.5 * dpi), int(11 * dpi)), 255)
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=size)
    for n, line in enumerate(text.split("\n")):
        draw.text((dpi, dpi + n * size * 1.6), line, fill=0, font=font)
    if not distorted:
        return page
    rng = random.Random(seed)
    noise = Image.effect_noise(page.size, 40).point(lambda v: 0 if v < 30 else 255)
    speckled = Image.composite(page, noise, page.point(lambda v: 255 if v < 128 else 0))
    skewed = speckled.rotate(1.5 + rng.random() * 0.2, fillcolor=255, resample=Image.BICUBIC)
    return skewed.filter(ImageFilter.GaussianBlur(0.6))


def _tesseract(binary: str, path: Path, dpi: int) -> str:
    done = subprocess.run(
        [binary, str(path), "stdout", "-l", "eng", "--dpi", str(dpi)],
        capture_output=True,
        check=True,
        env={"OMP_THREAD_LIMIT": "1"},
    )
    return done.stdout.decode()


def _collapse(text: str) -> str:
    return " ".join(text.split()).lower()


def _distance(a: str, b: str) -> int:
    """Levenshtein distance, two rows at a time."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            )
        previous = current
    return previous[-1]
