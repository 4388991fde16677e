"""The aiohttp application factory and its middleware.

`create_app(settings)` opens nothing itself: resources are opened in `cleanup_ctx` when the
app starts and closed when it stops. Tests may pass ready-made `deps` (fakes) instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from api import apidocs, console, console_api, handlers, routes, security, views
from api.keys import DEPS
from sheaf import metrics, observability
from sheaf.bootstrap import freeze_startup_heap, open_deps
from sheaf.config import Settings
from sheaf.errors import (
    ClientError,
    ConfigError,
    NotFound,
    SheafError,
    StoreUnavailable,
    TransientError,
)
from sheaf.observability import LoopMonitor
from sheaf.ports import KeyStore
from sheaf.services.dashboard import sample_queue
from sheaf.services.deps import Deps
from sheaf.services.housekeeping import run_housekeeping

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
KEPT_HEADERS = ("allow", "retry-after", "www-authenticate")  # of aiohttp's own 4xx answers


def create_app(
    settings: Settings,
    *,
    deps: Deps | None = None,
    housekeeping: bool = True,
    keys: KeyStore | None = None,
) -> web.Application:
    """`housekeeping=False` (tests on fakes) runs no background jobs: neither recovery nor
    the database gauges. `keys` replaces the key store (by default `deps.keys`, which the
    composition root opens on the database)."""
    handlers.strict_multipart()
    app = web.Application(middlewares=[_observe, _errors, security.middleware])
    app.cleanup_ctx.append(_resources(settings, deps))
    app.cleanup_ctx.append(security.context(settings, _key_store(keys)))
    app.cleanup_ctx.append(_observability)
    if housekeeping:
        app.cleanup_ctx.append(_housekeeping)
    _routes(app)
    return app


def _routes(app: web.Application) -> None:
    routes.add_routes(app)  # the table of routes and the access each needs
    console.setup(app)  # the web console: /, /console/… and its own /v1 routes
    apidocs.setup(app)  # the interactive API page: /docs


def _key_store(given: KeyStore | None) -> Callable[[web.Application], KeyStore]:
    def choose(app: web.Application) -> KeyStore:
        keys = given or app[DEPS].keys
        if keys is None:
            raise ConfigError("the API needs a key store: Deps.keys, or create_app(keys=...)")
        return keys

    return choose


def _resources(
    settings: Settings, given: Deps | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        if given is not None:
            app[DEPS] = given
            yield
            return
        async with open_deps(settings) as deps:
            app[DEPS] = deps
            freeze_startup_heap()  # the process's long-lived objects: out of GC pauses
            yield

    return context


async def _observability(app: web.Application) -> AsyncIterator[None]:
    metrics.set_role("api")
    observability.export_queue_mode(observability.queue_mode(app[DEPS]))
    monitor = app[handlers.MONITOR] = LoopMonitor()
    monitor.start()
    yield
    await monitor.stop()


async def _housekeeping(app: web.Application) -> AsyncIterator[None]:
    """Recovery runs in the API too, so it works while workers are scaled to zero; so do
    the database gauges, which only API processes export (see `sheaf.observability`), and
    the queue samples of the console's dashboard (`sheaf.services.dashboard`)."""
    # Plain tasks, not a TaskGroup: aiohttp may run startup and cleanup in different tasks.
    stop = asyncio.Event()
    deps = app[DEPS]
    tasks = [
        asyncio.create_task(run_housekeeping(deps, stop), name="housekeeping"),
        asyncio.create_task(observability.run_database_gauges(deps, stop), name="db-gauges"),
        asyncio.create_task(
            sample_queue(deps, app[console_api.QUEUE_HISTORY], stop), name="queue-samples"
        ),
    ]
    yield
    stop.set()
    await asyncio.gather(*tasks)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as JSON with a stable `code` and a human `message`."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        body = views.error(code, exc.text or exc.reason)
        headers = {k: v for k, v in exc.headers.items() if k.lower() in KEPT_HEADERS}
        return web.json_response(body, status=exc.status, headers=headers)
    except ClientError as exc:
        extra = getattr(exc, "headers", None)  # 401: WWW-Authenticate; 429: Retry-After
        body = views.error(exc.code, exc.message)
        return web.json_response(body, status=exc.http_status, headers=extra)
    except NotFound as exc:
        return web.json_response(views.error(exc.code, exc.message), status=404)
    except (StoreUnavailable, TransientError) as exc:
        log.warning("dependency unavailable", extra={"error": exc.message})
        body = views.error(exc.code, f"{exc.message}; try again shortly")
        return web.json_response(body, status=503, headers={"Retry-After": "5"})
    except SheafError as exc:
        log.error("request failed", exc_info=exc)
        return web.json_response(views.error(exc.code, exc.message), status=500)
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        body = views.error("internal_error", "an unexpected error occurred; it has been logged")
        return web.json_response(body, status=500)


@web.middleware
async def _observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        info = request.match_info.route.resource
        route = info.canonical if info is not None else "unmatched"
        method = request.method if request.method in metrics.HTTP_METHODS else "other"
        metrics.HTTP_SECONDS.labels(method, route, str(status)).observe(time.perf_counter() - start)
