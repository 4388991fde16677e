"""HTML, PPTX and XLSX: the text a reader sees, page numbers that mean something, and a
named permanent failure for hostile or broken packages (no OCR involved here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sheaf.domain.models import ContentType, Page
from sheaf.errors import ExtractionError
from sheaf.extract import LocalExtractor, ZipLimits
from sheaf.extract.html import sniff_encoding
from tests.bad_inputs import office
from tests.samples import make_pptx, make_xlsx, make_zip

pytestmark = pytest.mark.unit


def extract(tmp_path: Path, data: bytes, kind: ContentType, **limits: ZipLimits) -> list[Page]:
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    return list(LocalExtractor(**limits).extract(path, kind))


def failure(tmp_path: Path, data: bytes, kind: ContentType, **limits: ZipLimits) -> str:
    with pytest.raises(ExtractionError) as caught:
        extract(tmp_path, data, kind, **limits)
    assert len(caught.value.message) > 40  # a sentence a person can act on
    return caught.value.code


# --- HTML -------------------------------------------------------------------------------

PAGE = """<!DOCTYPE html><html><head><title>Harbour report</title>
<style>.secret { color: red }</style><script>var token = "never indexed";</script></head>
<body><h1>Inspection</h1><p>The <b>north</b> pier needs paint.</p>
<div hidden>hidden draft</div><noscript>enable scripts</noscript><template>tpl</template>
<table><tr><th>Pier</th><th>State</th></tr><tr><td>North</td><td>rust</td></tr></table>
<ul><li>first</li><li>second</li></ul>Closing words<br>after a break<!-- a comment -->
</body></html>"""


def test_html_is_its_visible_text_by_blocks(tmp_path: Path) -> None:
    [page] = extract(tmp_path, PAGE.encode(), ContentType.HTML)
    assert page == Page(
        1,
        "Harbour report\nInspection\nThe north pier needs paint.\nPier | State\n"
        "North | rust\nfirst\nsecond\nClosing words\nafter a break",
    )


def test_html_never_indexes_scripts_styles_or_hidden_content(tmp_path: Path) -> None:
    [page] = extract(tmp_path, PAGE.encode(), ContentType.HTML)
    for invisible in ["never indexed", "secret", "hidden draft", "enable scripts", "tpl"]:
        assert invisible not in page.text


@pytest.mark.parametrize(
    ("charset", "declaration"),
    [
        ("windows-1251", '<meta charset="windows-1251">'),
        ("shift_jis", '<meta http-equiv="Content-Type" content="text/html; charset=Shift_JIS">'),
        ("iso-8859-1", "<meta charset=latin1>"),
    ],
)
def test_html_is_decoded_in_the_charset_it_declares(
    tmp_path: Path, charset: str, declaration: str
) -> None:
    words = {"windows-1251": "Отчёт гавани", "shift_jis": "港の報告書", "iso-8859-1": "Café ô"}
    html = f"<html><head>{declaration}</head><body><p>{words[charset]}</p></body></html>"
    [page] = extract(tmp_path, html.encode(charset), ContentType.HTML)
    assert page.text == words[charset]


def test_charset_sniffing_follows_the_browsers() -> None:
    assert sniff_encoding(b"\xef\xbb\xbf<html>") == "utf-8-sig"
    assert sniff_encoding("<html>".encode("utf-16")) == "utf-16"
    assert sniff_encoding(b"<meta charset=ascii>") == "cp1252"  # as WHATWG maps it
    assert sniff_encoding(b"<meta charset=utf-16>") == "utf-8"  # ASCII bytes: not UTF-16
    assert sniff_encoding(b"<meta charset=no-such-charset>") == "utf-8"
    assert sniff_encoding(b"<html>" + b" " * 2000 + b"<meta charset=koi8-r>") == "utf-8"


def test_html_on_one_huge_line_is_read_whole(tmp_path: Path) -> None:
    data = office.html_one_line(5 * 1024 * 1024)
    [page] = extract(tmp_path, data, ContentType.HTML)
    assert page.text == data.split(b"<p>")[1].split(b"</p>")[0].decode().strip()


def test_deeply_nested_html_does_not_exhaust_the_stack(tmp_path: Path) -> None:
    [page] = extract(tmp_path, office.html_deeply_nested(100_000), ContentType.HTML)
    assert page.text.startswith("top")


# --- PPTX -------------------------------------------------------------------------------


def test_pptx_slides_are_pages_with_their_notes(tmp_path: Path) -> None:
    deck = make_pptx(
        [("Welcome", "Agenda for today"), ("Budget", "Costs rose")],
        notes={2: "Mention the lighthouse"},
    )
    assert extract(tmp_path, deck, ContentType.PPTX) == [
        Page(1, "Welcome\nAgenda for today"),
        Page(2, "Budget\nCosts rose\nMention the lighthouse"),
    ]


def test_pptx_tables_and_groups_are_read(tmp_path: Path) -> None:
    [page] = extract(tmp_path, office.pptx_with_table_and_group(), ContentType.PPTX)
    assert page.text.split("\n") == ["Quarter | Revenue", "Q1 | 100", "grouped words"]


# --- XLSX -------------------------------------------------------------------------------


def test_xlsx_sheets_are_pages_of_rows(tmp_path: Path) -> None:
    book = make_xlsx({"Budget": [["Item", "Cost"], ["Paint", 12.5]], "Staff": [["Ada", None]]})
    assert extract(tmp_path, book, ContentType.XLSX) == [
        Page(1, "Budget\nItem | Cost\nPaint | 12.5"),
        Page(2, "Staff\nAda"),
    ]


def test_xlsx_formulas_are_their_cached_values(tmp_path: Path) -> None:
    [page] = extract(tmp_path, office.xlsx_with_cached_formula(), ContentType.XLSX)
    assert page.text == "Sheet1\n21 | 42"  # B1 is =A1*2, cached as 42 by Excel


# --- hostile packages: bad-inputs.md #34 -------------------------------------------------

HOSTILE = {
    "pptx-zip-bomb": (office.pptx_zip_bomb, ContentType.PPTX, "zip_bomb"),
    "xlsx-zip-bomb": (office.xlsx_zip_bomb, ContentType.XLSX, "zip_bomb"),
    "pptx-external-entity": (office.pptx_external_entity, ContentType.PPTX, "unsafe_xml"),
    "xlsx-external-entity": (office.xlsx_external_entity, ContentType.XLSX, "unsafe_xml"),
    "xlsx-entity-expansion": (office.xlsx_entity_expansion, ContentType.XLSX, "unsafe_xml"),
    "pptm-macro": (office.pptm, ContentType.PPTX, "not_a_pptx"),
    "xlsm-macro": (office.xlsm, ContentType.XLSX, "not_an_xlsx"),
    "docx-as-xlsx": (office.docx_as_xlsx, ContentType.XLSX, "not_an_xlsx"),
    "xlsx-bad-crc": (office.xlsx_bad_crc, ContentType.XLSX, "corrupt_xlsx"),
    "pptx-truncated": (office.pptx_truncated, ContentType.PPTX, "corrupt_pptx"),
}


@pytest.mark.parametrize(("make", "kind", "code"), HOSTILE.values(), ids=HOSTILE)
def test_hostile_office_packages_are_refused_by_name(
    tmp_path: Path, make: office.Maker, kind: ContentType, code: str
) -> None:
    assert failure(tmp_path, make(), kind) == code


def test_the_entry_limit_applies_to_every_office_format(tmp_path: Path) -> None:
    limits = ZipLimits(max_entries=5)
    assert failure(tmp_path, make_pptx([("a", "b")]), ContentType.PPTX, zip_limits=limits) == (
        "zip_bomb"
    )
    assert failure(tmp_path, make_zip({"a": b""}), ContentType.XLSX) == "not_an_xlsx"


# --- clean_text: the ASCII fast path agrees with the general one ------------------------


@pytest.mark.parametrize(
    "text", ["a\r\nb\rc\n", "nul\x00here\r\n", "plain", "", "\r\r\n\n", "caf\u00e9\r\n\x00\u2028x"]
)
def test_clean_text_is_the_same_on_both_paths(text: str) -> None:
    from sheaf.extract.text import _NEWLINES, _UNSTORABLE, clean_text

    assert clean_text(text) == _UNSTORABLE.sub("", _NEWLINES.sub("\n", text))
