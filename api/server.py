"""Serving the API until a stop signal: used by `sheaf api` and `sheaf up`."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from api.app import create_app
from sheaf.config import Settings
from sheaf.errors import ConfigError

log = logging.getLogger(__name__)


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    runner = web.AppRunner(create_app(settings), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {settings.host}:{settings.port} ({exc.strerror}); "
                "is another Sheaf running? Choose another port with --port or SHEAF_PORT"
            ) from exc
        log.info("api listening", extra={"url": f"http://{settings.host}:{settings.port}"})
        await stop.wait()
    finally:
        await runner.cleanup()
