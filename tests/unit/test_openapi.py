"""/openapi.json describes exactly the routes the app serves, with the shapes it returns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import jsonschema_rs
import pytest
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient

from api.access import Target
from api.app import create_app
from api.openapi import document
from api.routes import ACCESS
from sheaf.services.deps import Deps
from sheaf.services.processing import process_document
from tests.unit.conftest import make_deps

pytestmark = pytest.mark.unit

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
METHODS = {"get", "post", "put", "patch", "delete"}
CONSOLE_PAGES = ("/", "/console")  # static pages of the web console: not part of the API
API_PAGE = "/docs"  # the interactive page that shows this document


def documented() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document()["paths"].items()
        for method in item
        if method in METHODS
    }


def routed(app: web.Application) -> set[tuple[str, str]]:
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.method != "HEAD"  # aiohttp adds HEAD beside every GET
        and not route.resource.canonical.startswith(CONSOLE_PAGES[1])
        and route.resource.canonical != CONSOLE_PAGES[0]
        and not route.resource.canonical.startswith(API_PAGE)
    }


def test_the_document_is_valid_openapi_3_1() -> None:
    schema = schemathesis.openapi.from_dict(document())
    schema.validate()
    assert document()["openapi"].startswith("3.1")


def test_every_route_is_documented_and_nothing_else() -> None:
    deps = make_deps()
    app = create_app(deps.settings, deps=deps, housekeeping=False)
    assert routed(app) == documented()


def test_public_routes_and_only_they_need_no_credentials() -> None:
    paths = document()["paths"]
    for (method, path), access in ACCESS.items():
        operation = paths[path][method.lower()]
        public = operation.get("security") == []
        assert public == (access.target is Target.PUBLIC), (method, path)
        assert ("401" in operation["responses"]) == (not public), (method, path)


@pytest.fixture
async def client(aiohttp_client: MakeClient, deps: Deps) -> Client:
    return await aiohttp_client(create_app(deps.settings, deps=deps, housekeeping=False))


def validator(name: str) -> Any:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": f"#/components/schemas/{name}",
        "components": document()["components"],
    }
    return jsonschema_rs.validator_for(schema)


async def check(response: aiohttp.ClientResponse, status: int, name: str) -> dict[str, Any]:
    assert response.status == status, await response.text()
    body: dict[str, Any] = await response.json()
    errors = [str(e) for e in validator(name).iter_errors(body)]
    assert errors == [], (name, body)
    return body


async def upload(client: Client, text: bytes, name: str = "a.txt") -> aiohttp.ClientResponse:
    form = aiohttp.FormData()
    form.add_field("file", text, filename=name)
    return await client.post("/v1/collections/c/documents", data=form)


async def test_served_document_is_the_document_of_the_auth_mode(
    client: Client, aiohttp_client: MakeClient
) -> None:
    """Without authentication (the default here) nothing asks for credentials."""
    served = await (await client.get("/openapi.json")).json()
    assert served == document(auth=False)
    assert served["security"] == []
    assert "securitySchemes" not in served["components"]
    responses = [op["responses"] for item in served["paths"].values() for op in _ops(item)]
    assert not [r for r in responses if "401" in r or "403" in r]

    keyed = make_deps(auth_mode="keys")
    keyed_client = await aiohttp_client(create_app(keyed.settings, deps=keyed, housekeeping=False))
    served = await (await keyed_client.get("/openapi.json")).json()
    assert served == document(auth=True)
    assert served["security"] == [{"bearer": []}]
    dlq = served["paths"]["/v1/admin/dlq"]["get"]["responses"]
    assert {"400", "401", "403"} <= set(dlq)
    assert "no_dead_letter_queue" in dlq["400"]["description"]


def _ops(item: dict[str, Any]) -> list[dict[str, Any]]:
    return [op for method, op in item.items() if method in METHODS]


async def test_responses_have_the_documented_shapes(client: Client, deps: Deps) -> None:
    created = await check(await upload(client, b"harbour crane inspection"), 202, "Upload")
    await check(await upload(client, b"harbour crane inspection", "b.txt"), 200, "Upload")
    failing = await check(await upload(client, b"%PDF-1.7 not really a pdf"), 202, "Upload")
    for lease in await deps.store.claim_queued_documents("w", 30, 10):
        await process_document(deps, lease)

    doc = await check(
        await client.get(f"/v1/documents/{created['id']}"), 200, "DocumentWithHistory"
    )
    assert doc["history"]
    failed = await check(
        await client.get(f"/v1/documents/{failing['id']}"), 200, "DocumentWithHistory"
    )
    assert failed["error_kind"] == "permanent"
    assert "retry" not in failed["links"]  # the file itself is broken: no retry offered
    page = await check(await client.get("/v1/collections/c/documents?limit=1"), 200, "DocumentPage")
    assert page["links"]["next"]
    await check(await client.get("/v1/admin/failed"), 200, "DocumentPage")
    hits = await check(await client.get("/v1/collections/c/search?q=crane"), 200, "SearchResults")
    assert hits["results"]
    await check(await client.get("/v1/stats"), 200, "Stats")
    await check(await client.get("/healthz"), 200, "Health")
    await check(await client.get("/readyz"), 200, "Readiness")
    await check(await client.post(f"/v1/documents/{created['id']}/retry"), 409, "Error")
    await check(await client.post(f"/v1/documents/{failing['id']}/retry"), 202, "Document")
    await check(await client.delete(f"/v1/documents/{created['id']}"), 202, "Document")
    await check(await client.get("/v1/documents/nope"), 404, "Error")
    await check(await client.get("/v1/admin/dlq"), 400, "Error")
    await check(await client.get("/v1/admin/dlq/²"), 404, "Error")  # digits are 0-9 only
