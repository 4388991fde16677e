"""A worker's own small HTTP server: `/healthz`, `/readyz` and `/metrics`.

Each worker process serves its own metrics (see `sheaf.metrics` for why not a shared
multiprocess registry) on `SHEAF_HOST`:`SHEAF_WORKER_METRICS_PORT`; under `sheaf up`
the supervisor hands worker N the base port + N. Port 0 runs no server.

- `/healthz` — the process is alive and its event loop responsive (for a liveness probe);
- `/readyz` — database, blob store, queue mode and embedder, 503 naming what failed (for
  a readiness/startup probe);
- `/metrics` — Prometheus text format.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from sheaf import metrics, observability
from sheaf.errors import ConfigError
from sheaf.observability import LoopMonitor
from sheaf.services.deps import Deps

log = logging.getLogger(__name__)

DEPS = web.AppKey("deps", Deps)
MONITOR = web.AppKey("loop_monitor", LoopMonitor)


def create_health_app(deps: Deps, monitor: LoopMonitor) -> web.Application:
    app = web.Application()
    app[DEPS] = deps
    app[MONITOR] = monitor
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", prometheus)
    return app


async def healthz(request: web.Request) -> web.Response:
    healthy, body = request.app[MONITOR].status()
    return web.json_response(body, status=200 if healthy else 503)


async def readyz(request: web.Request) -> web.Response:
    result = await observability.readiness(request.app[DEPS])
    return web.json_response(result.body(), status=200 if result.ready else 503)


async def prometheus(request: web.Request) -> web.Response:
    body, content_type = metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


@contextlib.asynccontextmanager
async def serve_health(deps: Deps, monitor: LoopMonitor) -> AsyncIterator[int | None]:
    """Serve while inside; yields the port listened on (None when the port setting is 0)."""
    settings = deps.settings
    if settings.worker_metrics_port == 0:
        yield None
        return
    runner = web.AppRunner(create_health_app(deps, monitor), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.worker_metrics_port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"the worker cannot serve /metrics on {settings.host}:"
                f"{settings.worker_metrics_port} ({exc.strerror}); choose another "
                "SHEAF_WORKER_METRICS_PORT"
            ) from exc
        url = f"http://{settings.host}:{settings.worker_metrics_port}"
        log.info("worker health and metrics listening", extra={"url": url})
        yield settings.worker_metrics_port
    finally:
        await runner.cleanup()
