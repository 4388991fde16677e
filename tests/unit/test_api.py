"""The HTTP layer on the in-memory fakes: request parsing and error mapping."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from api.app import create_app
from sheaf.domain.models import ErrorInfo, ErrorKind, ReleaseOutcome
from sheaf.services.deps import Deps
from sheaf.services.processing import process_document
from tests.unit.conftest import make_deps

pytestmark = pytest.mark.unit

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


async def client_for(aiohttp_client: MakeClient, deps: Deps) -> Client:
    return await aiohttp_client(create_app(deps.settings, deps=deps, housekeeping=False))


def form(*files: tuple[str, bytes], **fields: str) -> aiohttp.FormData:
    data = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields.items():
        data.add_field(name, value)
    for filename, content in files:
        data.add_field("file", content, filename=filename)
    return data


async def error_of(response: aiohttp.ClientResponse) -> dict[str, Any]:
    body: dict[str, Any] = await response.json()
    return body["error"]  # type: ignore[no-any-return]


async def test_upload_then_duplicate(aiohttp_client: MakeClient, deps: Deps) -> None:
    client = await client_for(aiohttp_client, deps)
    first = await client.post("/v1/collections/c/documents", data=form(("a.txt", b"hello")))
    assert first.status == 202
    body = await first.json()
    assert first.headers["Location"] == f"/v1/documents/{body['id']}"
    again = await client.post("/v1/collections/c/documents", data=form(("b.txt", b"hello")))
    assert again.status == 200
    assert (await again.json())["id"] == body["id"]


async def test_other_fields_are_ignored(aiohttp_client: MakeClient, deps: Deps) -> None:
    client = await client_for(aiohttp_client, deps)
    data = form(("a.txt", b"hello"), note="ignored")
    assert (await client.post("/v1/collections/c/documents", data=data)).status == 202


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (form(note="no file here"), "missing_file"),
        (form(("a.txt", b"one"), ("b.txt", b"two")), "multiple_files"),
    ],
)
async def test_malformed_uploads_are_400(
    aiohttp_client: MakeClient, deps: Deps, data: aiohttp.FormData, code: str
) -> None:
    client = await client_for(aiohttp_client, deps)
    response = await client.post("/v1/collections/c/documents", data=data)
    assert response.status == 400
    assert (await error_of(response))["code"] == code
    assert [info async for info in deps.blobs.list()] == []


async def test_truncated_multipart_is_400(aiohttp_client: MakeClient, deps: Deps) -> None:
    client = await client_for(aiohttp_client, deps)
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n'
        b"some text that never ends"
    )
    headers = {"Content-Type": "multipart/form-data; boundary=XyZ"}
    response = await client.post("/v1/collections/c/documents", data=body, headers=headers)
    assert response.status == 400
    assert (await error_of(response))["code"] == "malformed_upload"
    assert [info async for info in deps.blobs.list()] == []


async def test_declared_oversize_is_refused_before_reading(aiohttp_client: MakeClient) -> None:
    deps = make_deps(max_upload_bytes=1000)
    client = await client_for(aiohttp_client, deps)
    response = await client.post(
        "/v1/collections/c/documents", data=form(("big.txt", b"x" * 200_000))
    )
    assert response.status == 413
    assert (await error_of(response))["code"] == "upload_too_large"


async def test_streamed_oversize_is_413(aiohttp_client: MakeClient) -> None:
    deps = make_deps(max_upload_bytes=70_000)  # under the multipart slack: caught mid-stream
    client = await client_for(aiohttp_client, deps)
    response = await client.post(
        "/v1/collections/c/documents", data=form(("big.txt", b"x" * 100_000))
    )
    assert response.status == 413
    assert [info async for info in deps.blobs.list()] == []


async def test_query_parameters_are_validated(aiohttp_client: MakeClient, deps: Deps) -> None:
    client = await client_for(aiohttp_client, deps)
    response = await client.get("/v1/collections/c/documents?status=nope")
    assert (response.status, (await error_of(response))["code"]) == (400, "bad_status")
    response = await client.get("/v1/collections/c/search?q=x&k=many")
    assert (response.status, (await error_of(response))["code"]) == (400, "bad_parameter")
    response = await client.get("/v1/collections/c/search?q=")
    assert (response.status, (await error_of(response))["code"]) == (400, "empty_query")


async def test_pagination_walks_every_document_once(aiohttp_client: MakeClient, deps: Deps) -> None:
    client = await client_for(aiohttp_client, deps)
    for n in range(7):
        data = form((f"{n}.txt", f"document number {n}".encode()))
        assert (await client.post("/v1/collections/c/documents", data=data)).status == 202
    seen: list[str] = []
    url = "/v1/collections/c/documents?limit=3"
    while url:
        page = await (await client.get(url)).json()
        seen += [d["id"] for d in page["documents"]]
        url = page["links"].get("next", "")
    assert len(seen) == len(set(seen)) == 7


async def test_retry_of_a_document_that_has_not_failed_is_409(
    aiohttp_client: MakeClient, deps: Deps
) -> None:
    client = await client_for(aiohttp_client, deps)
    created = await client.post("/v1/collections/c/documents", data=form(("a.txt", b"text")))
    document_id = (await created.json())["id"]
    response = await client.post(f"/v1/documents/{document_id}/retry")
    assert (response.status, (await error_of(response))["code"]) == (409, "not_failed")


async def test_health_readiness_and_metrics(aiohttp_client: MakeClient, deps: Deps) -> None:
    client = await client_for(aiohttp_client, deps)
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    body = await ready.json()
    assert ready.status == 200
    assert body["checks"]["queue"]["mode"] == "servicebus"  # the recording fake is a bus
    metrics = await (await client.get("/metrics")).text()
    assert "sheaf_http_request_duration_seconds" in metrics


@pytest.mark.parametrize(
    ("code", "offered"),
    [("encrypted", False), ("no_text", False), ("embedding_misconfigured", True)],
)
async def test_retry_is_offered_only_where_it_can_succeed(
    aiohttp_client: MakeClient, deps: Deps, code: str, offered: bool
) -> None:
    client = await client_for(aiohttp_client, deps)
    created = await (
        await client.post("/v1/collections/c/documents", data=form(("a.txt", b"x")))
    ).json()
    [lease] = await deps.store.claim_queued_documents("w", 30, 1)
    error = ErrorInfo(code, "it failed", ErrorKind.PERMANENT)
    await deps.store.release_document_lease(
        lease.document_id, lease.token, ReleaseOutcome.PERMANENT, error
    )
    body = await (await client.get(f"/v1/documents/{created['id']}")).json()
    assert body["status"] == "failed"
    assert ("retry" in body["links"]) is offered
    # The route itself still accepts it: an operator may know the cause is gone.
    assert (await client.post(f"/v1/documents/{created['id']}/retry")).status == 202


async def test_a_document_gives_its_chunks_with_pages_and_its_original_file(
    aiohttp_client: MakeClient, deps: Deps
) -> None:
    client = await client_for(aiohttp_client, deps)
    text = " ".join(f"word{i}" for i in range(400)).encode()
    upload = await client.post("/v1/collections/c/documents", data=form(("notes.txt", text)))
    doc_id = (await upload.json())["id"]
    for lease in await deps.store.claim_queued_documents("w", 30, 1):
        await process_document(deps, lease)

    everything = await (await client.get(f"/v1/documents/{doc_id}/chunks")).json()
    assert everything["total"] == len(everything["chunks"]) > 2
    assert {(c["page_start"], c["page_end"]) for c in everything["chunks"]} == {(1, 1)}
    assert everything["chunks"][0]["text"].startswith("word0 word1")
    second = await (await client.get(f"/v1/documents/{doc_id}/chunks?offset=1&limit=1")).json()
    assert (second["offset"], second["chunks"]) == (1, everything["chunks"][1:2])

    original = await client.get(f"/v1/documents/{doc_id}/content")
    assert original.status == 200
    assert await original.read() == text
    assert original.headers["Content-Type"] == "text/plain"
    assert original.headers["Content-Disposition"] == ("attachment; filename*=UTF-8''notes.txt")
    await client.delete(f"/v1/documents/{doc_id}")
    gone = await client.get(f"/v1/documents/{doc_id}/content")
    assert gone.status == 404
    assert (await error_of(gone))["code"] == "not_found"
    assert (await client.get("/v1/documents/nope/chunks")).status == 404


async def test_an_empty_file_is_refused_at_upload_as_the_readme_says(
    aiohttp_client: MakeClient, deps: Deps
) -> None:
    client = await client_for(aiohttp_client, deps)
    response = await client.post("/v1/collections/c/documents", data=form(("empty.txt", b"")))
    assert response.status == 415
    error = await error_of(response)
    assert error["code"] == "unsupported_type"
    assert "an empty file" in error["message"]
    assert await deps.store.stats() == await make_deps().store.stats()  # nothing was stored
