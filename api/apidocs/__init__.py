"""`/docs`: the interactive API page (Swagger UI), served from the API itself, offline.

Swagger UI is vendored as static files (`static/VENDORED.md`: version, hashes, licence),
so the page works without internet access and no build step. It reads `/openapi.json`
(which describes this server's authentication mode) and sends "Try it out" requests to
this same origin; its "Authorize" button takes an API key or Entra ID token when the
server asks for one. The page itself needs no credentials: it holds no data.

Swagger UI sets inline styles, so this page's Content-Security-Policy allows them (and
`data:` images for its icons); scripts and requests stay limited to this origin.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static"
FILES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "docs.js": "text/javascript; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def setup(app: web.Application) -> None:
    app.router.add_get("/docs", _page)
    app.router.add_get("/docs/{name}", _asset)


async def _page(request: web.Request) -> web.StreamResponse:
    # The page lives under /docs/, so its relative asset names resolve there.
    raise web.HTTPFound("/docs/index.html")


async def _asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name == "index.html":
        return _file(STATIC / "docs.html", "text/html; charset=utf-8")
    content_type = FILES.get(name)
    if content_type is None:
        raise web.HTTPNotFound(text="no such file in the API page")
    return _file(STATIC / name, content_type)


def _file(path: Path, content_type: str) -> web.FileResponse:
    return web.FileResponse(path, headers={"Content-Type": content_type, **SECURITY_HEADERS})
