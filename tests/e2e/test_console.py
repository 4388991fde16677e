"""The web console (issue #11) in headless Chromium against a real `sheaf up`.

A person's path through it: upload files and watch them complete, see a failure in plain
words and retry it, search and find the page, browse and filter documents, open one and
delete it, read the admin counts; with the Service Bus emulator, re-drive and purge
dead-lettered messages; with keys required, sign in. After every step a screenshot goes
to test-artifacts/console/ and axe-core must find no serious or critical violation.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from tests.e2e.conftest import Proc, get_json, sheaf_env, start, upload, wait_status
from tests.e2e.console_support import Console, browser_fixture, expect, sheaf_up  # noqa: F401
from tests.openai_fake import FakeOpenAI, Fault, openai_fake_fixture  # noqa: F401
from tests.samples import encrypt_pdf, make_pdf
from tests.servicebus_fixtures import ServiceBusEmulator

if TYPE_CHECKING:
    from playwright.async_api import Browser, Locator, Page

pytestmark = pytest.mark.e2e

PAGES = [
    "Quarterly audit overview. The committee met in March to review internal controls, "
    "access management and the segregation of duties across the finance department.",
    "Revenue recognition for subscription contracts follows the straight line method "
    "across the service period, with deferred income reported monthly and reconciled.",
    "Inventory counts were observed at the northern warehouse without exceptions; cycle "
    "counts at the southern site showed minor variances that were explained.",
]
CHUNKING = {"SHEAF_CHUNK_SIZE": "300", "SHEAF_CHUNK_OVERLAP": "50"}

# Records every status each upload row shows, so a test can tell the page updated live.
WATCH_BADGES = """() => {
    window.seenStatuses = {};
    const record = () => {
        for (const row of document.querySelectorAll("tr[data-upload]")) {
            const name = row.querySelector("th").textContent;
            const badge = row.querySelector(".badge")?.textContent;
            const seen = (window.seenStatuses[name] ??= []);
            if (badge && seen.at(-1) !== badge) seen.push(badge);
        }
    };
    new MutationObserver(record).observe(document.body, {subtree: true, childList: true});
}"""


def text_file(name: str, text: str) -> dict[str, Any]:
    return {"name": name, "mimeType": "text/plain", "buffer": text.encode()}


def pdf_file(name: str, data: bytes) -> dict[str, Any]:
    return {"name": name, "mimeType": "application/pdf", "buffer": data}


def document_id_of(page: Page) -> str:
    """The document id in the address of a document's page (#/documents/<id>)."""
    return page.url.rsplit("/", 1)[1]


def upload_row(ui: Console, name: str) -> Locator:
    return ui.page.locator("tr[data-upload]", has=ui.page.get_by_role("rowheader", name=name))


async def seen_statuses(ui: Console, name: str) -> list[str]:
    seen: list[str] = await ui.page.evaluate("name => window.seenStatuses[name] ?? []", name)
    return seen


# -- serving, without a browser ------------------------------------------------------------


