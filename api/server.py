"""Serving the API until a stop signal: used by `sheaf api` and `sheaf up`."""

from __future__ import annotations

import asyncio
import ipaddress
import logging

from aiohttp import web

from api.app import create_app
from api.protocol import JsonErrorRunner
from sheaf.config import Settings
from sheaf.errors import ConfigError

log = logging.getLogger(__name__)


async def serve(
    settings: Settings, stop: asyncio.Event, listening: asyncio.Event | None = None
) -> None:
    """Serve until `stop`; `listening` is set once the port is bound."""
    check_exposure(settings, warn=False)  # the command line checked (and warned) already
    runner = JsonErrorRunner(create_app(settings), access_log=None, handle_signals=False)
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
        if listening is not None:
            listening.set()
        await stop.wait()
    finally:
        await runner.cleanup()


def check_exposure(settings: Settings, *, warn: bool = True) -> None:
    """Refuse to serve every collection to a network without authentication.

    On a loopback address only this machine's users can call the API, which is what the
    embedded default (`sheaf up`) is for: allowed, with a warning (once: `warn=False`
    where the caller has already given it).
    """
    if settings.auth_mode != "none":
        return
    if is_loopback(settings.host):
        if not warn:
            return
        log.warning(
            "authentication is off (SHEAF_AUTH_MODE=none): anyone on this machine may read "
            "and change every collection; set SHEAF_AUTH_MODE=keys before sharing it",
            extra={"host": settings.host},
        )
        return
    raise ConfigError(
        f"refusing to listen on {settings.host} without authentication: anyone who can "
        "reach it could read and change every collection. Set SHEAF_AUTH_MODE=keys and "
        "create a key with `sheaf keys create --name ops --scope admin --collection '*'` "
        "(or configure Entra ID: SHEAF_AUTH_MODE=entra, SHEAF_ENTRA_TENANT_ID, "
        "SHEAF_ENTRA_AUDIENCE), or listen on 127.0.0.1 only (see docs/security.md)"
    )


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # another name: it may resolve to any address
