"""The worker: claim documents into free slots, process them, recover others' leftovers.

Side tasks run together and stop together: the claim loop, housekeeping (sweeper,
reconciler, cleaner) and, when configured, a health/metrics server. `stop` ends the
claim loop at once; documents in flight get `shutdown_grace_seconds` to finish, then are
cancelled, which releases them as `interrupted` (queued again, attempt not consumed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from collections.abc import AsyncIterator

from sheaf import logs, metrics, observability
from sheaf.aio import wait_any, wait_event
from sheaf.bootstrap import open_deps
from sheaf.config import Settings
from sheaf.domain.models import Lease
from sheaf.errors import TransientError
from sheaf.observability import LoopMonitor
from sheaf.services.deps import Deps
from sheaf.services.housekeeping import run_housekeeping
from sheaf.services.processing import process_document
from worker.health import serve_health

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0


class Worker:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.settings = deps.settings
        self.active: set[asyncio.Task[str]] = set()
        self._slot_freed = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        log.info(
            "worker started",
            extra={"worker_id": self.settings.worker_id, "concurrency": self.settings.concurrency},
        )
        async with asyncio.TaskGroup() as group:
            group.create_task(run_housekeeping(self.deps, stop), name="housekeeping")
            await self._claim_loop(stop)
            await self._drain()
        log.info("worker stopped", extra={"worker_id": self.settings.worker_id})

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        backoff = self.settings.poll_interval_seconds
        while not stop.is_set():
            free = self.settings.concurrency - len(self.active)
            try:
                leases = await self._claim(free) if free > 0 else []
            except TransientError as exc:
                log.warning("claim failed; backing off", extra={"error": exc.message})
                await wait_event(stop, backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            backoff = self.settings.poll_interval_seconds
            for lease in leases:
                self._start(lease)
            if free > 0 and len(leases) == free:
                continue  # a full batch: there may be more ready right now
            idle = None if free <= len(leases) else self._jittered_poll()
            self._slot_freed.clear()
            await wait_any([stop, self._slot_freed], idle)

    async def _claim(self, free: int) -> list[Lease]:
        return await self.deps.store.claim_queued_documents(
            self.settings.worker_id, self.settings.lease_seconds, free
        )

    def _start(self, lease: Lease) -> None:
        task = asyncio.create_task(process_document(self.deps, lease), name=lease.document_id)
        self.active.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[str]) -> None:
        self.active.discard(task)
        self._slot_freed.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("document task crashed", exc_info=task.exception())

    def _jittered_poll(self) -> float:
        return self.settings.poll_interval_seconds * random.uniform(0.5, 1.5)

    async def _drain(self) -> None:
        """Give documents in flight the grace period, then release the rest."""
        if not self.active:
            return
        grace = self.settings.shutdown_grace_seconds
        log.info("finishing documents in flight", extra={"count": len(self.active), "grace": grace})
        _, pending = await asyncio.wait(set(self.active), timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            log.info("released unfinished documents as interrupted", extra={"count": len(pending)})


async def run_worker(settings: Settings) -> None:
    """Entry point of `sheaf worker`: run until SIGTERM or SIGINT."""
    logs.stamp(worker_id=settings.worker_id)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with open_deps(settings) as deps, observed(deps):
        await Worker(deps).run(stop)


@contextlib.asynccontextmanager
async def observed(deps: Deps) -> AsyncIterator[None]:
    """This process's metrics identity, event-loop monitor and health/metrics server."""
    metrics.set_role("worker")
    metrics.WORKER_SLOTS.set(deps.settings.concurrency)
    observability.export_queue_mode(observability.queue_mode(deps))
    monitor = LoopMonitor()
    monitor.start()
    try:
        async with serve_health(deps, monitor):
            yield
    finally:
        await monitor.stop()
