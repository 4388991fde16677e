"""Every route of the API with the access it needs, in one table.

`api.security` enforces the access column on every request; `api.openapi` describes the
same routes, and a test keeps the two in step with the router.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from api import handlers as h
from api.access import ADMIN_ONLY, PUBLIC, Access, Target
from sheaf.domain.scopes import Scope

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

READ_COLLECTION = Access(Scope.READ, Target.COLLECTION)
WRITE_COLLECTION = Access(Scope.WRITE, Target.COLLECTION)
READ_DOCUMENT = Access(Scope.READ, Target.DOCUMENT)
WRITE_DOCUMENT = Access(Scope.WRITE, Target.DOCUMENT)
UPLOAD = Access(Scope.WRITE, Target.COLLECTION, rate_limited=True)


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    access: Access


ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/collections/{collection}/documents", h.upload, UPLOAD),
    Route("GET", "/v1/collections/{collection}/documents", h.list_documents, READ_COLLECTION),
    Route("GET", "/v1/collections/{collection}/search", h.search, READ_COLLECTION),
    Route("GET", "/v1/documents/{document_id}", h.get_document, READ_DOCUMENT),
    Route("DELETE", "/v1/documents/{document_id}", h.delete_document, WRITE_DOCUMENT),
    Route("POST", "/v1/documents/{document_id}/retry", h.retry_document, WRITE_DOCUMENT),
    Route("GET", "/v1/stats", h.stats, ADMIN_ONLY),
    Route("GET", "/v1/admin/failed", h.failed_documents, ADMIN_ONLY),
    Route("GET", "/v1/admin/dlq", h.dlq_list, ADMIN_ONLY),
    Route("POST", "/v1/admin/dlq/resubmit", h.dlq_resubmit, ADMIN_ONLY),
    Route("POST", "/v1/admin/dlq/purge", h.dlq_purge, ADMIN_ONLY),
    # Digits only, so /v1/admin/dlq/purge is never read as a sequence number.
    Route("GET", "/v1/admin/dlq/{sequence_number:[0-9]+}", h.dlq_show, ADMIN_ONLY),
    Route("GET", "/healthz", h.healthz, PUBLIC),
    Route("GET", "/readyz", h.readyz, PUBLIC),
    Route("GET", "/metrics", h.prometheus, PUBLIC),
    Route("GET", "/openapi.json", h.openapi, PUBLIC),
)


def template(path: str) -> str:
    """The path as aiohttp names its resource: `{name:regex}` becomes `{name}`."""
    return re.sub(r"\{(\w+):[^}]+\}", r"{\1}", path)


ELSEWHERE: dict[tuple[str, str], Access] = {
    # api/console_api.py: lists only the collections the caller may see.
    ("GET", "/v1/collections"): Access(Scope.READ, Target.CALLER),
    # api/console_api.py: the operator's dashboard, over every collection.
    ("GET", "/v1/admin/dashboard"): ADMIN_ONLY,
    # api/console_api.py: a document's chunks (its text as indexed) and its original file.
    ("GET", "/v1/documents/{document_id}/chunks"): READ_DOCUMENT,
    ("GET", "/v1/documents/{document_id}/content"): READ_DOCUMENT,
}
"""Rules for /v1 routes other modules register; any other /v1 route needs admin."""

ACCESS: dict[tuple[str, str], Access] = {
    **{(r.method, template(r.path)): r.access for r in ROUTES},
    **ELSEWHERE,
}
"""Access by (method, path template): what `api.security` enforces."""


def add_routes(app: web.Application) -> None:
    for route in ROUTES:
        if route.method == "GET":
            app.router.add_get(route.path, route.handler)  # and HEAD, as before
        else:
            app.router.add_route(route.method, route.path, route.handler)
