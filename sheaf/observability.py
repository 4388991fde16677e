"""What `/healthz`, `/readyz` and the database gauges of `/metrics` report, for the API
and the worker alike (their HTTP layers only map these results to responses).

- `LoopMonitor`: a timer that measures how late the event loop wakes it. `/healthz` is
  answered from the same loop, so an answer at all means the loop runs; a lag of 5 s or
  more in the last 10 s means something blocks it (CPU-bound code on the loop), and the
  process reports itself unhealthy.
- `readiness`: the dependencies a process needs to do its job — database, blob store,
  how it learns about work (Service Bus or polling), the embedder's configuration.
- `run_database_gauges`: documents by status, the age of the oldest ready document and
  the leases held, read from the database on a timer — never per scrape, so any number of
  scrapers costs the database nothing. Only API processes run it (workers scale to zero,
  the API does not); with several API replicas each exports the same numbers, and
  dashboards and alerts aggregate them with `max`, which stays exact — no election needed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sheaf import metrics
from sheaf.aio import wait_event
from sheaf.errors import SheafError
from sheaf.services.deps import Deps

log = logging.getLogger(__name__)

LOOP_TICK_SECONDS = 0.5
LOOP_STALL_SECONDS = 5.0  # a loop this late cannot renew leases in time: unhealthy
# Remembered this long: a probe or scrape just after a stall still sees it, yet one stall
# fails at most a probe or two (Kubernetes' liveness default: 3 failures, 10 s apart).
LOOP_WINDOW_SECONDS = 10.0


class LoopMonitor:
    """Measures event-loop lag with a periodic timer; healthy while the lag stays small.

    `lag` is the worst lag of the last `window` seconds, not of the last tick alone: the
    tick after a long block is on time again, and a probe or a scrape arriving then must
    still see that the loop was blocked.
    """

    def __init__(
        self,
        tick: float = LOOP_TICK_SECONDS,
        stall: float = LOOP_STALL_SECONDS,
        window: float = LOOP_WINDOW_SECONDS,
    ) -> None:
        self.tick = tick
        self.stall = stall
        self.window = window
        self._recent: deque[tuple[float, float]] = deque()  # (when, lag)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def lag(self) -> float:
        horizon = time.monotonic() - self.window
        return max((lag for when, lag in self._recent if when >= horizon), default=0.0)

    def problem(self) -> str | None:
        """Why the process is unhealthy, or None while it is healthy."""
        if self._task is None or self._task.done():
            return "the event loop monitor is not running"
        if self.lag >= self.stall:
            return (
                f"the event loop ran a timer {self.lag:.1f} s late (limit {self.stall:g} s) "
                f"in the last {self.window:g} s: something blocks it"
            )
        return None

    def status(self) -> tuple[bool, dict[str, Any]]:
        """What `/healthz` answers: (healthy, JSON body)."""
        problem = self.problem()
        body: dict[str, Any] = {"status": "unhealthy" if problem else "ok"}
        body["event_loop_lag_seconds"] = round(self.lag, 4)
        if problem:
            body["error"] = problem
        return problem is None, body

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            await asyncio.sleep(self.tick)
            now = time.monotonic()
            self._recent.append((now, max(0.0, now - started - self.tick)))
            while self._recent and self._recent[0][0] < now - self.window:
                self._recent.popleft()
            metrics.EVENT_LOOP_LAG.set(self.lag)


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"ready": self.ready, "checks": self.checks}


async def readiness(deps: Deps) -> Readiness:
    """Probe the database and blob store; report the queue mode and the embedder."""
    checks: dict[str, dict[str, Any]] = {}
    for name, probe in (("database", deps.store.ping), ("blob_store", deps.blobs.ping)):
        try:
            await probe()
            checks[name] = {"ok": True}
        except SheafError as exc:
            checks[name] = {"ok": False, "error": exc.message}
    checks["queue"] = _queue_check(deps)
    checks["embedder"] = {
        "ok": True,
        "model": deps.embedder.model,
        "dimensions": deps.embedder.dimensions,
    }
    return Readiness(all(check["ok"] for check in checks.values()), checks)


def queue_mode(deps: Deps) -> str:
    """The mode this configuration runs in when everything is reachable."""
    return "servicebus" if deps.bus.enabled else "polling"


# The mode this process is in right now, as last exported; None until the first export.
_current_mode: str | None = None


def export_queue_mode(mode: str) -> None:
    """Set `sheaf_queue_mode{mode}` to 1 for `mode` and 0 for the others; `/readyz` of this
    process reports the same mode."""
    global _current_mode
    _current_mode = mode
    for name in ("polling", "servicebus", "degraded"):
        metrics.QUEUE_MODE.labels(mode=name).set(1 if name == mode else 0)


def _queue_check(deps: Deps) -> dict[str, Any]:
    """Degraded is still ready: polling keeps documents moving while Service Bus is away."""
    mode = _current_mode or queue_mode(deps)
    check: dict[str, Any] = {"ok": True, "mode": mode}
    if mode == "degraded":
        check["detail"] = "Service Bus unreachable; polling the database until it returns"
    return check


async def refresh_database_gauges(deps: Deps) -> None:
    stats = await deps.store.stats()
    for status, count in stats.counts.items():
        metrics.DOCUMENTS.labels(status=status).set(count)
    metrics.OLDEST_READY_AGE.set(stats.oldest_ready_age_seconds or 0.0)
    metrics.LEASES_HELD.set(stats.leases_held)
    metrics.DATABASE_METRICS_REFRESHED.set(time.time())


async def run_database_gauges(deps: Deps, stop: asyncio.Event) -> None:
    """Refresh the database gauges every `database_metrics_interval_seconds` until stop."""
    interval = deps.settings.database_metrics_interval_seconds
    if interval <= 0:
        return
    while True:
        try:
            await refresh_database_gauges(deps)
        except SheafError as exc:
            log.warning("could not read the database gauges", extra={"error": exc.message})
        except Exception:
            log.exception("reading the database gauges crashed; retrying")
        if await wait_event(stop, interval):
            return
