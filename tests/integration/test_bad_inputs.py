"""Every case of bad-inputs.md #1-#24, #26 and #31-#35 ends as specified.

Two kinds of outcome: the HTTP status of the upload (the aiohttp app on the in-memory
fakes), or the document's final status and `error_code` after the real pipeline ran it
through `IsolatedExtractor` (child processes under a time and a memory limit). Every
failure here is permanent (one attempt, no retry) and names what to do in `last_error`.
After each hostile file the same extractor still completes a healthy document: the
worker survives whatever the file did to its child.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import unicodedata
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from api.app import create_app
from sheaf.domain.models import AcquireOutcome, ContentType, Document, ErrorKind, Status
from sheaf.extract.isolated import IsolatedExtractor
from sheaf.services.deps import Deps
from sheaf.services.ingest import accept_upload
from sheaf.services.processing import process_document
from tests.bad_inputs import docx, hostile, images, office, pdf, upload
from tests.unit.conftest import make_deps
from worker.runner import Worker

pytestmark = pytest.mark.integration

TIMEOUT = 2.0  # the extraction time limit of these tests
MEMORY = 1024 * 1024 * 1024
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


@pytest.fixture(scope="module")
def extractor() -> Iterator[IsolatedExtractor]:
    """Shared by the module, like a worker's: the cases also prove it keeps working."""
    with IsolatedExtractor(TIMEOUT, MEMORY, 2, extractor=hostile.HostileExtractor()) as shared:
        yield shared


@pytest.fixture
def deps(extractor: IsolatedExtractor) -> Deps:
    return dataclasses.replace(make_deps(), extractor=extractor)


async def put(deps: Deps, data: bytes, filename: str = "upload") -> Document:
    async def body() -> AsyncIterator[bytes]:
        yield data

    return (await accept_upload(deps, "bad", filename, body())).document


async def processed(deps: Deps, data: bytes, filename: str = "upload") -> Document:
    """Upload, claim and process one document; return its row afterwards."""
    created = await put(deps, data, filename)
    [lease] = await deps.store.claim_queued_documents("w", deps.settings.lease_seconds, 1)
    assert lease.document_id == created.id
    await process_document(deps, lease)
    found = await deps.store.get_document(created.id)
    assert found is not None
    return found


async def assert_ends_as(deps: Deps, data: bytes, code: str | None) -> Document:
    """The document ends completed (`code` None) or failed for good with `code`; and a
    healthy document completes right after it on the same extractor."""
    doc = await processed(deps, data)
    if code is None:
        assert (doc.status, doc.error_code) == (Status.COMPLETED, None), doc.last_error
        assert doc.chunk_count > 0
    else:
        assert (doc.status, doc.error_code) == (Status.FAILED, code), doc.last_error
        assert (doc.attempts, doc.error_kind) == (1, ErrorKind.PERMANENT)
        assert len(doc.last_error or "") > 40  # a sentence a person can act on
    after = await processed(deps, pdf.healthy(f"healthy after {doc.id}"))
    assert after.status is Status.COMPLETED
    return doc


# --- PDF: #1-#13 ------------------------------------------------------------------------

PDF_CASES = {
    "01-circular-outline": (pdf.circular_outline, None),  # outlines are never read
    "02-circular-xref-prev": (pdf.circular_xref_prev, None),
    "03-comment-at-eof": (pdf.comment_at_eof, None),
    "04-inline-image-without-EI": (pdf.inline_image_without_end, "corrupt_pdf"),
    "05-flate-bomb": (pdf.flate_bomb, "pdf_limit_exceeded"),
    "05-lzw-bomb": (pdf.lzw_bomb, "pdf_limit_exceeded"),
    "05-run-length-bomb": (pdf.run_length_bomb, "pdf_limit_exceeded"),
    "06-huge-declared-length": (pdf.huge_declared_length, "pdf_limit_exceeded"),
    "06-stream-without-length": (pdf.stream_without_length, None),
    "07-pixel-bomb": (pdf.pixel_bomb, None),  # images are never decoded for text
    "08-cyclic-pages-tree": (pdf.cyclic_pages_tree, "corrupt_pdf"),
    "09-broken-xref-in-whitespace": (pdf.broken_xref_with_whitespace, None),
    "10-hostile-xmp-metadata": (pdf.hostile_xmp_metadata, None),  # metadata is never read
    "11-encrypted": (pdf.encrypted, "encrypted"),
    "13-truncated": (pdf.truncated, "corrupt_pdf"),
    "13-garbage-after-eof": (pdf.garbage_after_eof, None),
}