async def test_pages_are_served_locked_down_and_collections_are_listed(
    tmp_path: Path, procs: list[Proc], http: aiohttp.ClientSession
) -> None:
    url = await sheaf_up(tmp_path, procs)
    async with http.get(f"{url}/", allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "/console/"
    async with http.get(f"{url}/console/") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy
        assert "default-src 'none'" in policy
        page = await response.text()
    for asset in ("main.js", "console.css", "icon.svg"):
        assert asset in page
    async with http.get(f"{url}/console/main.js") as response:
        assert response.status == 200
        assert response.content_type == "text/javascript"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    for missing in ("/console/nothing.js", "/console/%2e%2e%2fconsole_api.py", "/console/x/y"):
        async with http.get(f"{url}{missing}") as response:
            assert response.status == 404, missing

    assert await get_json(http, f"{url}/v1/collections") == {"collections": [], "complete": True}
    ids = []
    for collection, name in (("beta", "b.txt"), ("alpha", "a1.txt"), ("alpha", "a2.txt")):
        status, body = await upload(http, url, collection, name, f"text of {name}".encode())
        assert status == 202, body
        ids.append(body["id"])
    for document_id in ids:
        await wait_status(http, url, document_id, {"completed"})
    async with http.delete(f"{url}/v1/documents/{ids[0]}") as response:
        assert response.status == 202
    listed = await get_json(http, f"{url}/v1/collections")
    assert listed["complete"] is True
    assert [(c["name"], c["documents"], c["counts"]) for c in listed["collections"]] == [
        ("alpha", 2, {"completed": 2})  # beta's only document is deleted: beta is gone
    ]
    assert listed["collections"][0]["links"]["search"] == "/v1/collections/alpha/search"


# -- a person's path through the console -------------------------------------------------


async def test_upload_watch_fail_retry_search_browse_delete_and_admin(
    browser: Browser, tmp_path: Path, procs: list[Proc], http: aiohttp.ClientSession
) -> None:
    url = await sheaf_up(tmp_path, procs, **CHUNKING)
    ui = await Console.open(browser, url, "embedded")
    page = ui.page
    await expect(page.get_by_role("heading", level=1)).to_have_text("Upload")
    await expect(page.locator("#session")).to_contain_text("No sign-in needed")
    await ui.check("upload-empty")

    # Two files through the file input: both go queued → … → completed, shown live.
    await page.evaluate(WATCH_BADGES)
    await page.get_by_label("Collection").fill("audit-2025")
    await page.get_by_label("Files", exact=True).set_input_files(
        [
            pdf_file("report.pdf", make_pdf(PAGES)),
            text_file("notes.txt", "Field notes: the auditors visited the plant twice."),
        ]
    )
    for name in ("report.pdf", "notes.txt"):
        await expect(upload_row(ui, name).locator(".badge")).to_have_text("completed")
        seen = await seen_statuses(ui, name)
        assert seen[0] in {"waiting", "uploading", "queued"}, seen
        assert "queued" in seen, seen
        assert seen[-1] == "completed", seen
    await expect(upload_row(ui, "report.pdf")).to_contain_text("3 pages")
    await expect(page.locator("#upload-summary")).to_have_text("2 files: 2 completed.")
    await ui.check("two-files-completed")

    # A file that cannot be read: its reason in plain words, and a retry.
    locked = encrypt_pdf(make_pdf(["Secret page."]), "pw")
    await page.get_by_label("Files", exact=True).set_input_files([pdf_file("locked.pdf", locked)])
    row = upload_row(ui, "locked.pdf")
    await expect(row.locator(".badge")).to_have_text("failed")
    await expect(row).to_contain_text("protected by a password")
    await expect(row).to_contain_text("(encrypted)")
    await ui.check("failed-in-plain-words")
    # Retrying cannot mend a password: no Retry is offered, only the details.
    await expect(row.get_by_role("button", name="Retry locked.pdf")).to_have_count(0)
    await expect(row.get_by_role("link", name="Details of locked.pdf")).to_be_visible()

    # Search: the mode (hybrid unless chosen) goes to the API; the page-2 chunk of
    # report.pdf first, whole query words highlighted: not the stop word "the", not the
    # "come" inside "income".
    await page.get_by_role("link", name="Search", exact=True).click()
    await expect(page.get_by_label("Collection")).to_have_value("audit-2025")
    await expect(page.get_by_label("Mode")).to_have_value("hybrid")
    await page.get_by_label("Search for").fill("the revenue recognition straight line come")
    async with page.expect_request(lambda r: "/search?" in r.url) as sent:
        await page.get_by_role("button", name="Search").click()
    assert parse_qs(urlsplit((await sent.value).url).query)["mode"] == ["hybrid"]
    best = page.locator("li.hit").first
    await expect(best.get_by_role("link")).to_have_text("report.pdf")
    await expect(best.locator(".hit-pages")).to_have_text("page 2")
    await expect(best.locator(".hit-text")).to_contain_text("the straight line")
    await expect(best.locator(".hit-text")).to_contain_text("income")
    marks = {m.lower() for m in await best.locator("mark").all_inner_texts()}
    assert marks == {"revenue", "recognition", "straight", "line"}, marks
    # Hybrid search says which rankings found the hit, and where.
    await expect(best.locator(".hit-rankings")).to_have_text(re.compile(r"(keyword|vector) #\d"))
    await ui.check("search-hit-on-page-2")

    # Keyword mode: the API ranks by keywords alone, and the hit says so.
    await page.get_by_label("Mode").select_option("keyword")
    async with page.expect_request(lambda r: "/search?" in r.url) as sent:
        await page.get_by_role("button", name="Search").click()
    assert parse_qs(urlsplit((await sent.value).url).query)["mode"] == ["keyword"]
    await expect(best.locator(".ranking")).to_have_text(["keyword #1"])
    await expect(page.get_by_label("Mode")).to_have_value("keyword")  # kept in the URL
    await ui.check("search-rankings")

    # Documents, filtered by status.
    await page.get_by_role("link", name="Documents", exact=True).click()
    results = page.locator("section[aria-labelledby=results-title]")
    await expect(results.locator("tbody tr")).to_have_count(3)
    await page.get_by_label("Status").select_option("completed")
    await page.get_by_role("button", name="Show documents").click()
    await expect(results.get_by_role("heading")).to_have_text("completed documents in audit-2025")
    await expect(results.locator("tbody tr")).to_have_count(2)
    await ui.check("documents-completed")
    await page.get_by_label("Status").select_option("failed")
    await page.get_by_role("button", name="Show documents").click()
    await expect(results.locator("tbody tr")).to_have_count(1)
    await expect(results.locator("tbody tr")).to_contain_text("locked.pdf")
    await expect(results.locator("tbody tr td code")).to_have_text("encrypted")  # the error
    await ui.check("documents-failed")

    # Its page: the failure told once, no Retry, and the stage it failed in.
    await results.get_by_role("link", name="locked.pdf").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("locked.pdf")
    await expect(page.locator("#no-retry")).to_contain_text("the file itself is the problem")
    await expect(page.get_by_role("button", name="Retry")).to_have_count(0)
    await expect(page.get_by_text("protected by a password")).to_have_count(1)
    attempts_table = page.locator("section[aria-labelledby=attempts-title] table")
    await expect(attempts_table).to_contain_text("encrypted (described above)")
    detail = await get_json(http, f"{url}/v1/documents/{document_id_of(page)}")
    assert detail["current_stage"] == "extract", detail
    await ui.check("failed-document-detail")
    await page.go_back()

    # One document's detail: pages, chunks, attempts and per-stage timings; then delete it.
    await page.get_by_label("Status").select_option("")
    await page.get_by_role("button", name="Show documents").click()
    await results.get_by_role("link", name="report.pdf").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("report.pdf")
    facts = page.locator("dl.facts")
    await expect(facts).to_contain_text("Pages3")
    await expect(facts).to_contain_text("Attempts1 of 3")
    timings = page.locator("section[aria-labelledby=attempts-title] table")
    for stage in ("download", "extract", "chunk", "embed", "index", "total"):
        await expect(timings.get_by_role("columnheader", name=f"{stage} time")).to_be_visible()
    await expect(timings.locator("tbody tr")).to_have_count(1)
    chunks = page.locator("#chunks li")
    await expect(chunks.first).to_contain_text("Chunk 1 · page 1")
    await expect(chunks.first).to_contain_text("Quarterly audit overview")
    await expect(page.locator("#chunks")).to_contain_text("page 2")
    await expect(page.locator("#chunks")).to_contain_text("page 3")
    async with page.expect_download() as saving:
        await page.get_by_role("button", name="Download the original").click()
    saved = await saving.value
    assert saved.suggested_filename == "report.pdf"
    shown = await get_json(http, f"{url}/v1/documents/{document_id_of(page)}")
    assert hashlib.sha256(Path(await saved.path()).read_bytes()).hexdigest() == shown["sha256"]
    await ui.check("document-detail")
    await page.get_by_role("button", name="Delete").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text("Delete this document?")
    await ui.check("delete-confirmation")
    await dialog.get_by_role("button", name="Delete").click()
    await expect(page.locator("#status")).to_have_text("report.pdf is deleted.")
    await expect(facts.locator(".badge")).to_have_text("deleted")
    await expect(page.get_by_role("button", name="Delete")).to_have_count(0)
    await ui.check("document-deleted")
    found = (await get_json(http, f"{url}/v1/collections/audit-2025/documents"))["documents"]
    assert sorted(d["filename"] for d in found) == ["locked.pdf", "notes.txt"]

    # Admin: counts per status and the oldest queued age; no DLQ without Service Bus.
    await page.get_by_role("link", name="Admin", exact=True).click()
    counts = page.locator("#status-counts")
    for status, n in (("completed", 1), ("failed", 1), ("deleted", 1), ("queued", 0)):
        await expect(counts.get_by_role("row", name=f"{status} {n}")).to_be_visible()
    await expect(page.locator("#oldest-queued")).to_have_text("none waiting")
    failed = page.locator("section[aria-labelledby=failed-title]")
    await expect(failed).to_contain_text("protected by a password")
    await expect(page.locator("section[aria-labelledby=dlq-title]")).to_contain_text(
        "SHEAF_MESSAGE_BUS=servicebus"
    )
    await ui.check("admin")

    await page.get_by_role("link", name="Sign in with a key").click()
    await expect(page.get_by_label("API key or access token")).to_be_focused()
    await ui.check("sign-in-optional")


async def test_a_folder_and_a_drop_are_uploaded_and_wait_with_their_age_shown(
    browser: Browser, tmp_path: Path, procs: list[Proc]
) -> None:
    """No worker runs (SHEAF_WORKERS=0): what is uploaded stays queued, and the admin
    screen shows how long the oldest has waited."""
    url = await sheaf_up(tmp_path, procs, SHEAF_WORKERS="0")
    folder = tmp_path / "inbox"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("first file of the folder")
    (folder / "sub" / "b.md").write_text("# second file, in a subfolder")
    (folder / ".DS_Store").write_bytes(b"hidden: never uploaded")
    ui = await Console.open(browser, url, "folder-and-drop")
    page = ui.page
    await page.get_by_label("Collection").fill("waiting")
    await page.get_by_label("A folder (every file in it)").set_input_files(folder)
    for name in ("a.txt", "b.md"):
        await expect(upload_row(ui, name).locator(".badge")).to_have_text("queued")
    await expect(page.locator("tr[data-upload]")).to_have_count(2)  # .DS_Store skipped

    # A file dropped on the drop zone (a synthetic drop: the browser's own DataTransfer).
    transfer = await page.evaluate_handle(
        """() => {
            const transfer = new DataTransfer();
            transfer.items.add(new File(["dropped text"], "dropped.txt", {type: "text/plain"}));
            return transfer;
        }"""
    )
    await page.dispatch_event("section.dropzone", "drop", {"dataTransfer": transfer})
    await expect(upload_row(ui, "dropped.txt").locator(".badge")).to_have_text("queued")
    await expect(page.locator("#upload-summary")).to_have_text("3 files: 3 queued.")
    await ui.check("folder-and-drop-queued")

    await ui.go("#/admin")
    counts = page.locator("#status-counts")
    await expect(counts.get_by_role("row", name="queued 3")).to_be_visible()
    await expect(page.locator("#oldest-queued")).to_have_text(re.compile(r"^[1-9]\d* s$"))
    await ui.check("admin-oldest-queued")


# -- the dead-letter queue ---------------------------------------------------------------


async def wait_dead_letters(emulator: ServiceBusEmulator, want: int) -> None:
    for _ in range(120):
        if emulator.counts(emulator.queue_name)["dead_letter"] == want:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"dead-letter count {emulator.counts(emulator.queue_name)}, want {want}")


