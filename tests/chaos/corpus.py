"""The chaos run's documents: mixed types, unique bytes, big enough to be killed mid-way.

Each filename carries the outcome the document must reach, so the checker can judge
it from the database alone: `ok--...` must complete, `expect-<code>--...` must fail with
that `error_code`. About one in twenty documents is a bad input that must fail.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from tests.bad_inputs import pdf as bad_pdf
from tests.samples import encrypt_pdf, make_docx, rezip_docx

WORDS = [
    "ledger",
    "audit",
    "control",
    "revenue",
    "inventory",
    "payroll",
    "treasury",
    "compliance",
    "asset",
    "lease",
    "accrual",
    "margin",
    "invoice",
    "vendor",
    "budget",
    "forecast",
    "capital",
    "equity",
    "liability",
    "reserve",
]

FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"

Maker = Callable[[random.Random, int, float], bytes]


def words(rng: random.Random, count: int) -> str:
    return " ".join(f"{rng.choice(WORDS)}{rng.randrange(1000)}" for _ in range(count))


def text_file(rng: random.Random, n: int, scale: float) -> bytes:
    paragraphs = [words(rng, 120) for _ in range(int(rng.randint(150, 450) * scale))]
    return f"Document {n}\n\n".encode() + "\n\n".join(paragraphs).encode()


def markdown_file(rng: random.Random, n: int, scale: float) -> bytes:
    sections = [
        f"## Section {i}\n\n{words(rng, 150)}" for i in range(int(rng.randint(80, 240) * scale))
    ]
    return f"# Document {n}\n\n".encode() + "\n\n".join(sections).encode()


def pdf_file(rng: random.Random, n: int, scale: float) -> bytes:
    return multi_page_pdf(
        [f"Document {n} " + words(rng, 250) for _ in range(int(rng.randint(10, 30) * scale) or 1)]
    )


def docx_file(rng: random.Random, n: int, scale: float) -> bytes:
    return make_docx(
        [f"Document {n}"] + [words(rng, 80) for _ in range(int(rng.randint(100, 300) * scale))]
    )


def multi_page_pdf(pages: list[str]) -> bytes:
    """A PDF with one page of real text per string, ~20 lines each (fast to build)."""
    objects = {1: b"<< /Type /Catalog /Pages 2 0 R >>", 3: FONT}
    kids = []
    for index, text in enumerate(pages):
        page, content = 4 + 2 * index, 5 + 2 * index
        kids.append(b"%d 0 R" % page)
        lines = [text[i : i + 90] for i in range(0, len(text), 90)]
        ops = (
            b"BT /F1 10 Tf 12 TL 40 760 Td "
            + b" ".join(b"(%s) '" % line.encode() for line in lines)
            + b" ET"
        )
        objects[page] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
            b"/Resources << /Font << /F1 3 0 R >> >> >>" % content
        )
        objects[content] = bad_pdf.stream(ops)
    objects[2] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(kids), len(kids))
    return bad_pdf.assemble(objects)


def encrypted(rng: random.Random, n: int, scale: float) -> bytes:
    return encrypt_pdf(multi_page_pdf([f"Secret document {n} " + words(rng, 50)]), "pw")


def scanned(rng: random.Random, n: int, scale: float) -> bytes:
    return bad_pdf.scanned_without_text_layer() + b"%% scan %d\n" % n


def truncated(rng: random.Random, n: int, scale: float) -> bytes:
    data = pdf_file(rng, n, scale)
    return data[: len(data) // 2]


def zip_bomb(rng: random.Random, n: int, scale: float) -> bytes:
    zeros = {"word/media/zeros.bin": bytes(40 * 1024 * 1024)}  # deflates ~1000:1
    return rezip_docx(make_docx([f"Bomb {n}"]), zeros)


GOOD: list[tuple[str, str, Maker, int]] = [
    ("pdf", "", pdf_file, 40),
    ("docx", "", docx_file, 25),
    ("txt", "", text_file, 25),
    ("md", "", markdown_file, 5),
]
BAD: list[tuple[str, str, Maker, int]] = [
    ("pdf", "encrypted", encrypted, 2),
    ("pdf", "no_text", scanned, 1),
    ("pdf", "corrupt_pdf", truncated, 1),
    ("docx", "zip_bomb", zip_bomb, 1),
]


def document(n: int, seed: int, scale: float = 1.0) -> tuple[str, bytes]:
    """The `n`-th document of a run: (filename, bytes), the same for the same seed."""
    rng = random.Random(f"{seed}:{n}")
    kinds = GOOD + BAD
    suffix, code, make, _ = rng.choices(kinds, weights=[k[3] for k in kinds])[0]
    prefix = f"expect-{code}" if code else "ok"
    return f"{prefix}--{n:05d}.{suffix}", make(rng, n, scale)
