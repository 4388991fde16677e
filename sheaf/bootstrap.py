"""The composition root: the only place that chooses adapters and builds the services.

Nothing is opened at import time. `open_deps` opens every resource and `Deps.close`-style
cleanup happens in `close_deps`; callers tie them to their own lifetime (the aiohttp
`cleanup_ctx`, the worker's `async with`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sheaf.adapters.blob_local import LocalBlobStore
from sheaf.adapters.bus_none import NoMessageBus
from sheaf.adapters.embed_lexical import LexicalEmbedder
from sheaf.adapters.sql import open_store
from sheaf.adapters.sql.migrate import upgrade
from sheaf.config import Settings
from sheaf.extract import LocalExtractor
from sheaf.services.deps import Deps


def migrate(settings: Settings) -> None:
    """Bring the database schema to the newest version (idempotent)."""
    upgrade(settings.database_url.get_secret_value())


@contextlib.asynccontextmanager
async def open_deps(settings: Settings) -> AsyncIterator[Deps]:
    async with contextlib.AsyncExitStack() as stack:
        store = await open_store(settings.database_url.get_secret_value())
        stack.push_async_callback(store.close)
        blobs = LocalBlobStore(settings.blob_dir)
        stack.push_async_callback(blobs.close)
        bus = NoMessageBus()
        stack.push_async_callback(bus.close)
        embedder = LexicalEmbedder(settings.embedding_dimensions)
        stack.push_async_callback(embedder.close)
        yield Deps(
            settings=settings,
            store=store,
            blobs=blobs,
            bus=bus,
            extractor=LocalExtractor(),
            embedder=embedder,
        )
