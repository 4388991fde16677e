"""The visible text of an HTML page, with lxml (libxml2's HTML parser, already installed
for python-docx): fast in C, tolerant of broken markup, and bounded on deep nesting.

What is read: the title and the body's text, with a line break at every block element
(paragraphs, headings, list items, table rows...) and " | " between table cells, so a
search matches words as a reader sees them. What is never read: scripts, styles,
templates, `<noscript>`, comments, and elements marked `hidden` (bad-inputs.md #35).

The charset is found the way browsers find it (WHATWG "encoding sniffing", without an
HTTP header): a byte-order mark, else a `<meta charset>` or `http-equiv` declaration in
the first 1024 bytes, else an XML declaration, else UTF-8. Labels browsers treat as
Windows-1252 (latin1, ascii, iso-8859-1) are read as Windows-1252. Undecodable bytes
become U+FFFD, never a failure. Pages with huge text nodes (50 MB on one line) parse
with libxml2's `huge_tree`; the extraction child's time and memory limits bound the rest.
HTML has no pages: the text is page 1. Error code: `corrupt_html` (nothing parseable).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from pathlib import Path

import lxml.etree
import lxml.html

from sheaf.domain.models import Page
from sheaf.errors import ExtractionError
from sheaf.extract.text import clean_text

_PRESCAN_BYTES = 1024
_META_CHARSET = re.compile(
    rb"<meta[^>]{0,512}?charset\s*=\s*[\"']?\s*([A-Za-z0-9._:-]{1,40})", re.IGNORECASE
)
_XML_ENCODING = re.compile(rb"<\?xml[^>]{0,200}?encoding\s*=\s*[\"']([A-Za-z0-9._-]{1,40})")
_WINDOWS_1252_ALIASES = frozenset({"latin1", "latin-1", "iso-8859-1", "iso8859-1", "ascii"})
_WINDOWS_1252_ALIASES |= {"us-ascii", "l1", "iso_8859-1", "cp819"}
_INVISIBLE = frozenset({"script", "style", "template", "noscript", "iframe", "object"})
_INVISIBLE |= {"svg", "math", "canvas", "select"}
_BLOCKS = frozenset(
    {"address", "article", "aside", "blockquote", "br", "caption", "dd", "details", "div"}
    | {"dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "header", "hr"}
    | {"h1", "h2", "h3", "h4", "h5", "h6", "li", "main", "nav", "ol", "p", "pre", "section"}
    | {"summary", "table", "tbody", "tfoot", "thead", "title", "tr", "ul"}
)
_CELLS = frozenset({"td", "th"})
_SPACE_LIKE = str.maketrans(dict.fromkeys("\t\f\v\u00a0", " "))
_BLANK_LINES = re.compile(r"\n\s*\n+")


def extract_html(path: Path) -> Iterator[Page]:
    """The page's visible text as page 1."""
    data = path.read_bytes()
    text = data.decode(sniff_encoding(data), errors="replace")
    parser = lxml.html.HTMLParser(
        encoding="utf-8", huge_tree=True, remove_comments=True, remove_pis=True
    )
    try:
        root = lxml.html.document_fromstring(text.encode("utf-8"), parser=parser)
    except (lxml.etree.ParserError, lxml.etree.XMLSyntaxError, ValueError) as exc:
        raise ExtractionError(
            f"The HTML page cannot be parsed ({type(exc).__name__}: {str(exc)[:200]}). "
            "Save it again from a browser and upload that.",
            code="corrupt_html",
        ) from exc
    yield Page(number=1, text=_tidy(visible_text(root)))


def sniff_encoding(data: bytes) -> str:
    """The Python codec for `data`, by BOM, then declarations in the first 1024 bytes."""
    if data.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    head = data[:_PRESCAN_BYTES]
    declared = _META_CHARSET.search(head) or _XML_ENCODING.search(head)
    if declared is None:
        return "utf-8"
    label = declared.group(1).decode("ascii").lower()
    if label in _WINDOWS_1252_ALIASES:
        return "cp1252"
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return "utf-8"
    return "utf-8" if name.startswith("utf-16") else name  # the bytes were ASCII: not UTF-16


def visible_text(root: lxml.html.HtmlElement) -> str:
    """Text as a reader sees it; iterative, so deep nesting cannot exhaust the stack."""
    parts: list[str] = []
    walk = lxml.etree.iterwalk(root, events=("start", "end"))
    for event, element in walk:
        tag = element.tag if isinstance(element.tag, str) else ""
        if event == "start":
            if tag in _INVISIBLE or element.get("hidden") is not None:
                walk.skip_subtree()
                parts.append(element.tail or "")  # `end` never comes for a skipped element
                continue
            if tag == "title" or (tag in _BLOCKS and tag != "br"):
                parts.append("\n")
            parts.append(element.text or "")
            continue
        parts.append("\n" if tag in _BLOCKS else " | " if tag in _CELLS else "")
        parts.append(element.tail or "")
    return "".join(parts)


def _tidy(text: str) -> str:
    """Runs of blanks as one space, no blank lines. `str` methods, not regexes, where a
    50 MB line makes the difference: seconds become tenths of a second."""
    text = clean_text(text).translate(_SPACE_LIKE)
    while "  " in text:
        text = text.replace("  ", " ")
    lines = (line.strip(" |") for line in text.split("\n"))
    return _BLANK_LINES.sub("\n", "\n".join(lines)).strip()