async def test_admin_redrives_one_message_and_purges_the_rest(
    browser: Browser,
    servicebus_emulator: ServiceBusEmulator,
    openai_fake: FakeOpenAI,
    tmp_path: Path,
    procs: list[Proc],
    http: aiohttp.ClientSession,
) -> None:
    """The embedding endpoint answers 404 twice: two documents fail and are dead-lettered.
    Then it works again, so the re-driven one completes; the other is purged."""
    url = await sheaf_up(
        tmp_path,
        procs,
        SHEAF_MESSAGE_BUS="servicebus",
        SHEAF_SERVICEBUS_CONNECTION_STRING=servicebus_emulator.connection_string,
        SHEAF_SERVICEBUS_QUEUE=servicebus_emulator.queue_name,
        SHEAF_EMBEDDER="openai",
        SHEAF_OPENAI_MODEL="text-embedding-3-small",
        SHEAF_OPENAI_BASE_URL=openai_fake.url + "/v1",
        SHEAF_MAX_ATTEMPTS="1",
    )
    openai_fake.fail_next(Fault.reject("The model does not exist", status=404), times=2)
    ui = await Console.open(browser, url, "dead-letters")
    page = ui.page
    await page.get_by_label("Collection").fill("inbox")
    for name in ("first.txt", "second.txt"):  # one at a time: each meets one 404
        await page.get_by_label("Files", exact=True).set_input_files([text_file(name, name * 9)])
        await expect(upload_row(ui, name).locator(".badge")).to_have_text("failed")
        await expect(upload_row(ui, name)).to_contain_text("does not exist")
    await wait_dead_letters(servicebus_emulator, 2)
    await ui.check("two-failed-uploads")

    await ui.go("#/admin")
    table = page.locator("#dlq-table")
    await expect(table.locator("tbody tr")).to_have_count(2)
    first = table.locator("tbody tr", has_text="first.txt")
    await expect(first).to_contain_text("embedding_misconfigured")
    await expect(first).to_contain_text("Fix the cause")  # Service Bus's description
    await expect(first.locator("td.number")).to_have_text(re.compile(r"^\d+$"))  # deliveries
    await expect(first.locator("td").nth(4)).to_have_text(re.compile(r"^\d+ s$"))  # age
    await ui.check("dead-letter-queue")

    await first.get_by_role("checkbox").check()
    await page.get_by_role("button", name="Re-drive selected").click()
    await expect(page.locator("#dlq-outcome")).to_contain_text("1 redriven")
    await expect(table.locator("tbody tr")).to_have_count(1)
    await expect(table).not_to_contain_text("first.txt")
    failed = page.locator("section[aria-labelledby=failed-title]")
    await expect(failed.locator("tbody tr")).to_have_count(1)  # first.txt is failed no more
    await ui.check("after-redrive")
    listed = await get_json(http, f"{url}/v1/collections/inbox/documents")
    by_name = {d["filename"]: d["id"] for d in listed["documents"]}
    done = await wait_status(http, url, by_name["first.txt"], {"completed"})
    assert done["chunk_count"] >= 1

    await page.get_by_label("Dead-letter reason").select_option("embedding_misconfigured")
    await page.get_by_role("button", name="Purge all with this reason…").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text("for good")
    await ui.check("purge-confirmation")
    await dialog.get_by_role("button", name="Purge").click()
    await expect(page.locator("#dlq-outcome")).to_contain_text("1 purged")
    await expect(page.locator("#dlq-empty")).to_be_visible()
    await wait_dead_letters(servicebus_emulator, 0)
    second = await get_json(http, f"{url}/v1/documents/{by_name['second.txt']}")
    assert second["status"] == "failed"  # purging leaves the row for `sheaf failed retry`
    await ui.check("dead-letter-queue-empty")


