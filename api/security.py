"""Authentication and authorisation of every request, as one middleware.

Every route under /v1 — listed in `api.routes` or not, matched or not — needs a caller
(`Authorization: Bearer <API key or Entra ID token>` unless SHEAF_AUTH_MODE=none); routes
outside /v1 (health, metrics, the OpenAPI document, the console's static pages) need none.
Then the route's `Access` decides:

- a collection the caller has no grant on does not exist for it: 404, the same answer as
  for a document id that was never issued, so nobody learns what other tenants hold;
- a collection it can see, without the scope the route needs: 403;
- uploads spend a token of the caller's bucket: 429 with `Retry-After` when empty.

Handlers that list across collections read `principal_of(request)` to filter.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from api.access import ADMIN_ONLY, Access, Target
from api.keys import DEPS
from api.routes import ACCESS
from sheaf.auth import Authenticator, build_authenticator
from sheaf.auth.errors import Forbidden, RateLimited
from sheaf.auth.ratelimit import TokenBucketLimiter
from sheaf.config import Settings
from sheaf.domain.scopes import ALL_COLLECTIONS, Principal, Scope
from sheaf.errors import NotFound
from sheaf.ports import KeyStore

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
LIMITER = web.AppKey("upload_limiter", TokenBucketLimiter)
KEY_STORE = web.AppKey("key_store", KeyStore)
PRINCIPAL = web.RequestKey("principal", Principal)


def principal_of(request: web.Request) -> Principal:
    """The caller of a /v1 request (set by the middleware before any handler runs)."""
    return request[PRINCIPAL]


def context(
    settings: Settings, keys: Callable[[web.Application], KeyStore]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context: the authenticator and the limiter live as long as the app."""

    async def run(app: web.Application) -> AsyncIterator[None]:
        store = app[KEY_STORE] = keys(app)
        authenticator = app[AUTHENTICATOR] = build_authenticator(settings, store)
        app[LIMITER] = TokenBucketLimiter(settings.upload_rate_per_second, settings.upload_burst)
        yield
        await authenticator.close()

    return run


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    access = _access(request)
    if access is None:
        return await handler(request)
    principal = await request.app[AUTHENTICATOR].principal(request.headers.get("Authorization"))
    request[PRINCIPAL] = principal
    if not principal.grants:
        raise Forbidden(
            f"{principal.subject} holds no scope in Sheaf: ask for an app role or group that "
            "SHEAF_ENTRA_ROLE_SCOPES maps to read, write or admin"
        )
    if request.match_info.http_exception is None:  # unmatched: the handler answers 404/405
        await _authorize(request, principal, access)
        if access.rate_limited and principal.rate_key is not None:
            _spend_token(request.app[LIMITER], principal.rate_key, principal.subject)
    return await handler(request)


def _access(request: web.Request) -> Access | None:
    """The route's rule; None for routes outside /v1 that need nothing."""
    resource = request.match_info.route.resource
    template = resource.canonical if resource is not None else request.path
    method = "GET" if request.method == "HEAD" else request.method
    access = ACCESS.get((method, template))
    if access is not None:
        return None if access.target is Target.PUBLIC else access
    return ADMIN_ONLY if template == "/v1" or template.startswith("/v1/") else None


async def _authorize(request: web.Request, principal: Principal, access: Access) -> None:
    if access.target is Target.CALLER:
        pass  # the handler filters by `principal_of(request)`
    elif access.target is Target.EVERYTHING:
        _require(principal, access.scope, ALL_COLLECTIONS, "every collection")
    elif access.target is Target.COLLECTION:
        collection = request.match_info["collection"]
        if not principal.sees(collection):
            raise NotFound(f"no collection {collection[:140]!r} that this caller may see")
        _require(principal, access.scope, collection, f"collection {collection!r}")
    else:
        await _authorize_document(request, principal, access.scope)


async def _authorize_document(request: web.Request, principal: Principal, scope: Scope) -> None:
    if principal.allows(scope, ALL_COLLECTIONS):
        return  # nothing to look up: the caller may do this to any document
    document_id = request.match_info["document_id"]
    document = await request.app[DEPS].store.get_document(document_id, history=False)
    if document is None or not principal.sees(document.collection):
        raise NotFound(f"no document {document_id}")  # word for word what a missing one gets
    _require(principal, scope, document.collection, f"collection {document.collection!r}")


def _require(principal: Principal, scope: Scope, collection: str, what: str) -> None:
    if not principal.allows(scope, collection):
        log.info("request forbidden", extra={"subject": principal.subject, "scope": scope.value})
        raise Forbidden(f"{principal.subject} lacks the {scope.value} scope on {what}")


def _spend_token(limiter: TokenBucketLimiter, key: str, subject: str) -> None:
    wait = limiter.take(key)
    if wait:
        raise RateLimited(
            f"too many uploads from {subject}; try again in {wait:.1f} s "
            "(SHEAF_UPLOAD_RATE_PER_SECOND)",
            retry_after=wait,
        )
