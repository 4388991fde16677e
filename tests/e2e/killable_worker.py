"""A real worker process that SIGKILLs itself at an injected fault point.

Run as `python tests/e2e/killable_worker.py` with the usual SHEAF_* environment. After
its first chunk batch has been committed it kills itself with SIGKILL — no cleanup, no
release, exactly like an OOM kill or a node loss — so tests can prove that another
worker finishes the document after the lease expires.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from collections.abc import Sequence
from typing import Any

from sheaf.bootstrap import open_deps
from sheaf.config import Settings
from sheaf.domain.models import EmbeddedChunk, Lease
from worker.runner import Worker


class KillAfterFirstBatch:
    """Wraps the store: delegate everything, die right after the first committed batch."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def write_chunks(self, lease: Lease, chunks: Sequence[EmbeddedChunk]) -> None:
        await self._store.write_chunks(lease, chunks)
        os.kill(os.getpid(), signal.SIGKILL)


async def main() -> None:
    settings = Settings.from_env(os.environ)
    async with open_deps(settings) as deps:
        deps = dataclasses.replace(deps, store=KillAfterFirstBatch(deps.store))
        await Worker(deps).run(asyncio.Event())


if __name__ == "__main__":
    asyncio.run(main())