# -- signing in ------------------------------------------------------------------------------


async def sheaf_cli(tmp_path: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sheaf",
        *args,
        env=sheaf_env(),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode().strip()


async def test_sign_in_with_an_api_key_kept_in_session_storage(
    browser: Browser, tmp_path: Path, procs: list[Proc], http: aiohttp.ClientSession
) -> None:
    url = await sheaf_up(tmp_path, procs, SHEAF_AUTH_MODE="keys")
    key = await sheaf_cli(
        tmp_path, "keys", "create", "--name", "console", "--scope", "admin", "--collection", "*"
    )
    ui = await Console.open(browser, url, "sign-in")
    page = ui.page
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    await expect(page.get_by_text("This Sheaf needs a key")).to_be_visible()
    await ui.check("sign-in-required")

    field = page.get_by_label("API key or access token")
    await field.fill("sk_sheaf_0000000000000000_" + "x" * 43)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#credential-error")).to_have_text(
        "That key was not accepted. Check it and try again."
    )
    await expect(field).to_have_attribute("aria-invalid", "true")
    await ui.check("sign-in-refused")

    await field.fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Upload")
    await expect(page.locator("#session")).to_contain_text("Signed in")
    assert await page.evaluate("sessionStorage.getItem('sheaf.credential')") == key
    assert key not in page.url
    await ui.go("#/admin")
    await expect(page.locator("#status-counts")).to_be_visible()  # admin data, with the key
    await ui.check("signed-in-admin")

    # The key is revoked mid-session: the admin screen's next refresh gets 401, which brings
    # the sign-in back; signing in with another key returns to where the person was.
    await sheaf_cli(tmp_path, "keys", "revoke", key.split("_")[2])
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    await expect(page.get_by_text("Your key was refused or has expired")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('sheaf.credential')") is None
    await ui.check("sign-in-again")
    other = await sheaf_cli(
        tmp_path, "keys", "create", "--name", "again", "--scope", "admin", "--collection", "*"
    )
    await field.fill(other)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Admin")
    await expect(page.locator("#status-counts")).to_be_visible()

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    assert await page.evaluate("sessionStorage.getItem('sheaf.credential')") is None

    # A key for one collection sees that collection and no other.
    for collection in ("alpha", "beta"):
        form = aiohttp.FormData()
        form.add_field("file", f"{collection} notes".encode(), filename=f"{collection}.txt")
        async with http.post(
            f"{url}/v1/collections/{collection}/documents",
            data=form,
            headers={"Authorization": f"Bearer {other}"},
        ) as response:
            assert response.status == 202, await response.text()
    reader = await sheaf_cli(
        tmp_path, "keys", "create", "--name", "reader", "--scope", "read", "--collection", "alpha"
    )
    await field.fill(reader)
    await page.get_by_role("button", name="Sign in").click()
    await ui.go("#/documents")
    overview = page.locator("section[aria-labelledby=collections-title]")
    await expect(overview.locator("tbody tr")).to_have_count(1)
    await expect(overview.locator("tbody tr")).to_contain_text("alpha")
    await ui.check("read-key-sees-its-collection")


# -- the dashboard ---------------------------------------------------------------------------


async def test_dashboard_follows_documents_and_a_worker_live(
    browser: Browser,
    openai_fake: FakeOpenAI,
    tmp_path: Path,
    procs: list[Proc],
    http: aiohttp.ClientSession,
) -> None:
    """`sheaf up` without workers: uploads wait in the queue. A worker started beside it
    processes them (its first embedding call is slow, so it is seen holding a document;
    then the charts fill); stopped, it drops out of the 30-second window."""
    settings = {
        "SHEAF_EMBEDDER": "openai",
        "SHEAF_OPENAI_MODEL": "text-embedding-3-small",
        "SHEAF_OPENAI_BASE_URL": openai_fake.url + "/v1",
        "SHEAF_HEARTBEAT_SECONDS": "1",
        "SHEAF_LEASE_SECONDS": "6",
        "SHEAF_CONCURRENCY": "1",
    }
    url = await sheaf_up(tmp_path, procs, SHEAF_WORKERS="0", **settings)
    ui = await Console.open(browser, url, "dashboard")
    page = ui.page
    await page.get_by_role("link", name="Dashboard", exact=True).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    await ui.go("#/dashboard?window=30")
    await expect(page.get_by_label("Show")).to_have_value("30")
    await expect(page.locator("#workers-none")).to_be_visible()
    await expect(page.locator("#failures-none")).to_be_visible()
    await expect(page.locator("#throughput-summary")).to_contain_text("0 completed")
    await expect(page.locator("#queue-depth")).to_have_text("0")
    await ui.check("dashboard-idle")

    for i in range(5):
        status, body = await upload(http, url, "flow", f"n{i}.txt", f"note {i} ".encode() * 40)
        assert status == 202, body
    locked = encrypt_pdf(make_pdf(["Secret page."]), "pw")
    assert (await upload(http, url, "flow", "locked.pdf", locked))[0] == 202
    await expect(page.locator("#queue-depth")).to_have_text("6")
    await expect(page.locator("#queue-oldest")).to_have_text(re.compile(r"^\d+ s$"))
    queue_chart = page.locator("#dashboard-queue svg.chart").first
    await expect(queue_chart.locator("path.line-queued")).to_have_count(1)
    waiting_line = await queue_chart.locator("path.line-queued").get_attribute("d")
    bars = page.locator("#dashboard-throughput svg.chart rect.bar")
    await expect(bars).to_have_count(0)
    await ui.check("dashboard-queued")

    openai_fake.fail_next(Fault.slow(8))
    worker = start(procs, ["-m", "sheaf", "worker"], sheaf_env(**settings), tmp_path, "worker")
    holding = page.locator("#workers-table tbody tr", has_text="(embed, for")
    await expect(holding).to_have_count(1)  # in flight: its document, stage and heartbeat
    await expect(holding.locator("td").nth(1)).to_have_text(re.compile(r"^\d+ s ago$"))
    await ui.check("dashboard-worker-holding-a-document")
    summary = page.locator("#throughput-summary")
    await expect(summary).to_contain_text("5 completed, 1 failed for good")
    await expect(page.locator("#queue-depth")).to_have_text("0")
    assert await bars.count() >= 2  # completed and failed bars, drawn live
    assert await queue_chart.locator("path.line-queued").get_attribute("d") != waiting_line
    failures = page.locator("#failures-table")
    await expect(failures.get_by_role("row", name=re.compile(r"^encrypted 1"))).to_be_visible()
    stages = page.locator("#stages-table")
    for stage in ("extract", "embed", "total"):
        await expect(stages.get_by_role("rowheader", name=stage, exact=True)).to_be_visible()
    extract = stages.get_by_role("row", name=re.compile(r"^extract "))
    await expect(extract.locator("td").first).to_have_text("5")  # the completed documents
    workers = page.locator("#workers-table tbody tr")
    await expect(workers).to_have_count(1)
    await expect(workers.locator("td").nth(3)).to_have_text("5")  # completed
    await expect(workers.locator("td").nth(4)).to_have_text("1")  # failed
    await ui.check("dashboard-after-a-burst")

    # Its attempts age out of the window once it stops: the worker is gone from the list.
    assert worker.stop() == 0
    await expect(page.locator("#workers-none")).to_be_visible()
    await expect(summary).to_contain_text("0 completed")
    await ui.check("dashboard-worker-gone")

    # The documents it processed, acted on in bulk: retry skips what a retry cannot mend.
    await ui.go("#/documents?collection=flow")
    table = page.locator("#documents-table")
    await expect(table.locator("tbody tr")).to_have_count(6)
    await page.get_by_label("Select every document shown").check()
    await page.get_by_role("button", name="Retry selected").click()
    await expect(page.locator("#status")).to_have_text(
        "0 documents queued again; 5 documents not failed, left as they are; "
        "not retried, since retrying cannot help: locked.pdf."
    )
    for name in ("n0.txt", "n1.txt"):
        await page.get_by_label(f"Select {name}").check()
    await page.get_by_role("button", name="Delete selected…").click()
    await expect(page.get_by_role("dialog")).to_contain_text("2 documents leave search results")
    await ui.check("bulk-delete-confirmation")
    await page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    await expect(page.locator("#status")).to_have_text("2 documents deleted.")
    await expect(table.locator("tbody tr")).to_have_count(4)
    await expect(table).not_to_contain_text("n0.txt")
    await ui.check("after-bulk-delete")