@pytest.mark.parametrize(("make", "code"), PDF_CASES.values(), ids=PDF_CASES.keys())
async def test_pdf_case(deps: Deps, make: Callable[[], bytes], code: str | None) -> None:
    started = time.monotonic()
    doc = await assert_ends_as(deps, make(), code)
    assert doc.content_type == ContentType.PDF
    assert time.monotonic() - started < TIMEOUT + 5  # nothing here needs the time limit


@pytest.mark.usefixtures("tesseract")
async def test_a_scan_with_no_words_on_it_is_no_text() -> None:
    """#12: the page without a text layer is rendered and read by OCR, which finds nothing
    in a grey gradient: `no_text`. Its own time limit: a full page of OCR can take longer
    than the module's 2 s on a busy machine."""
    with IsolatedExtractor(30.0, MEMORY, 1) as extractor:
        deps = dataclasses.replace(make_deps(), extractor=extractor)
        await assert_ends_as(deps, pdf.scanned_without_text_layer(), "no_text")


async def test_pdf_text_survives_the_flaws_it_is_tolerated_with(deps: Deps) -> None:
    doc = await processed(deps, pdf.broken_xref_with_whitespace())
    [chunk] = await deps.store.document_chunks(doc.id)
    assert chunk.text == pdf.TEXT


async def test_a_pdf_over_the_size_limit_fails_before_parsing() -> None:
    from sheaf.extract import LocalExtractor, PdfLimits

    small = LocalExtractor(pdf_limits=PdfLimits(max_bytes=100_000))
    with IsolatedExtractor(TIMEOUT, MEMORY, 1, extractor=small) as limited:
        deps = dataclasses.replace(make_deps(), extractor=limited)
        doc = await assert_ends_as(deps, pdf.garbage_after_eof() * 2, "pdf_too_large")
    assert "Split it" in (doc.last_error or "")


# --- DOCX: #14-#18 ----------------------------------------------------------------------

DOCX_CASES = {
    "14-zip-bomb": (docx.zip_bomb, "zip_bomb"),
    "15-entity-expansion": (docx.entity_expansion, "corrupt_docx"),  # libxml2 refuses it
    "15-external-entity": (docx.external_entity, None),  # left unresolved: see below
    "16-bad-crc": (docx.bad_crc, "corrupt_docx"),
    "17-macro-enabled-docm": (docx.macro_enabled, "not_a_docx"),
}


@pytest.mark.parametrize(("make", "code"), DOCX_CASES.values(), ids=DOCX_CASES.keys())
async def test_docx_case(deps: Deps, make: Callable[[], bytes], code: str | None) -> None:
    doc = await assert_ends_as(deps, make(), code)
    assert doc.content_type == ContentType.DOCX


async def test_an_external_entity_never_reads_a_local_file(deps: Deps) -> None:
    doc = await processed(deps, docx.external_entity())
    text = " ".join(chunk.text for chunk in await deps.store.document_chunks(doc.id))
    assert text == docx.TEXT  # the entity reference is dropped, nothing read in its place


