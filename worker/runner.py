"""The worker: take documents into free slots, process them, recover others' leftovers.

Documents come from Service Bus wake-ups (`worker.consumer`) when a bus is configured, or
from polling the database otherwise (on PostgreSQL and SQLite the store's wake-up,
`watch_queue`, cuts the wait short) — and also while Service Bus is unreachable, so an
outage degrades throughput, never correctness. Side tasks run together and stop
together: the receive or claim loop, housekeeping (sweeper, reconciler, cleaner) and,
when configured, a health/metrics server. `stop` ends taking work at once; documents in
flight get `shutdown_grace_seconds` to finish, then are cancelled, which releases them as
`interrupted` (queued again, attempt not consumed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from azure.servicebus.exceptions import ServiceBusError

from sheaf import logs, metrics, observability
from sheaf.adapters.bus_servicebus import ServiceBusMessageBus
from sheaf.aio import wait_any, wait_event
from sheaf.bootstrap import open_deps
from sheaf.config import Settings
from sheaf.domain.models import Lease
from sheaf.errors import SheafError, TransientError
from sheaf.observability import LoopMonitor
from sheaf.services.deps import Deps
from sheaf.services.housekeeping import run_housekeeping
from sheaf.services.processing import process_document
from worker.consumer import Consumer
from worker.health import serve_health

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0


class Worker:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.settings = deps.settings
        self.active: set[asyncio.Task[object]] = set()
        self._slot_freed = asyncio.Event()
        self._arrived = asyncio.Event()  # set by the store's queue notifications, if any
        # The circuit breaker: cleared while the blob store or the database does not answer,
        # so no new document is taken (and no attempt spent) until they do.
        self.dependencies_up = asyncio.Event()
        self.dependencies_up.set()
        self._probe: asyncio.Task[None] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        log.info(
            "worker started",
            extra={"worker_id": self.settings.worker_id, "concurrency": self.settings.concurrency},
        )
        async with asyncio.TaskGroup() as group:
            group.create_task(run_housekeeping(self.deps, stop), name="housekeeping")
            if isinstance(self.deps.bus, ServiceBusMessageBus):
                if self.settings.safety_poll_seconds > 0:
                    group.create_task(self._safety_net(stop), name="safety-net")
                await self._messages(stop, self.deps.bus)
            else:
                group.create_task(self._watch_queue(stop), name="watch-queue")
                await self._claim_loop(stop)
            await self.drain()
        log.info("worker stopped", extra={"worker_id": self.settings.worker_id})

    async def _messages(self, stop: asyncio.Event, bus: ServiceBusMessageBus) -> None:
        """Consume wake-ups; while Service Bus is unreachable, poll and retry now and then."""
        consumer = Consumer(self.deps, bus, self)
        while not stop.is_set():
            try:
                await consumer.run(stop)
                return
            except ServiceBusError as exc:
                observability.export_queue_mode("degraded")
                retry = self.settings.servicebus_retry_seconds
                log.warning(
                    "Service Bus unreachable; polling the database meanwhile",
                    extra={"error": str(exc), "retry_seconds": retry},
                )
                await self._claim_loop(stop, until=time.monotonic() + retry)

    async def _safety_net(self, stop: asyncio.Event) -> None:
        """ARCHITECTURE.md §4: with Service Bus on, now and then claim what is overdue.

        A wake-up can be lost (expired, purged, sent to the wrong queue) in ways the
        reconciler's re-send does not repair; rows ready for longer than
        `safety_poll_after_seconds` are claimed here directly. Cheap when nothing is
        overdue: one claim statement that finds no row.
        """
        interval = self.settings.safety_poll_seconds
        while not await wait_event(stop, interval * random.uniform(0.5, 1.5)):
            free = self.free()
            if free <= 0:
                continue
            try:
                leases = await self.deps.store.claim_queued_documents(
                    self.settings.worker_id,
                    self.settings.lease_seconds,
                    free,
                    ready_for=self.settings.safety_poll_after_seconds,
                )
            except TransientError as exc:
                log.warning("safety-net poll failed", extra={"error": exc.message})
                continue
            if leases:
                metrics.SAFETY_NET_CLAIMS.inc(len(leases))
                log.warning(
                    "claimed documents whose wake-up message is overdue; check that the API "
                    "and the workers use the same Service Bus queue",
                    extra={
                        "count": len(leases),
                        "document_ids": [lease.document_id for lease in leases],
                    },
                )
            for lease in leases:
                self._start(lease)

    async def _watch_queue(self, stop: asyncio.Event) -> None:
        """The store's wake-ups only shorten the wait for the next poll: whatever goes wrong
        with them must not stop the worker."""
        try:
            await self.deps.store.watch_queue(self._arrived, stop)
        except Exception:
            log.exception("watching for new documents failed; polling only from now on")

    async def _claim_loop(self, stop: asyncio.Event, until: float | None = None) -> None:
        backoff = self.settings.poll_interval_seconds
        while not stop.is_set() and (until is None or time.monotonic() < until):
            if not self.dependencies_up.is_set():
                await wait_any([stop, self.dependencies_up], None)
                continue
            free = self.settings.concurrency - len(self.active)
            self._arrived.clear()  # one claim answers every notification before it
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
            self._slot_freed.clear()
            if free <= len(leases):  # every slot busy: only a freed slot can start more
                await wait_any([stop, self._slot_freed], None)
            else:  # idle slots: poll, or claim at once when the store says work arrived
                await wait_any([stop, self._slot_freed, self._arrived], self._jittered_poll())

    async def _claim(self, free: int) -> list[Lease]:
        return await self.deps.store.claim_queued_documents(
            self.settings.worker_id, self.settings.lease_seconds, free
        )

    def _start(self, lease: Lease) -> None:
        self.spawn(self._process(lease), lease.document_id)

    async def _process(self, lease: Lease) -> str:
        outcome = await process_document(self.deps, lease)
        self.after_attempt(outcome)
        return outcome

    # -- the circuit breaker ------------------------------------------------------------------

    def after_attempt(self, outcome: str) -> None:
        """After a transient failure, check the blob store and the database: if one is down,
        take no new work until both answer again. Without this, an outage of either would
        spend the attempts of every queued document, one claim after another."""
        if outcome.startswith("transient") and (self._probe is None or self._probe.done()):
            self._probe = asyncio.create_task(self._probe_dependencies(), name="breaker")

    async def wait_for_dependencies(self, stop: asyncio.Event) -> None:
        if not self.dependencies_up.is_set():
            await wait_any([stop, self.dependencies_up], None)

    async def _probe_dependencies(self) -> None:
        delay = self.settings.poll_interval_seconds
        down: list[str] = []
        while problems := await self._unreachable():
            if not down:
                log.warning(
                    "dependency unreachable; taking no new documents until it answers",
                    extra={"unreachable": problems},
                )
                metrics.BREAKER_OPEN.set(1)
            down = problems
            self.dependencies_up.clear()
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, MAX_BACKOFF)
        if down:
            log.info("dependencies answer again; taking documents", extra={"were": down})
        metrics.BREAKER_OPEN.set(0)
        self.dependencies_up.set()

    async def _unreachable(self) -> list[str]:
        problems = []
        probes = (("blob_store", self.deps.blobs.ping), ("database", self.deps.store.ping))
        for name, ping in probes:
            try:
                await ping()
            except SheafError as exc:
                problems.append(f"{name}: {exc.message}")
        return problems

    # -- the slots, shared with the consumer ----------------------------------------------

    def free(self) -> int:
        return self.settings.concurrency - len(self.active)

    def spawn(self, work: Coroutine[Any, Any, object], name: str) -> None:
        task: asyncio.Task[object] = asyncio.create_task(work, name=name)
        self.active.add(task)
        task.add_done_callback(self._finished)

    async def wait_for_slot(self, stop: asyncio.Event) -> None:
        self._slot_freed.clear()
        if self.free() <= 0:
            await wait_any([stop, self._slot_freed], None)

    def _finished(self, task: asyncio.Task[object]) -> None:
        self.active.discard(task)
        self._slot_freed.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("document task crashed", exc_info=task.exception())

    def _jittered_poll(self) -> float:
        return self.settings.poll_interval_seconds * random.uniform(0.5, 1.5)

    async def drain(self) -> None:
        """Give documents in flight the grace period, then release the rest."""
        if self._probe is not None:
            self._probe.cancel()
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
    async with open_deps(settings, warm_extractor=True) as deps, observed(deps):
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
