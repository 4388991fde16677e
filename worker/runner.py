"""The worker: one loop that fills free slots with documents, and recovers others' leftovers.

Work comes from one of three sources, all through the same spawn path and the same slots:

- Service Bus wake-ups (when `deps.queue` is set): each delivery is acquired, processed and
  settled by `sheaf.services.settlement`;
- polling the database (`claim_queued_documents`) when there is no queue, and also while
  the queue is unreachable, so an outage degrades throughput, never correctness (on
  PostgreSQL and SQLite the store's wake-up, `watch_queue`, cuts the wait short);
- with a queue, the safety net: now and then claim rows whose wake-up is long overdue.

One circuit breaker (`dependencies_up`) guards them all: after a transient failure, or when
an acquire finds the database down, no new work is taken until the blob store and the
database answer again. Named side tasks run together and stop together: the source loop,
housekeeping (sweeper, reconciler, cleaner), the safety net or the queue watch. `stop` ends
taking work at once; documents in flight get `shutdown_grace_seconds` to finish, then are
cancelled, which releases them as `interrupted` (queued again, attempt not consumed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from sheaf import logs, metrics, observability
from sheaf.aio import Backoff, wait_any, wait_event
from sheaf.bootstrap import open_deps
from sheaf.config import Settings
from sheaf.domain.models import AcquireResult, AttemptResult, Dispatch, Lease, Processed
from sheaf.errors import QueueUnavailable, SheafError, TransientError
from sheaf.observability import LoopMonitor
from sheaf.ports import Delivery, Receiver, WorkQueue
from sheaf.services import settlement
from sheaf.services.deps import Deps
from sheaf.services.housekeeping import run_housekeeping
from sheaf.services.processing import process_document
from worker.health import serve_health

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0  # seconds, for every retry of the worker: claims, acquires, probes

# A task name and the coroutine it runs: what a source hands to the spawn path.
Work = tuple[str, Coroutine[Any, Any, object]]
Take = Callable[[int], Awaitable[list[Work]]]


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
            queue = self.deps.queue
            if queue is None:
                group.create_task(self._watch_queue(stop), name="watch-queue")
                group.create_task(self._poll(stop), name="poll")
            else:
                if self.settings.safety_poll_seconds > 0:
                    group.create_task(self._safety_net(stop), name="safety-net")
                group.create_task(self._receive(stop, queue), name="receive")
        await self.drain()
        log.info("worker stopped", extra={"worker_id": self.settings.worker_id})

    # -- the sources ----------------------------------------------------------------------

    async def _poll(self, stop: asyncio.Event, until: float | None = None) -> None:
        await self._feed(stop, self._claims, paced=True, until=until)

    async def _receive(self, stop: asyncio.Event, queue: WorkQueue) -> None:
        """Consume wake-ups; while the queue is unreachable, poll and retry now and then."""
        s = self.settings
        while not stop.is_set():
            try:
                async with queue.deliveries(s.servicebus_prefetch, s.lock_renewal_seconds) as rx:
                    observability.export_queue_mode("servicebus")  # the receive link is open
                    await self._feed(stop, lambda free: self._deliveries(rx, free), paced=False)
                    await self.drain()  # settle while the receiver is still open
                return
            except QueueUnavailable as exc:
                observability.export_queue_mode("degraded")
                log.warning(
                    "Service Bus unreachable; polling the database meanwhile",
                    extra={"error": exc.message, "retry_seconds": s.servicebus_retry_seconds},
                )
                await self._poll(stop, until=time.monotonic() + s.servicebus_retry_seconds)

    async def _safety_net(self, stop: asyncio.Event) -> None:
        """ARCHITECTURE.md §4: with Service Bus on, now and then claim what is overdue.

        A wake-up can be lost (expired, purged, sent to the wrong queue) in ways the
        reconciler's re-send does not repair; rows ready for longer than
        `safety_poll_after_seconds` are claimed here directly. Cheap when nothing is
        overdue: one claim statement that finds no row.
        """
        interval = self.settings.safety_poll_seconds
        while not await wait_event(stop, interval * random.uniform(0.5, 1.5)):
            if self.free() <= 0 or not self.dependencies_up.is_set():
                continue
            try:
                work = await self._claims(self.free(), self.settings.safety_poll_after_seconds)
            except TransientError as exc:
                log.warning("safety-net poll failed", extra={"error": exc.message})
                continue
            if work:
                metrics.SAFETY_NET_CLAIMS.inc(len(work))
                log.warning(
                    "claimed documents whose wake-up message is overdue; check that the API "
                    "and the workers use the same Service Bus queue",
                    extra={"count": len(work), "document_ids": [name for name, _ in work]},
                )
            self._spawn_all(work)

    async def _watch_queue(self, stop: asyncio.Event) -> None:
        """The store's wake-ups only shorten the wait for the next poll: whatever goes wrong
        with them must not stop the worker."""
        try:
            await self.deps.store.watch_queue(self._arrived, stop)
        except Exception:
            log.exception("watching for new documents failed; polling only from now on")

    async def _claims(self, free: int, ready_for: float = 0.0) -> list[Work]:
        leases = await self.deps.store.claim_queued_documents(
            self.settings.worker_id, self.settings.lease_seconds, free, ready_for=ready_for
        )
        return [(lease.document_id, self._process(lease)) for lease in leases]

    async def _deliveries(self, receiver: Receiver, free: int) -> list[Work]:
        deliveries = await receiver.receive(free, self.settings.poll_interval_seconds)
        metrics.SERVICEBUS_RECEIVED.inc(len(deliveries))
        return [(delivery.message_id, self._consume(delivery)) for delivery in deliveries]

    # -- the one loop ---------------------------------------------------------------------

    async def _feed(
        self, stop: asyncio.Event, take: Take, *, paced: bool, until: float | None = None
    ) -> None:
        """Fill free slots from `take` until `stop` (or `until`, a monotonic time).

        `paced`: `take` returns at once when there is nothing (a claim), so wait for the
        poll interval, a freed slot or the store's notification before taking again; a
        receive waits for messages by itself. `QueueUnavailable` ends the loop.
        """
        backoff = Backoff(self.settings.poll_interval_seconds, MAX_BACKOFF)
        while not stop.is_set() and (until is None or time.monotonic() < until):
            if not self.dependencies_up.is_set():
                await wait_any([stop, self.dependencies_up], None)
                continue
            free = self.free()
            if free <= 0:
                self._slot_freed.clear()
                if self.free() <= 0:
                    await wait_any([stop, self._slot_freed], None)
                continue
            self._arrived.clear()  # one claim answers every notification before it
            try:
                work = await take(free)
            except QueueUnavailable:
                raise
            except TransientError as exc:
                log.warning("taking work failed; backing off", extra={"error": exc.message})
                await wait_event(stop, backoff.next())
                continue
            backoff.reset()
            self._spawn_all(work)
            if not paced or len(work) == free:
                continue  # a full batch: there may be more ready right now
            self._slot_freed.clear()
            await wait_any([stop, self._slot_freed, self._arrived], self._jittered_poll())

    def _spawn_all(self, work: list[Work]) -> None:
        for name, coroutine in work:
            task: asyncio.Task[object] = asyncio.create_task(coroutine, name=name)
            self.active.add(task)
            task.add_done_callback(self._finished)

    # -- one document ---------------------------------------------------------------------

    async def _process(self, lease: Lease) -> AttemptResult:
        result = await process_document(self.deps, lease)
        if result.outcome is Processed.TRANSIENT:
            self._check_dependencies()
        return result

    async def _consume(self, delivery: Delivery) -> settlement.Settle:
        return await settlement.consume(self.deps, delivery, self._acquire, self._process)

    async def _acquire(self, wake: Dispatch) -> AcquireResult:
        """Acquire, riding out a database outage with the message kept locked (the queue
        renews it) behind the circuit breaker."""
        backoff = Backoff(self.settings.poll_interval_seconds, MAX_BACKOFF)
        while True:
            try:
                return await self.deps.store.acquire_document_lease(
                    wake.document_id, self.settings.worker_id, self.settings.lease_seconds
                )
            except TransientError as exc:
                log.warning("acquire failed; retrying", extra={"error": exc.message})
                self._check_dependencies()
                await asyncio.sleep(backoff.next())
                await self.dependencies_up.wait()

    # -- the circuit breaker ------------------------------------------------------------------

    def _check_dependencies(self) -> None:
        """Check the blob store and the database: if one is down, take no new work until
        both answer again. Without this, an outage of either would spend the attempts of
        every queued document, one claim after another."""
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._probe_dependencies(), name="breaker")

    async def _probe_dependencies(self) -> None:
        backoff = Backoff(self.settings.poll_interval_seconds, MAX_BACKOFF)
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
            await asyncio.sleep(backoff.next())
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

    # -- the slots ------------------------------------------------------------------------

    def free(self) -> int:
        return self.settings.concurrency - len(self.active)

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