async def test_a_pathological_docx_is_stopped_by_the_time_limit(deps: Deps) -> None:
    data = docx.pathological_structure()  # about three times the limit on a 2-core VM
    await assert_ends_as(deps, pdf.healthy("warm the pool"), None)
    started = time.monotonic()
    doc = await processed(deps, data)
    elapsed = time.monotonic() - started
    assert (doc.status, doc.error_code) == (Status.FAILED, "timeout")
    assert TIMEOUT <= elapsed < TIMEOUT + 4  # the limit, plus start-up and kill on a busy box
    assert "SHEAF_EXTRACT_TIMEOUT_SECONDS" in (doc.last_error or "")


# --- images and OCR: #31-#33 -------------------------------------------------------------

IMAGE_CASES = {
    "31-png-pixel-bomb": (images.png_pixel_bomb, ContentType.PNG, "image_too_large"),
    "31-tiff-pixel-bomb": (images.tiff_pixel_bomb, ContentType.TIFF, "image_too_large"),
    "32-truncated-png": (images.truncated_png, ContentType.PNG, "corrupt_image"),
    "32-truncated-jpeg": (images.truncated_jpeg, ContentType.JPEG, "corrupt_image"),
    "32-tiff-10000-frames": (images.tiff_with_frames, ContentType.TIFF, "ocr_page_limit"),
}


@pytest.mark.parametrize(("make", "kind", "code"), IMAGE_CASES.values(), ids=IMAGE_CASES)
async def test_image_case(
    deps: Deps, make: Callable[[], bytes], kind: ContentType, code: str
) -> None:
    started = time.monotonic()
    doc = await assert_ends_as(deps, make(), code)
    assert doc.content_type == kind
    assert time.monotonic() - started < TIMEOUT + 5  # refused from headers, not by the limit


@pytest.mark.usefixtures("tesseract")
async def test_ocr_past_the_time_limit_fails_only_its_document(deps: Deps) -> None:
    """#33: the child is killed at the limit, and its Tesseract dies with it."""
    page = images.dense_page()
    started = time.monotonic()
    doc = await assert_ends_as(deps, page, "timeout")
    assert time.monotonic() - started < TIMEOUT + 8
    assert doc.content_type == ContentType.PNG
    await asyncio.sleep(0.5)
    assert _ocr_processes() == []


def _ocr_processes() -> list[int]:
    """Pids of Tesseract processes started the way Sheaf starts them."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if argv[0].endswith(b"tesseract") and argv[1:3] == [b"stdin", b"stdout"]:
                found.append(int(entry.name))
    return found


# --- PPTX, XLSX, HTML: #34, #35 ---------------------------------------------------------

OFFICE_CASES = {
    "34-pptx-zip-bomb": (office.pptx_zip_bomb, ContentType.PPTX, "zip_bomb"),
    "34-xlsx-zip-bomb": (office.xlsx_zip_bomb, ContentType.XLSX, "zip_bomb"),
    "34-pptx-external-entity": (office.pptx_external_entity, ContentType.PPTX, "unsafe_xml"),
    "34-xlsx-external-entity": (office.xlsx_external_entity, ContentType.XLSX, "unsafe_xml"),
    "34-xlsx-entity-expansion": (office.xlsx_entity_expansion, ContentType.XLSX, "unsafe_xml"),
    "34-xlsx-bad-crc": (office.xlsx_bad_crc, ContentType.XLSX, "corrupt_xlsx"),
    "35-html-deeply-nested": (
        lambda: office.html_deeply_nested(100_000),
        ContentType.HTML,
        None,
    ),
}


@pytest.mark.parametrize(("make", "kind", "code"), OFFICE_CASES.values(), ids=OFFICE_CASES)
async def test_office_and_html_case(
    deps: Deps, make: Callable[[], bytes], kind: ContentType, code: str | None
) -> None:
    doc = await assert_ends_as(deps, make(), code)
    assert doc.content_type == kind


async def test_html_in_a_legacy_charset_is_indexed_without_its_scripts(deps: Deps) -> None:
    """#35: accepted at upload although not UTF-8; scripts and styles never indexed."""
    page = (
        '<html><head><meta charset="windows-1252"><style>p{}</style>'
        "<script>var apiKey = 'leaked';</script></head>"
        "<body><p>Caf\u00e9 cr\u00e8me \u2013 na\u00efve r\u00e9sum\u00e9</p></body></html>"
    ).encode("cp1252")
    doc = await assert_ends_as(deps, page, None)
    [chunk] = await deps.store.document_chunks(doc.id)
    assert chunk.text == "Caf\u00e9 cr\u00e8me \u2013 na\u00efve r\u00e9sum\u00e9"


