"""The /v1 routes the web console needs that the rest of the API lacks.

`GET /v1/collections` lists the collections in use, so a person can browse them instead of
remembering names. Like every /v1 route it is plain JSON for any client, not only the
console; the handler parses, calls one service function and maps the result.

Access: any signed-in caller (`Target.CALLER` in `api.routes`); the handler lists only the
collections that caller may see, so nobody learns what other tenants hold.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api.keys import DEPS
from api.security import principal_of
from sheaf.services import console


def register(app: web.Application) -> None:
    app.router.add_get("/v1/collections", list_collections)


async def list_collections(request: web.Request) -> web.Response:
    visible = principal_of(request).sees
    found = await console.list_collections(request.app[DEPS], visible)
    return web.json_response(collection_list(found))


def collection_list(found: console.CollectionList) -> dict[str, Any]:
    return {
        "collections": [collection(c) for c in found.collections],
        "complete": found.complete,
    }


def collection(item: console.CollectionSummary) -> dict[str, Any]:
    base = f"/v1/collections/{item.name}"
    return {
        "name": item.name,
        "documents": item.documents,
        "counts": item.counts,
        "links": {"documents": f"{base}/documents", "search": f"{base}/search"},
    }
