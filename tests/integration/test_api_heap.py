"""The API keeps what its start-up made out of the garbage collector's full collections.

A full collection walks every tracked object, and the ~170,000 that the imports, the app
and the adapters leave took 84 ms to walk (docs/benchmarks.md section 12): a pause of the
event loop, and of the search it interrupted, every few hundred searches.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from api.app import create_app
from sheaf.adapters.sql.migrate import upgrade
from sheaf.config import Settings

pytestmark = pytest.mark.integration


async def test_the_api_freezes_what_its_start_up_made(
    aiohttp_client: Callable[[web.Application], Awaitable[Any]], tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sheaf.db'}"
    await asyncio.to_thread(upgrade, url)
    settings = Settings.from_env({}, database_url=url, blob_dir=tmp_path / "blobs")
    gc.unfreeze()
    try:
        assert gc.get_freeze_count() == 0
        client = await aiohttp_client(create_app(settings, housekeeping=False))
        assert (await client.get("/healthz")).status == 200
        assert gc.get_freeze_count() > 50_000  # the modules, the app, the adapters
    finally:
        gc.unfreeze()