def test_html_of_50_mb_on_one_line_is_read_in_the_child(tmp_path: Path) -> None:
    """#35: parsed whole inside the child's memory limit (the pipeline then chunks it)."""
    path = tmp_path / "one-line.html"
    data = office.html_one_line()
    path.write_bytes(data)
    with IsolatedExtractor(60.0, MEMORY, 1) as extractor:
        pieces = list(extractor.extract(path, ContentType.HTML))  # one page, streamed in pieces
    assert {piece.number for piece in pieces} == {1}
    text = "".join(piece.text for piece in pieces)
    assert len(text) == len(data.split(b"<p>")[1].split(b"</p>")[0].strip())


# --- the child itself fails: #8's segfault, endless loops, memory exhaustion -------------

CHILD_FAILURES = {
    "segfault": (hostile.command("segfault"), "parser_crash"),
    "abort": (hostile.command("abort"), "parser_crash"),
    "endless-loop": (hostile.command("loop"), "timeout"),
    "memory-exhaustion": (hostile.command("hog"), "memory_limit"),
}


@pytest.mark.parametrize(("data", "code"), CHILD_FAILURES.values(), ids=CHILD_FAILURES.keys())
async def test_a_dying_child_fails_only_its_document(deps: Deps, data: bytes, code: str) -> None:
    started = time.monotonic()
    await assert_ends_as(deps, data, code)
    assert time.monotonic() - started < TIMEOUT + 5


async def test_the_worker_loop_carries_on_past_crashing_files(deps: Deps) -> None:
    """A real `Worker` with two slots: hostile and healthy documents all end, in any order."""
    hostile_ids = {
        (await put(deps, hostile.command(name) + b"%d" % n)).id: code
        for n, (name, code) in enumerate(
            [("segfault", "parser_crash"), ("loop", "timeout"), ("hog", "memory_limit")]
        )
    }
    healthy_ids = [(await put(deps, pdf.healthy(f"healthy {n}"))).id for n in range(4)]
    stop = asyncio.Event()
    run = asyncio.create_task(Worker(dataclasses.replace(deps)).run(stop))
    deadline = time.monotonic() + 30
    while True:
        docs = {i: await deps.store.get_document(i) for i in [*hostile_ids, *healthy_ids]}
        if all(
            d is not None and d.status in {Status.COMPLETED, Status.FAILED} for d in docs.values()
        ):
            break
        assert time.monotonic() < deadline, docs
        await asyncio.sleep(0.1)
    stop.set()
    await run
    assert {i: docs[i].error_code for i in hostile_ids} == hostile_ids  # type: ignore[union-attr]
    assert all(docs[i].status is Status.COMPLETED for i in healthy_ids)  # type: ignore[union-attr]


# --- text: #24 --------------------------------------------------------------------------

TEXT_CASES = {
    "utf16-le-bom": upload.utf16_le_with_bom,
    "utf16-be-bom": upload.utf16_be_with_bom,
    "utf8-bom": upload.utf8_with_bom,
}


@pytest.mark.parametrize("make", TEXT_CASES.values(), ids=TEXT_CASES.keys())
async def test_unicode_text_is_decoded_by_its_bom(deps: Deps, make: Callable[[], bytes]) -> None:
    doc = await assert_ends_as(deps, make(), None)
    [chunk] = await deps.store.document_chunks(doc.id)
    assert chunk.text == upload.TEXT.strip()


