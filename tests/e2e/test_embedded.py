"""`sheaf up` on the embedded default, driven over real HTTP and through the CLI."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
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
from tests.samples import encrypt_pdf, make_docx, make_pdf, make_utf16_text

pytestmark = pytest.mark.e2e

PAGES = [
    "Quarterly audit overview. The committee met in March to review internal controls, "
    "access management and the segregation of duties across the finance department, "
    "and asked for a follow-up review of vendor onboarding before the next quarter.",
    "Revenue recognition for subscription contracts follows the straight line method "
    "across the service period, with deferred income reported monthly and reconciled "
    "against invoicing at each close by the controller's office.",
    "Inventory counts were observed at the northern warehouse without exceptions; "
    "cycle counts at the southern site showed minor variances that were explained and "
    "corrected before the ledger was closed for the period.",
]


@pytest.fixture
async def sheaf_up(tmp_path: Path, procs: list[Proc]) -> str:
    port = free_port()
    env = sheaf_env(SHEAF_WORKERS="2", SHEAF_CHUNK_SIZE="300", SHEAF_CHUNK_OVERLAP="50")
    proc = start(procs, ["-m", "sheaf", "up", "--port", str(port)], env, tmp_path, "up")
    url = f"http://127.0.0.1:{port}"
    await wait_ready(url, proc)
    return url


async def test_three_formats_complete_and_search_finds_the_right_page(
    sheaf_up: str, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url = sheaf_up
    pdf = make_pdf(PAGES)
    files = {
        "report.pdf": pdf,
        "ledger.docx": make_docx(
            ["Ledger summary before the table.", "Closing notes after the table."],
            [["account", "balance"], ["cash", "1200"], ["receivables", "800"]],
        ),
        "notes.txt": make_utf16_text("Field notes: the auditors visited the plant twice."),
    }
    ids = {}
    for name, data in files.items():
        status, body = await upload(http, url, "audit-2025", name, data)
        assert status == 202, body
        assert body["status"] == "queued"
        assert body["links"]["self"] == f"/v1/documents/{body['id']}"
        ids[name] = body["id"]

    for document_id in ids.values():
        doc = await wait_status(http, url, document_id, {"completed", "failed"})
        assert doc["status"] == "completed", doc
        assert doc["chunk_count"] >= 1
        assert doc["attempts"] == 1
        [attempt] = doc["history"]
        assert attempt["outcome"] == "completed"
        assert {"download", "extract", "chunk", "embed", "index"} <= set(attempt["stage_seconds"])
    pdf_doc = await get_json(http, f"{url}/v1/documents/{ids['report.pdf']}")
    assert pdf_doc["page_count"] == 3
    assert pdf_doc["content_type"] == "application/pdf"
    docx_doc = await get_json(http, f"{url}/v1/documents/{ids['ledger.docx']}")
    assert "wordprocessingml" in docx_doc["content_type"]

    # Words of page 2, reordered, find a page-2 chunk first.
    query = "period service straight contracts recognition revenue"
    results = await get_json(http, f"{url}/v1/collections/audit-2025/search?q={query}&k=5")
    best = results["results"][0]
    assert best["document_id"] == ids["report.pdf"]
    assert best["pages"] == [2]
    assert best["filename"] == "report.pdf"
    assert "straight line" in best["text"]

    # The DOCX table is searchable, in place.
    results = await get_json(http, f"{url}/v1/collections/audit-2025/search?q=receivables&k=1")
    assert results["results"][0]["document_id"] == ids["ledger.docx"]

    # The same bytes again: 200 with the same document.
    status, body = await upload(http, url, "audit-2025", "copy-of-report.pdf", pdf)
    assert status == 200
    assert body["id"] == ids["report.pdf"]
    assert body["duplicate"] is True
    # ...but in another collection it is a new document.
    status, body = await upload(http, url, "other", "report.pdf", pdf)
    assert status == 202
    assert body["id"] != ids["report.pdf"]


async def test_failure_is_explained_and_can_be_retried(
    sheaf_up: str, http: aiohttp.ClientSession
) -> None:
    url = sheaf_up
    locked = encrypt_pdf(make_pdf(["secret page"]), "pw")
    status, body = await upload(http, url, "legal", "locked.pdf", locked)
    assert status == 202
    doc = await wait_status(http, url, body["id"], {"failed", "completed"})
    assert doc["status"] == "failed"
    assert doc["error_code"] == "encrypted"
    assert doc["attempts"] == 1  # permanent: no retries
    # The file itself is the problem: no retry is offered (sheaf.domain.failures)...
    assert "retry" not in doc["links"]

    status, again = await upload(http, url, "legal", "locked.pdf", locked)
    assert status == 200
    assert again["id"] == body["id"]

    failed = await get_json(http, f"{url}/v1/admin/failed")
    assert [d["id"] for d in failed["documents"]] == [body["id"]]
    listing = await get_json(http, f"{url}/v1/collections/legal/documents?status=failed")
    assert [d["id"] for d in listing["documents"]] == [body["id"]]

    # ...but an operator who knows better may still retry it.
    async with http.post(f"{url}/v1/documents/{body['id']}/retry") as response:
        assert response.status == 202
    doc = await wait_status(http, url, body["id"], {"failed"}, timeout=30)
    # A fresh attempt budget was spent and recorded in the history.
    assert [a["outcome"] for a in doc["history"]] == ["permanent", "permanent"]

    async with http.post(f"{url}/v1/documents/{body['id']}/retry") as response:
        assert response.status == 202
    await wait_status(http, url, body["id"], {"failed"})
    stats = await get_json(http, f"{url}/v1/stats")
    assert stats["counts"]["failed"] == 1


async def test_rejections_are_json_with_a_code(sheaf_up: str, http: aiohttp.ClientSession) -> None:
    url = sheaf_up
    status, body = await upload(http, url, "c", "image.pdf", b"GIF89a" + b"\0" * 64)
    assert status == 415
    assert body["error"]["code"] == "unsupported_type"
    assert "PDF" in body["error"]["message"]
    async with http.post(f"{url}/v1/collections/c/documents", data=b"x") as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "not_multipart"
    async with http.get(f"{url}/v1/documents/nope") as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"
    async with http.get(f"{url}/v1/nothing-here") as response:
        assert response.status == 404
        assert "error" in await response.json()


async def test_delete_tombstones_then_cleans(
    sheaf_up: str, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url = sheaf_up
    status, body = await upload(http, url, "tmp", "a.txt", b"delete me soon, please")
    await wait_status(http, url, body["id"], {"completed"})
    blobs = [p for p in (tmp_path / ".sheaf" / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == 1
    async with http.delete(f"{url}/v1/documents/{body['id']}") as response:
        assert response.status == 202
        assert (await response.json())["status"] == "deleted"
    results = await get_json(http, f"{url}/v1/collections/tmp/search?q=delete+me")
    assert results["results"] == []
    for _ in range(100):
        if not any(p.is_file() for p in (tmp_path / ".sheaf" / "blobs").rglob("*")):
            break
        await asyncio.sleep(0.1)
    assert not any(p.is_file() for p in (tmp_path / ".sheaf" / "blobs").rglob("*"))
    doc = await get_json(http, f"{url}/v1/documents/{body['id']}")
    assert doc["status"] == "deleted"  # the tombstone outlives its blob
    # Uploading the same bytes again makes a new, live document.
    status, again = await upload(http, url, "tmp", "a.txt", b"delete me soon, please")
    assert status == 202
    assert again["id"] != body["id"]


async def test_cli_uploads_a_folder_and_searches(sheaf_up: str, tmp_path: Path) -> None:
    folder = tmp_path / "inbox"
    (folder / "sub").mkdir(parents=True)
    (folder / "one.txt").write_text("The harbour crane inspection passed in June.")
    (folder / "sub" / "two.pdf").write_bytes(make_pdf(["Bridge load testing results."]))
    (folder / "bad.bin").write_bytes(b"\x7fELF" + b"\0" * 40)
    env = sheaf_env(SHEAF_API_URL=sheaf_up)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sheaf", *args], env=env, capture_output=True, text=True
        )

    done = cli("upload", str(folder), "-c", "ports")
    assert done.returncode == 1, done.stderr  # one file was rejected
    assert "3 file(s): 2 queued, 1 rejected" in done.stdout
    assert "unsupported_type" in done.stderr
    for _ in range(100):
        status = cli("status", "--json")
        if '"completed": 2' in status.stdout:
            break
        time.sleep(0.2)
    assert '"completed": 2' in status.stdout
    found = cli("search", "crane inspection harbour", "-c", "ports")
    assert found.returncode == 0, found.stderr
    assert found.stdout.startswith("1. one.txt p.1")
    failed = cli("failed", "list")
    assert "no failed documents" in failed.stdout
