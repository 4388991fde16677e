"""`sheaf up` on the embedded default reads every accepted format, scans included: each
document completes and a phrase from it is found on its page, slide or sheet."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import (
    Proc,
    free_port,
    get_json,
    sheaf_env,
    start,
    upload,
    wait_ready,
    wait_status,
)
from tests.samples import make_image, make_pptx, make_scanned_pdf, make_xlsx

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("tesseract")]

FILLER = "routine paragraph about weather and tides"  # page text long enough to chunk alone

# name → (bytes, the page the phrase is on, a query of the phrase's words)
DOCUMENTS = {
    "scan.pdf": (
        make_scanned_pdf(
            [
                f"Pelican survey counted nesting pairs {FILLER}",
                f"Marmalade factory passed inspection {FILLER}",
            ]
        ),
        2,
        "marmalade factory inspection",
    ),
    "mixed.pdf": (
        make_scanned_pdf(
            [
                f"Typed cover page of the drainage file {FILLER}",
                f"Cobalt mine drainage report filed {FILLER}",
            ],
            typed={1},
        ),
        2,
        "cobalt mine drainage",
    ),
    "poster.png": (
        make_image([f"Lantern festival budget approved {FILLER}"]),
        1,
        "lantern festival budget",
    ),
    "fax.tiff": (
        make_image(
            [
                f"Cover sheet of the census {FILLER}",
                f"Walrus colony census {FILLER}",
                f"Closing remarks of the census {FILLER}",
            ],
            "TIFF",
        ),
        2,
        "walrus colony",
    ),
    "page.html": (
        (
            "<!DOCTYPE html><html><head><title>Almanac</title>"
            "<script>var hidden = 'quokka';</script></head><body>"
            f"<p>Glacier retreat measured by volunteers. {FILLER}</p></body></html>"
        ).encode(),
        1,
        "glacier retreat volunteers",
    ),
    "deck.pptx": (
        make_pptx(
            [("Opening slide", FILLER), ("Second slide", FILLER)],
            notes={2: "Speaker notes mention the zeppelin hangar lease"},
        ),
        2,
        "zeppelin hangar",
    ),
    "book.xlsx": (
        make_xlsx(
            {
                "Summary": [["Overview", FILLER]],
                "Stock": [["Saffron threads", 12, FILLER]],
            }
        ),
        2,
        "saffron threads",
    ),
}


@pytest.fixture
async def sheaf_up(tmp_path: Path, procs: list[Proc]) -> str:
    port = free_port()
    # Small chunks, so each page, slide or sheet is a chunk of its own.
    env = sheaf_env(SHEAF_WORKERS="2", SHEAF_CHUNK_SIZE="100", SHEAF_CHUNK_OVERLAP="20")
    proc = start(procs, ["-m", "sheaf", "up", "--port", str(port)], env, tmp_path, "up")
    url = f"http://127.0.0.1:{port}"
    await wait_ready(url, proc)
    return url


async def test_every_format_completes_and_is_found_on_its_page(
    sheaf_up: str, http: aiohttp.ClientSession
) -> None:
    url = sheaf_up
    ids = {}
    for name, (data, _, _) in DOCUMENTS.items():
        status, body = await upload(http, url, "formats", name, data)
        assert status == 202, (name, body)
        ids[name] = body["id"]
    for name, document_id in ids.items():
        doc = await wait_status(http, url, document_id, {"completed", "failed"}, timeout=180)
        assert doc["status"] == "completed", (name, doc)
    for name, (_, page, query) in DOCUMENTS.items():
        results = await get_json(http, f"{url}/v1/collections/formats/search?q={query}&k=3")
        best = results["results"][0]
        assert (best["filename"], best["pages"]) == (name, [page]), results
        assert query.split()[0] in best["text"].lower()
    results = await get_json(http, f"{url}/v1/collections/formats/search?q=quokka&k=3")
    assert all("quokka" not in result["text"] for result in results["results"])