async def test_invalid_bytes_in_text_become_replacement_characters(deps: Deps) -> None:
    doc = await assert_ends_as(deps, upload.utf8_with_invalid_bytes(), None)
    *_, last = await deps.store.document_chunks(doc.id)
    assert last.text.endswith("caf\ufffd \ufffd end")


# --- #26: a document deleted before or during processing -------------------------------


async def test_a_deleted_document_is_never_processed(deps: Deps) -> None:
    created = await put(deps, pdf.healthy("deleted before anyone looked"))
    await deps.store.delete_document(created.id)
    assert await deps.store.claim_queued_documents("w", 30, 10) == []
    acquired = await deps.store.acquire_document_lease(created.id, "w", 30)
    assert acquired.outcome is AcquireOutcome.TERMINAL  # a late message: nothing to do
    doc = await deps.store.get_document(created.id)
    assert doc is not None
    assert (doc.status, doc.attempts) == (Status.DELETED, 0)
    assert await deps.store.document_chunks(created.id) == []


async def test_a_document_deleted_mid_extraction_is_abandoned(deps: Deps) -> None:
    created = await put(deps, hostile.command("sleep", 1))
    [lease] = await deps.store.claim_queued_documents("w", deps.settings.lease_seconds, 1)
    task = asyncio.create_task(process_document(deps, lease))
    await asyncio.sleep(0.5)
    await deps.store.delete_document(created.id)
    assert (await asyncio.wait_for(task, 5)).label == "lease_lost"
    doc = await deps.store.get_document(created.id)
    assert doc is not None
    assert doc.status is Status.DELETED
    assert await deps.store.document_chunks(created.id) == []


# --- uploads: #13 (0 bytes), #17, #19-#23 -------------------------------------------------


@pytest.fixture
async def client(aiohttp_client: MakeClient) -> Client:
    deps = make_deps(max_upload_bytes=1024 * 1024)
    return await aiohttp_client(create_app(deps.settings, deps=deps, housekeeping=False))


def app_deps(client: Client) -> Deps:
    from api.keys import DEPS

    return client.app[DEPS]


async def post(client: Client, body: bytes | Any) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": upload.CONTENT_TYPE}
    response = await client.post("/v1/collections/bad/documents", data=body, headers=headers)
    return response.status, await response.json()


def error_code(body: dict[str, Any]) -> str:
    return str(body["error"]["code"])


REFUSED_AT_UPLOAD = {
    "13-empty-file": (
        upload.multipart(upload.file_part(pdf.empty(), b"empty.pdf")),
        415,
        "unsupported_type",
    ),
    "17-legacy-doc": (
        upload.multipart(upload.file_part(docx.legacy_doc(), b"old.docx")),
        415,
        "unsupported_type",
    ),
    "19-executable-as-pdf": (upload.executable_declared_as_pdf(), 415, "unsupported_type"),
    "21-declared-over-the-limit": (
        upload.multipart(upload.file_part(b"x" * (1024 * 1024 + 70 * 1024), b"big.txt")),
        413,
        "upload_too_large",
    ),
    "22-truncated-body": (upload.truncated_body(), 400, "malformed_upload"),
    "22-missing-file-part": (upload.missing_file_part(), 400, "missing_file"),
    "22-two-files": (upload.two_files(), 400, "multiple_files"),
    "24-utf16-without-bom": (
        upload.multipart(upload.file_part(upload.utf16_without_bom())),
        415,
        "unsupported_type",
    ),
}


@pytest.mark.parametrize(
    ("body", "status", "code"), REFUSED_AT_UPLOAD.values(), ids=REFUSED_AT_UPLOAD
)
async def test_refused_at_upload_with_nothing_kept(
    client: Client, body: bytes, status: int, code: str
) -> None:
    got, answer = await post(client, body)
    assert (got, error_code(answer)) == (status, code)
    assert len(answer["error"]["message"]) > 20
    assert [info async for info in app_deps(client).blobs.list()] == []


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/json", "multipart/form-data", "multipart/form-data; boundary="],
)
async def test_a_body_that_is_not_multipart_with_a_boundary_is_400(
    client: Client, content_type: str
) -> None:
    """Found by Schemathesis: `multipart/form-data` without a boundary was a 500."""
    response = await client.post(
        "/v1/collections/bad/documents", data=b"hello", headers={"Content-Type": content_type}
    )
    answer = await response.json()
    assert response.status == 400
    assert error_code(answer) in {"not_multipart", "malformed_upload"}
    assert [info async for info in app_deps(client).blobs.list()] == []


