"""Entra ID bearer tokens against a JWKS served by a local aiohttp server.

The test plays the tenant: it makes RSA keys, publishes their public halves as a JWKS,
and mints tokens (valid, expired, for another audience or issuer, signed by an unknown or
a wrong key) exactly as Entra would, so the real verification path runs end to end.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from api.app import create_app
from sheaf.auth.entra import JwksCache
from sheaf.auth.errors import Unauthenticated
from sheaf.auth.keys import new_key
from sheaf.domain.scopes import Scope
from sheaf.errors import TransientError
from sheaf.testing import InMemoryKeyStore
from tests.unit.conftest import make_deps

pytestmark = pytest.mark.unit

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
MakeServer = Callable[[web.Application], Awaitable[TestServer]]
TENANT = "7f3c2f54-1b7e-4d0e-9d3a-3c0c1a2b3c4d"
ISSUER = f"https://login.microsoftonline.com/{TENANT}/v2.0"
AUDIENCE = "api://sheaf-test"


class Tenant:
    """Signing keys and a JWKS endpoint, like a tenant's; keys can be added (rotation)."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.published: set[str] = set()
        self.fetches = 0
        self.available = True
        self.padding = 0  # bytes of junk added to the JWKS document
        self.add_key("key-1")

    def add_key(self, kid: str, *, publish: bool = True) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if publish:
            self.published.add(kid)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in sorted(self.published):
            jwk = json.loads(RSAAlgorithm.to_jwk(self.keys[kid].public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    async def handle(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if not self.available:
            return web.Response(status=503)
        return web.json_response({**self.jwks(), "padding": "x" * self.padding})

    def token(self, *, kid: str = "key-1", signer: str | None = None, **claims: Any) -> str:
        now = int(time.time())
        body = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "oid": "0b5a7c2e-user",
            "tid": TENANT,
            **claims,
        }
        body = {k: v for k, v in body.items() if v is not None}
        key = self.keys[signer or kid]
        return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture
async def tenant(aiohttp_server: MakeServer) -> tuple[Tenant, str]:
    tenant = Tenant()
    app = web.Application()
    app.router.add_get("/keys", tenant.handle)
    server = await aiohttp_server(app)
    return tenant, str(server.make_url("/keys"))


@pytest.fixture
async def api(
    aiohttp_client: MakeClient, tenant: tuple[Tenant, str]
) -> tuple[Client, Tenant, InMemoryKeyStore]:
    issuer, url = tenant
    deps = make_deps(
        auth_mode="keys+entra",
        entra_tenant_id=TENANT,
        entra_audience=f"{AUDIENCE},00000000-aaaa-bbbb-cccc-000000000000",
        entra_jwks_url=url,
        entra_role_scopes=(
            "Sheaf.Read=read;Sheaf.Admin=admin;Legal.Writers=write:legal;5e1f0c9a-group=read:hr"
        ),
    )
    keys = InMemoryKeyStore()
    app = create_app(deps.settings, deps=deps, housekeeping=False, keys=keys)
    return await aiohttp_client(app), issuer, keys


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def answer(client: Client, method: str, path: str, token: str) -> tuple[int, str]:
    response = await client.request(method, path, headers=bearer(token))
    body = await response.json()
    return response.status, body["error"]["code"] if "error" in body else "ok"


async def test_a_valid_token_acts_with_its_roles(api: tuple[Client, Tenant, Any]) -> None:
    client, tenant, _ = api
    reader = tenant.token(roles=["Sheaf.Read"])
    assert await answer(client, "GET", "/v1/collections/any/documents", reader) == (200, "ok")
    # Valid, but without the scope: 403.
    assert await answer(client, "POST", "/v1/collections/any/documents", reader) == (
        403,
        "forbidden",
    )
    assert await answer(client, "GET", "/v1/stats", reader) == (403, "forbidden")
    admin = tenant.token(roles=["Sheaf.Admin"])
    assert await answer(client, "GET", "/v1/stats", admin) == (200, "ok")


async def test_the_client_id_audience_and_v1_issuer_are_accepted_too(
    api: tuple[Client, Tenant, Any],
) -> None:
    client, tenant, _ = api
    token = tenant.token(
        roles=["Sheaf.Read"],
        aud="00000000-aaaa-bbbb-cccc-000000000000",
        iss=f"https://sts.windows.net/{TENANT}/",
    )
    assert await answer(client, "GET", "/v1/collections/x/documents", token) == (200, "ok")


async def test_collections_of_a_role_limit_what_exists(api: tuple[Client, Tenant, Any]) -> None:
    client, tenant, _ = api
    legal = tenant.token(roles=["Legal.Writers"])
    assert await answer(client, "GET", "/v1/collections/legal/documents", legal) == (200, "ok")
    assert await answer(client, "GET", "/v1/collections/hr/documents", legal) == (
        404,
        "not_found",
    )
    group = tenant.token(groups=["5e1f0c9a-group"])
    assert await answer(client, "GET", "/v1/collections/hr/documents", group) == (200, "ok")
    assert await answer(client, "POST", "/v1/collections/hr/documents", group) == (
        403,
        "forbidden",
    )


async def test_a_token_without_any_mapped_role_is_403(api: tuple[Client, Tenant, Any]) -> None:
    client, tenant, _ = api
    for token in [tenant.token(), tenant.token(roles=["Some.Other.App"], groups="not-a-list")]:
        status, code = await answer(client, "GET", "/v1/collections/a/documents", token)
        assert (status, code) == (403, "forbidden")


def _tokens(tenant: Tenant) -> dict[str, str]:
    now = int(time.time())
    tenant.add_key("rogue", publish=False)
    roles = ["Sheaf.Admin"]
    return {
        "expired": tenant.token(roles=roles, iat=now - 7200, nbf=now - 7200, exp=now - 3600),
        "not-yet-valid": tenant.token(roles=roles, nbf=now + 3600),
        "wrong-audience": tenant.token(roles=roles, aud="api://another-app"),
        "wrong-issuer": tenant.token(roles=roles, iss="https://login.microsoftonline.com/x/v2.0"),
        "other-tenant-v1": tenant.token(roles=roles, iss="https://sts.windows.net/other/"),
        "unknown-kid": tenant.token(roles=roles, kid="rogue"),
        "bad-signature": tenant.token(roles=roles, kid="key-1", signer="rogue"),
        "no-expiry": tenant.token(roles=roles, exp=None),
        "no-audience": tenant.token(roles=roles, aud=None),
        "hs256": jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "exp": now + 60, "roles": roles},
            "a shared secret anyone could guess",
            algorithm="HS256",
            headers={"kid": "key-1"},
        ),
        "alg-none": jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "exp": now + 60, "roles": roles},
            None,
            algorithm="none",
            headers={"kid": "key-1"},
        ),
        "no-kid": jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "exp": now + 60},
            tenant.keys["key-1"],
            algorithm="RS256",
        ),
        "garbage": "not.a.token",
    }


