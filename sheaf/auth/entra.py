"""Microsoft Entra ID bearer tokens: RS256 signatures checked against the tenant's JWKS.

The signing keys are fetched from the tenant's JWKS endpoint and cached. Entra rolls its
keys over now and then, and a token signed with a new key names a `kid` the cache has not
seen: the cache is then fetched again, but at most once per `min_refresh_seconds`, so
tokens with made-up `kid`s cannot make Sheaf hammer the endpoint. It is also refreshed
when older than `max_age_seconds`. While the endpoint is unreachable the keys already
held keep working; with none held, requests get 503 rather than a misleading 401.

Checked on every token: the signature (RS256 only: `none` and HMAC tokens are refused),
`iss` (the tenant's), `aud` (this API), `exp` and `nbf` (with a minute of clock leeway).
App roles (`roles`) and groups (`groups`) map to grants by SHEAF_ENTRA_ROLE_SCOPES.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt

from sheaf.auth.errors import Unauthenticated
from sheaf.domain.scopes import Grant, Principal
from sheaf.errors import TransientError

log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 1024 * 1024
ALGORITHMS = ["RS256"]


def default_issuers(tenant_id: str) -> tuple[str, ...]:
    """The v2.0 and v1.0 issuers of a tenant (which one a token has depends on the app
    registration's `accessTokenAcceptedVersion`)."""
    return (
        f"https://login.microsoftonline.com/{tenant_id}/v2.0",
        f"https://sts.windows.net/{tenant_id}/",
    )


def default_jwks_url(tenant_id: str) -> str:
    return f"https://login.microsoftonline.com/{tenant_id}/discovery/v2.0/keys"


class JwksCache:
    """The tenant's public signing keys by `kid`, fetched lazily and refreshed sparingly."""

    def __init__(
        self,
        url: str,
        *,
        min_refresh_seconds: float = 60.0,
        max_age_seconds: float = 24 * 3600.0,
        timeout_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._min_refresh = min_refresh_seconds
        self._max_age = max_age_seconds
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._tried_at: float | None = None
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    async def key(self, kid: str) -> jwt.PyJWK:
        found = self._keys.get(kid)
        if found is None or self._too_old():
            async with self._lock:  # one fetch at a time; those waiting see its keys
                if self._too_old() or (kid not in self._keys and self._may_try()):
                    await self._refresh()
            found = self._keys.get(kid)
        if found is None:
            raise Unauthenticated(
                "the token is signed with a key the tenant does not publish (unknown kid); "
                "get a new token"
            )
        return found

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _too_old(self) -> bool:
        fetched = self._fetched_at
        return fetched is not None and self._clock() - fetched > self._max_age and self._may_try()

    def _may_try(self) -> bool:
        tried = self._tried_at
        return tried is None or self._clock() - tried >= self._min_refresh

    async def _refresh(self) -> None:
        """Fetch the keys again (the caller holds the lock); failures keep the old ones."""
        self._tried_at = self._clock()
        try:
            document = await self._fetch()
            self._keys = _signing_keys(document)
            self._fetched_at = self._clock()
        except (aiohttp.ClientError, TimeoutError, ValueError, jwt.PyJWKSetError) as exc:
            self._fetch_failed(exc)

    def _fetch_failed(self, exc: BaseException) -> None:
        log.warning("cannot refresh the Entra ID signing keys", extra={"error": repr(exc)})
        if not self._keys:
            raise TransientError(
                f"cannot fetch the Entra ID signing keys from {self.url} ({type(exc).__name__})",
                code="jwks_unavailable",
            ) from exc

    async def _fetch(self) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        body = bytearray()
        async with self._session.get(self.url) as response:
            response.raise_for_status()
            async for block in response.content.iter_chunked(64 * 1024):
                body += block
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError("the JWKS document is larger than 1 MiB")
        document = json.loads(body)
        if not isinstance(document, dict):
            raise ValueError("the JWKS document is not a JSON object")
        return document


def _signing_keys(document: dict[str, Any]) -> dict[str, jwt.PyJWK]:
    keys = jwt.PyJWKSet.from_dict(document).keys
    return {k.key_id: k for k in keys if k.key_id and k.public_key_use in (None, "sig")}


@dataclass(frozen=True, slots=True)
class EntraSettings:
    audiences: tuple[str, ...]
    issuers: tuple[str, ...]
    role_grants: Mapping[str, frozenset[Grant]]
    leeway_seconds: float = 60.0


class EntraVerifier:
    """Bearer token → `Principal`, or `Unauthenticated` saying what was wrong with it."""

    def __init__(self, settings: EntraSettings, jwks: JwksCache) -> None:
        self._settings = settings
        self._jwks = jwks

    async def principal(self, token: str) -> Principal:
        claims = await self._claims(token)
        subject = str(claims.get("oid") or claims.get("sub") or "unknown")
        names = [*_strings(claims.get("roles")), *_strings(claims.get("groups"))]
        found = frozenset().union(*(self._settings.role_grants.get(n, ()) for n in names))
        return Principal(f"entra:{subject[:64]}", found, rate_key=f"entra:{subject[:64]}")

    async def close(self) -> None:
        await self._jwks.close()

    async def _claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("the bearer token is neither a Sheaf API key nor a JWT") from None
        if header.get("alg") not in ALGORITHMS:
            raise Unauthenticated("the token must be signed with RS256 by Entra ID")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("the token names no signing key (kid)")
        key = await self._jwks.key(kid)
        try:
            return jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                audience=list(self._settings.audiences),
                issuer=list(self._settings.issuers),
                leeway=self._settings.leeway_seconds,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(_explain(exc)) from None


def _explain(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "the token has expired; get a new one"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "the token is not valid yet (nbf or iat in the future)"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "the token is for another audience (aud); request it for this API"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "the token was issued by another tenant or issuer (iss)"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "the token's signature does not verify"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the token lacks the {exc.claim!r} claim"
    return "the token is malformed"


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
