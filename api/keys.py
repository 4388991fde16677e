"""Typed application keys (aiohttp `web.AppKey`)."""

from aiohttp import web

from sheaf.services.deps import Deps

DEPS = web.AppKey("deps", Deps)