async def test_tokens_that_do_not_verify_are_401(api: tuple[Client, Tenant, Any]) -> None:
    client, tenant, _ = api
    assert await answer(client, "GET", "/v1/stats", tenant.token(roles=["Sheaf.Admin"])) == (
        200,
        "ok",
    )
    for name, token in _tokens(tenant).items():
        response = await client.get("/v1/stats", headers=bearer(token))
        body = await response.json()
        assert (response.status, body["error"]["code"]) == (401, "unauthenticated"), name
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), name
        assert token not in json.dumps(body), name
    messages = {}
    for name in ("expired", "wrong-audience", "wrong-issuer", "unknown-kid", "bad-signature"):
        response = await client.get("/v1/stats", headers=bearer(_tokens(tenant)[name]))
        messages[name] = (await response.json())["error"]["message"]
    assert "expired" in messages["expired"]
    assert "audience" in messages["wrong-audience"]
    assert "issuer" in messages["wrong-issuer"]
    assert "kid" in messages["unknown-kid"]
    assert "signature" in messages["bad-signature"]


async def test_api_keys_still_work_beside_entra(api: tuple[Client, Tenant, Any]) -> None:
    client, _, keys = api
    token, record = new_key("bot", Scope.READ, ["a"])
    await keys.create_key(record)
    assert await answer(client, "GET", "/v1/collections/a/documents", token) == (200, "ok")


async def test_an_unreachable_tenant_is_503_not_401(
    aiohttp_client: MakeClient, tenant: tuple[Tenant, str]
) -> None:
    issuer, url = tenant
    issuer.available = False
    deps = make_deps(
        auth_mode="entra", entra_tenant_id=TENANT, entra_audience=AUDIENCE, entra_jwks_url=url
    )
    client = await aiohttp_client(create_app(deps.settings, deps=deps, housekeeping=False))
    response = await client.get("/v1/stats", headers=bearer(issuer.token(roles=["Sheaf.Admin"])))
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "jwks_unavailable"
    assert "Retry-After" in response.headers


# -- the cache itself: refresh on an unknown kid, with a floor ---------------------------


async def test_an_unknown_kid_refreshes_the_keys_at_most_once_per_floor(
    tenant: tuple[Tenant, str],
) -> None:
    issuer, url = tenant
    now = [1000.0]
    cache = JwksCache(url, min_refresh_seconds=60, max_age_seconds=3600, clock=lambda: now[0])
    try:
        await asyncio.gather(*(cache.key("key-1") for _ in range(10)))
        assert issuer.fetches == 1  # one fetch for ten concurrent first requests
        issuer.add_key("key-2")  # the tenant rolls over to a new key
        now[0] += 5
        with pytest.raises(Unauthenticated, match="unknown kid"):
            await cache.key("key-2")  # too soon after the last fetch: not fetched again
        with pytest.raises(Unauthenticated):
            await cache.key("made-up")
        assert issuer.fetches == 1
        now[0] += 60
        assert (await cache.key("key-2")).key_id == "key-2"
        assert issuer.fetches == 2
        with pytest.raises(Unauthenticated):
            await cache.key("made-up")  # right after a fetch: no new one
        assert issuer.fetches == 2
        now[0] += 3601
        await cache.key("key-1")  # too old: refreshed even for a known kid
        assert issuer.fetches == 3
    finally:
        await cache.close()


async def test_known_keys_keep_working_while_the_endpoint_is_down(
    tenant: tuple[Tenant, str],
) -> None:
    issuer, url = tenant
    now = [0.0]
    cache = JwksCache(url, min_refresh_seconds=1, max_age_seconds=10, clock=lambda: now[0])
    try:
        issuer.available = False
        with pytest.raises(TransientError):
            await cache.key("key-1")  # nothing held yet: 503, not 401
        issuer.available = True
        now[0] += 2
        await cache.key("key-1")
        issuer.available = False
        now[0] += 20
        assert (await cache.key("key-1")).key_id == "key-1"  # stale but usable
        assert issuer.fetches == 3
    finally:
        await cache.close()


async def test_an_oversized_jwks_document_is_refused(tenant: tuple[Tenant, str]) -> None:
    issuer, url = tenant
    issuer.padding = 2 * 1024 * 1024
    cache = JwksCache(url)
    try:
        with pytest.raises(TransientError, match=r"signing keys .*\(ValueError\)"):
            await cache.key("key-1")
    finally:
        await cache.close()