async def test_the_declared_type_and_name_are_ignored_for_the_content(client: Client) -> None:
    got, answer = await post(client, upload.pdf_declared_as_text())
    assert (got, answer["content_type"], answer["filename"]) == (202, ContentType.PDF, "notes.txt")


@pytest.mark.parametrize("params", upload.HOSTILE_FILENAMES.values(), ids=upload.HOSTILE_FILENAMES)
async def test_hostile_filenames_are_display_metadata_only(client: Client, params: bytes) -> None:
    got, answer = await post(client, upload.named(params))
    assert got == 202, answer
    name = answer["filename"]
    assert 0 < len(name) <= 255
    assert not any(c in name for c in "/\\")  # never a path, whatever it tried
    assert all(unicodedata.category(c)[0] != "C" for c in name)
    doc = await app_deps(client).store.get_document(answer["id"])
    assert doc is not None
    assert [info.key async for info in app_deps(client).blobs.list()] == [doc.blob_key]
    assert name not in doc.blob_key


@pytest.mark.parametrize(
    "params", upload.MALFORMED_FILENAMES.values(), ids=upload.MALFORMED_FILENAMES
)
async def test_raw_control_bytes_in_a_part_header_are_a_400(client: Client, params: bytes) -> None:
    got, answer = await post(client, upload.named(params))
    assert (got, error_code(answer)) == (400, "malformed_upload")
    assert [info async for info in app_deps(client).blobs.list()] == []


async def test_a_broken_part_header_is_a_400_even_where_warnings_only_warn(
    aiohttp_client: MakeClient,
) -> None:
    """Outside tests warnings are not errors: aiohttp would only warn about the header
    broken by a raw line break and carry on without a part name (→ missing_file). The app
    makes that warning an error itself, whatever filters the process had."""
    with warnings.catch_warnings():
        warnings.resetwarnings()  # a production process: no filter turns warnings to errors
        deps = make_deps()
        client = await aiohttp_client(create_app(deps.settings, deps=deps, housekeeping=False))
        got, answer = await post(client, upload.named(upload.MALFORMED_FILENAMES["raw-line-break"]))
    assert (got, error_code(answer)) == (400, "malformed_upload")


async def test_over_the_limit_is_refused_while_streaming(client: Client) -> None:
    """#21: chunked (no Content-Length), 64 MiB against a 1 MiB limit: the server answers
    413 long before the client has sent it all, and nothing is kept."""
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        head, tail = upload.multipart(upload.file_part(b"\x00", b"big.txt")).split(b"\x00")
        yield head
        for _ in range(1024):
            sent += 65536
            yield b"x" * 65536
        yield tail

    got, answer = await post(client, body())
    assert (got, error_code(answer)) == (413, "upload_too_large")
    assert sent < 32 * 1024 * 1024
    assert [info async for info in app_deps(client).blobs.list()] == []


async def test_the_same_bytes_again_are_the_same_document(client: Client) -> None:
    """#23: idempotent per collection, whatever the name."""
    data = pdf.healthy("uploaded twice")
    first, one = await post(client, upload.multipart(upload.file_part(data, b"a.pdf")))
    again, two = await post(client, upload.multipart(upload.file_part(data, b"b.pdf")))
    assert (first, again) == (202, 200)
    assert (one["id"], two["duplicate"]) == (two["id"], True)
    assert len([info async for info in app_deps(client).blobs.list()]) == 1
