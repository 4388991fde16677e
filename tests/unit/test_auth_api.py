"""Authentication and isolation at the HTTP layer, on the in-memory fakes.

Keys for collection A meet documents of collection B: B must look exactly as if it did not
exist (404 with the same body a made-up id gets), while a visible collection without the
needed scope is 403, and every credential problem is 401.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from api.access import Target
from api.app import create_app
from api.routes import ACCESS, ROUTES
from api.server import check_exposure, is_loopback
from sheaf.auth.keys import new_key
from sheaf.config import Settings
from sheaf.domain.scopes import Scope
from sheaf.errors import ConfigError
from sheaf.services.deps import Deps
from sheaf.testing import InMemoryKeyStore
from tests.unit.conftest import make_deps

pytestmark = pytest.mark.unit

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
PROTECTED = [r for r in ROUTES if r.access.target is not Target.PUBLIC]
PARAMS = {"collection": "a", "document_id": "00000000-0000-0000-0000-000000000000"}


class Api:
    """An app on fakes with SHEAF_AUTH_MODE=keys, and helpers to mint keys for it."""

    def __init__(self, client: Client, deps: Deps, keys: InMemoryKeyStore) -> None:
        self.client = client
        self.deps = deps
        self.keys = keys

    async def key(self, scope: Scope, *collections: str) -> dict[str, str]:
        token, record = new_key("test", scope, collections)
        await self.keys.create_key(record)
        return {"Authorization": f"Bearer {token}"}

    async def upload(
        self, headers: dict[str, str], collection: str, text: str
    ) -> aiohttp.ClientResponse:
        form = aiohttp.FormData()
        form.add_field("file", text.encode(), filename="a.txt")
        url = f"/v1/collections/{collection}/documents"
        return await self.client.post(url, data=form, headers=headers)

    async def document(self, headers: dict[str, str], collection: str, text: str) -> str:
        response = await self.upload(headers, collection, text)
        assert response.status == 202, await response.text()
        return str((await response.json())["id"])


async def make_api(aiohttp_client: MakeClient, **settings: Any) -> Api:
    deps = make_deps(auth_mode="keys", **settings)
    keys = InMemoryKeyStore()
    app = create_app(deps.settings, deps=deps, housekeeping=False, keys=keys)
    return Api(await aiohttp_client(app), deps, keys)


@pytest.fixture
async def api(aiohttp_client: MakeClient) -> Api:
    return await make_api(aiohttp_client)


async def error_of(response: aiohttp.ClientResponse) -> tuple[int, str]:
    body = await response.json()
    return response.status, body["error"]["code"]


def url_of(path: str) -> str:
    return re.sub(r"\{(\w+)(:[^}]+)?\}", lambda m: PARAMS.get(m[1], "1"), path)


@pytest.mark.parametrize("route", PROTECTED, ids=lambda r: f"{r.method} {r.path}")
@pytest.mark.parametrize(
    "authorization",
    [None, "", "Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "sk_sheaf_no_scheme"],
    ids=["missing", "empty", "basic", "bearer-alone", "bearer-blank", "no-scheme"],
)
async def test_every_v1_route_needs_credentials(
    api: Api, route: Any, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await api.client.request(route.method, url_of(route.path), headers=headers)
    assert await error_of(response) == (401, "unauthenticated")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in (await response.json())["error"]["message"]


@pytest.mark.parametrize(
    "token",
    [
        "sk_sheaf_0123456789abcdef_" + "A" * 43,  # well-formed, never issued
        "sk_sheaf_garbage",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",  # a JWT, but Entra is not enabled
    ],
    ids=["unknown-key", "malformed-key", "jwt-without-entra"],
)
async def test_keys_that_do_not_verify_are_401(api: Api, token: str) -> None:
    response = await api.client.get("/v1/stats", headers={"Authorization": f"Bearer {token}"})
    assert await error_of(response) == (401, "unauthenticated")
    assert token not in await response.text()


async def test_a_key_whose_secret_is_wrong_is_401(api: Api) -> None:
    headers = await api.key(Scope.ADMIN, "*")
    token = headers["Authorization"]
    forged = token[:-4] + ("BBBB" if token.endswith("AAAA") else "AAAA")
    response = await api.client.get("/v1/stats", headers={"Authorization": forged})
    assert await error_of(response) == (401, "unauthenticated")


async def test_a_revoked_key_is_401_at_once(api: Api) -> None:
    headers = await api.key(Scope.ADMIN, "*")
    assert (await api.client.get("/v1/stats", headers=headers)).status == 200
    [key] = await api.keys.list_keys()
    await api.keys.revoke_key(key.id)
    response = await api.client.get("/v1/stats", headers=headers)
    assert await error_of(response) == (401, "unauthenticated")
    assert "revoked" in (await response.json())["error"]["message"]


async def test_a_visible_collection_without_the_scope_is_403(api: Api) -> None:
    writer = await api.key(Scope.WRITE, "a")
    reader = await api.key(Scope.READ, "a")
    document_id = await api.document(writer, "a", "quarterly minutes")
    assert await error_of(await api.upload(reader, "a", "more minutes")) == (403, "forbidden")
    for method, path in [("DELETE", ""), ("POST", "/retry")]:
        response = await api.client.request(
            method, f"/v1/documents/{document_id}{path}", headers=reader
        )
        assert await error_of(response) == (403, "forbidden")
    response = await api.client.get(f"/v1/documents/{document_id}", headers=reader)
    assert response.status == 200
    assert (await response.json())["status"] == "queued"


async def test_another_collection_is_404_exactly_like_a_missing_document(api: Api) -> None:
    """A key for A learns nothing about B: the answers equal those for a made-up id."""
    admin_of_b = await api.key(Scope.ADMIN, "b")
    key_of_a = await api.key(Scope.ADMIN, "a")
    in_b = await api.document(admin_of_b, "b", "the secret merger memo")
    made_up = "11111111-2222-3333-4444-555555555555"
    for method, suffix in [("GET", ""), ("DELETE", ""), ("POST", "/retry")]:
        answers = []
        for document_id in (in_b, made_up):
            response = await api.client.request(
                method, f"/v1/documents/{document_id}{suffix}", headers=key_of_a
            )
            body = await response.json()
            answers.append((response.status, body["error"]["message"].replace(document_id, "ID")))
        assert answers[0] == answers[1] == (404, "no document ID")
    doc = await api.deps.store.get_document(in_b)
    assert doc is not None
    assert doc.status.value == "queued"  # the DELETE above did nothing


async def test_another_collections_routes_are_404(api: Api) -> None:
    key_of_a = await api.key(Scope.ADMIN, "a")
    for response in [
        await api.client.get("/v1/collections/b/documents", headers=key_of_a),
        await api.client.get("/v1/collections/b/search?q=memo", headers=key_of_a),
        await api.upload(key_of_a, "b", "planted in someone else's collection"),
    ]:
        assert await error_of(response) == (404, "not_found")
    assert [info async for info in api.deps.blobs.list()] == []


async def test_search_never_returns_another_collections_chunks(api: Api) -> None:
    from sheaf.testing import InMemoryDocumentStore

    admin = await api.key(Scope.ADMIN, "*")
    reader_of_a = await api.key(Scope.READ, "a")
    text = "harbour crane inspection passed in june"
    ids = {c: await api.document(admin, c, f"{text} ({c})") for c in ("a", "b")}
    store = api.deps.store
    assert isinstance(store, InMemoryDocumentStore)
    await _process_all(api.deps)
    response = await api.client.get(
        "/v1/collections/a/search?q=harbour+crane+inspection&k=10", headers=reader_of_a
    )
    assert response.status == 200
    hits = (await response.json())["results"]
    assert hits
    assert {h["document_id"] for h in hits} == {ids["a"]}


async def _process_all(deps: Deps) -> None:
    from sheaf.services.processing import process_document

    for lease in await deps.store.claim_queued_documents("w", 30, 10):
        await process_document(deps, lease)


@pytest.mark.parametrize("route", [r for r in ROUTES if r.access.target is Target.EVERYTHING])
async def test_cross_collection_routes_need_admin_over_everything(api: Api, route: Any) -> None:
    for headers in [await api.key(Scope.WRITE, "*"), await api.key(Scope.ADMIN, "a", "b")]:
        response = await api.client.request(route.method, url_of(route.path), headers=headers)
        assert await error_of(response) == (403, "forbidden")
    admin = await api.key(Scope.ADMIN, "*")
    response = await api.client.request(route.method, url_of(route.path), headers=admin)
    assert response.status not in (401, 403)


async def test_public_routes_need_nothing(api: Api) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert (await api.client.get(path)).status == 200, path


async def test_unknown_v1_paths_need_credentials_before_they_are_404(api: Api) -> None:
    assert await error_of(await api.client.get("/v1/nothing-here")) == (401, "unauthenticated")
    reader = await api.key(Scope.READ, "a")
    assert await error_of(await api.client.get("/v1/nothing-here", headers=reader)) == (
        404,
        "not_found",
    )
    response = await api.client.put("/v1/stats", headers=reader)
    assert await error_of(response) == (405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]  # kept from aiohttp's answer (RFC 9110)


async def test_every_v1_route_has_an_access_rule(api: Api) -> None:
    """A /v1 route outside the table would need admin (fail closed), but say it anyway."""
    routed = {
        (r.method, r.resource.canonical)
        for r in api.client.app.router.routes()
        if r.resource is not None and r.resource.canonical.startswith("/v1") and r.method != "HEAD"
    }
    assert routed - set(ACCESS) == set()


async def test_the_collection_list_shows_only_visible_collections(api: Api) -> None:
    admin = await api.key(Scope.ADMIN, "*")
    for collection in ("a", "b", "c"):
        await api.document(admin, collection, f"a document in {collection}")
    reader = await api.key(Scope.READ, "a", "c")
    response = await api.client.get("/v1/collections", headers=reader)
    assert response.status == 200
    assert [c["name"] for c in (await response.json())["collections"]] == ["a", "c"]
    everything = await api.client.get("/v1/collections", headers=admin)
    assert [c["name"] for c in (await everything.json())["collections"]] == ["a", "b", "c"]


async def test_a_v1_route_without_a_rule_needs_admin(aiohttp_client: MakeClient) -> None:
    deps = make_deps(auth_mode="keys")
    keys = InMemoryKeyStore()
    app = create_app(deps.settings, deps=deps, housekeeping=False, keys=keys)

    async def extra(request: web.Request) -> web.Response:
        return web.json_response({})

    app.router.add_get("/v1/not-in-the-table", extra)
    api = Api(await aiohttp_client(app), deps, keys)
    writer = await api.key(Scope.WRITE, "*")
    assert (await api.client.get("/v1/not-in-the-table", headers=writer)).status == 403
    admin = await api.key(Scope.ADMIN, "*")
    assert (await api.client.get("/v1/not-in-the-table", headers=admin)).status == 200


async def test_uploads_are_rate_limited_per_key(aiohttp_client: MakeClient) -> None:
    api = await make_api(aiohttp_client, upload_rate_per_second=0.01, upload_burst=2)
    first, second = await api.key(Scope.WRITE, "a"), await api.key(Scope.WRITE, "a")
    assert (await api.upload(first, "a", "one")).status == 202
    assert (await api.upload(first, "a", "two")).status == 202
    limited = await api.upload(first, "a", "three")
    assert await error_of(limited) == (429, "rate_limited")
    assert int(limited.headers["Retry-After"]) >= 1
    assert (await api.upload(second, "a", "three")).status == 202  # its own bucket
    reader = await api.key(Scope.READ, "a")
    for _ in range(5):  # reads are not rate limited
        assert (await api.client.get("/v1/collections/a/documents", headers=reader)).status == 200


async def test_without_auth_every_caller_is_an_admin(aiohttp_client: MakeClient) -> None:
    deps = make_deps()  # SHEAF_AUTH_MODE=none: the embedded default on loopback
    client = await aiohttp_client(create_app(deps.settings, deps=deps, housekeeping=False))
    assert (await client.get("/v1/stats")).status == 200
    assert (await client.get("/v1/admin/failed")).status == 200


# -- refusing to listen beyond loopback without auth ----------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_without_auth_starts_with_a_warning(
    host: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert is_loopback(host)
    with caplog.at_level(logging.WARNING):
        check_exposure(Settings.from_env({}, host=host))
    assert "SHEAF_AUTH_MODE=none" in caplog.text


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.1.2.3", "sheaf.example.com"])
def test_any_other_address_without_auth_refuses_to_start(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(ConfigError, match="SHEAF_AUTH_MODE=keys") as refused:
        check_exposure(Settings.from_env({}, host=host))
    assert "sheaf keys create" in refused.value.message
    check_exposure(Settings.from_env({}, host=host, auth_mode="keys"))  # with auth: fine
