"""The web console: static pages served by the API itself, talking to the same /v1 API.

No build step and nothing fetched from elsewhere at run time: the HTML, CSS and plain
JavaScript modules in `static/` ship inside the package and are served as they are.
Only files present in `static/` are served, by name, so no request can reach another path.

The pages themselves need no authentication (they hold no data); every /v1 call the
console makes carries the user's `Authorization` header like any other client. A strict
Content-Security-Policy allows scripts, styles and fetches from this origin only, so even
text that slipped past the console's escaping could not run as script.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from api import console_api

STATIC = Path(__file__).parent / "static"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate every time (cheap: ETag/Last-Modified), so an upgrade is seen at once.
    "Cache-Control": "no-cache",
}
ASSETS = web.AppKey("console_assets", dict[str, Path])


def setup(app: web.Application) -> None:
    """Register the console's pages (`/`, `/console/…`) and its extra /v1 routes."""
    app[ASSETS] = _assets()
    app.router.add_get("/", _to_console)
    app.router.add_get("/console", _to_console)
    app.router.add_get("/console/", _index)
    app.router.add_get("/console/{name}", _asset)
    console_api.register(app)


def _assets() -> dict[str, Path]:
    return {
        path.name: path
        for path in STATIC.iterdir()
        if path.is_file() and path.suffix in CONTENT_TYPES and path.name != "index.html"
    }


async def _to_console(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/console/")


async def _index(request: web.Request) -> web.StreamResponse:
    return _file(STATIC / "index.html")


async def _asset(request: web.Request) -> web.StreamResponse:
    path = request.app[ASSETS].get(request.match_info["name"])
    if path is None:
        raise web.HTTPNotFound(text="no such file in the console")
    return _file(path)


def _file(path: Path) -> web.FileResponse:
    headers = {"Content-Type": CONTENT_TYPES[path.suffix], **SECURITY_HEADERS}
    return web.FileResponse(path, headers=headers)
