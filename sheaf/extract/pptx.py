"""PPTX text with python-pptx: each slide is a page, numbered as PowerPoint numbers them.

A slide's page holds the text of its shapes in the order they are stacked (title and
placeholders, text boxes, grouped shapes, table cells joined by " | " per row), then its
speaker notes, which often carry more words than the slide itself. Pictures, charts and
media are not read (no OCR of embedded images: a deck with thousands of them costs no
more than its text, bad-inputs.md #34).

python-pptx reads parts fully into memory, so the package is checked first
(`sheaf.extract.ooxml.check_package`: zip bombs, DOCTYPE/entities, macro-enabled .pptm).
Error codes: `zip_bomb`, `unsafe_xml`, `corrupt_pptx`, `not_a_pptx`.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import pptx
from pptx.exc import PackageNotFoundError
from pptx.shapes.base import BaseShape
from pptx.shapes.graphfrm import GraphicFrame
from pptx.shapes.group import GroupShape
from pptx.slide import Slide

from sheaf.domain.models import Page
from sheaf.extract.ooxml import OfficeFormat, ZipLimits, check_package
from sheaf.extract.text import clean_text

PPTX = OfficeFormat(
    kind="PPTX",
    application="PowerPoint",
    main_type=b"application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml",
    macro_type=b"application/vnd.ms-powerpoint.presentation.macroEnabled.main+xml",
    corrupt_code="corrupt_pptx",
    wrong_code="not_a_pptx",
)


def extract_pptx(path: Path, limits: ZipLimits | None = None) -> Iterator[Page]:
    """One page per slide, numbered from 1, after the package passed its checks."""
    check_package(path, limits or ZipLimits(), PPTX)
    try:
        slides = list(pptx.Presentation(str(path)).slides)
    except (zipfile.BadZipFile, zlib.error, SyntaxError, EOFError) as exc:
        raise PPTX.corrupt(exc) from exc  # lxml's XMLSyntaxError is a SyntaxError
    except (PackageNotFoundError, KeyError, ValueError) as exc:
        raise PPTX.wrong("its PowerPoint parts are missing or of the wrong type") from exc
    for number, slide in enumerate(slides, start=1):
        try:
            text = slide_text(slide)
        except (SyntaxError, KeyError, ValueError) as exc:
            raise PPTX.corrupt(exc) from exc
        yield Page(number=number, text=clean_text(text))


def slide_text(slide: Slide) -> str:
    lines = list(_shapes_text(slide.shapes))
    if slide.has_notes_slide:
        notes = slide.notes_slide.notes_text_frame
        if notes is not None and notes.text.strip():
            lines.append(notes.text)
    return "\n".join(line for line in lines if line.strip())


def _shapes_text(shapes: Iterable[BaseShape]) -> Iterator[str]:
    for shape in shapes:
        if isinstance(shape, GroupShape):
            yield from _shapes_text(shape.shapes)
        elif isinstance(shape, GraphicFrame) and shape.has_table:
            for row in shape.table.rows:
                cells = (" ".join(cell.text.split()) for cell in row.cells)
                yield " | ".join(cell for cell in cells if cell)
        elif shape.has_text_frame:
            yield shape.text_frame.text  # type: ignore[attr-defined]
