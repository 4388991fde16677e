"""Background recovery that runs in the API and in every worker process.

- sweep: take back expired leases (crashed workers) and re-send their wake-ups;
- reconcile: re-send wake-ups for queued rows whose message may have been lost;
- clean: remove the blob and chunks of tombstoned documents;
- collect: delete blobs that no row names (an upload that crashed before its commit).

Every job is safe to run from any number of processes at once: the database decides, and
each step is idempotent. A failing job logs and tries again at its next tick; it never
stops the others.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sheaf import metrics
from sheaf.aio import wait_event
from sheaf.errors import SheafError
from sheaf.services.deps import Deps

log = logging.getLogger(__name__)

BATCH = 100


async def sweep(deps: Deps) -> int:
    expired = await deps.store.find_expired_leases(BATCH)
    if expired:
        requeued = [d for d in expired if d.status == "queued"]
        metrics.LEASES_EXPIRED.inc(len(expired))
        metrics.LEASES_RECOVERED.inc(len(requeued))
        log.warning(
            "expired leases taken back",
            extra={"count": len(expired), "requeued": len(requeued)},
        )
        await deps.bus.send(requeued)
    return len(expired)


async def reconcile(deps: Deps) -> int:
    if not deps.bus.enabled:
        return 0  # polling finds queued rows by itself; there is no message to lose
    stale = await deps.store.claim_stale_dispatches(deps.settings.reconcile_after_seconds, BATCH)
    if stale:
        log.info("re-sending wake-ups for stale queued documents", extra={"count": len(stale)})
        await deps.bus.send(stale)
    return len(stale)


async def clean(deps: Deps) -> int:
    pending = await deps.store.pending_cleanups(BATCH)
    for item in pending:
        await deps.blobs.delete(item.blob_key)
        await deps.store.purge_document(item.document_id)
    return len(pending)


async def collect_orphan_blobs(deps: Deps) -> int:
    """Delete blobs older than the grace period that no document row names."""
    cutoff = datetime.now(UTC) - timedelta(seconds=deps.settings.orphan_blob_grace_seconds)
    candidates = [info.key async for info in deps.blobs.list() if info.modified < cutoff]
    deleted = 0
    for start in range(0, len(candidates), BATCH):
        keys = candidates[start : start + BATCH]
        known = await deps.store.known_blob_keys(keys)
        for key in keys:
            if key not in known:
                await deps.blobs.delete(key)
                deleted += 1
    if deleted:
        log.info("orphan blobs deleted", extra={"count": deleted})
    return deleted


MAX_BACKOFF_SECONDS = 60.0


async def run_housekeeping(deps: Deps, stop: asyncio.Event) -> None:
    """Run every job on its own timer until `stop` is set."""
    s = deps.settings
    jobs: list[tuple[str, Callable[[Deps], Awaitable[int]], float]] = [
        ("sweep", sweep, s.sweep_interval_seconds),
        ("reconcile", reconcile, s.reconcile_interval_seconds),
        ("clean", clean, s.cleanup_interval_seconds),
        ("collect", collect_orphan_blobs, max(s.cleanup_interval_seconds, 60.0)),
    ]
    async with asyncio.TaskGroup() as group:
        for name, job, interval in jobs:
            group.create_task(_every(name, job, interval, deps, stop), name=f"housekeeping-{name}")


async def _every(
    name: str,
    job: Callable[[Deps], Awaitable[int]],
    interval: float,
    deps: Deps,
    stop: asyncio.Event,
) -> None:
    """Failures back off (doubling, up to a minute or the interval if longer) and are logged
    once per outage, not once per try; the first success after them is logged too."""
    # Start at a random point of the interval so processes started together spread out.
    delay = random.uniform(0, interval)
    failures = 0
    while not await wait_event(stop, delay):
        try:
            await job(deps)
        except Exception as exc:
            failures += 1
            if failures == 1 and isinstance(exc, SheafError):
                log.warning(
                    "housekeeping job failed; retrying", extra={"job": name, "error": str(exc)}
                )
            elif failures == 1:
                log.exception("housekeeping job crashed; retrying", extra={"job": name})
        else:
            if failures:
                log.info("housekeeping job works again", extra={"job": name, "failures": failures})
            failures = 0
        backoff = min(interval * 2 ** min(failures, 16), max(interval, MAX_BACKOFF_SECONDS))
        delay = backoff * random.uniform(0.8, 1.2)
