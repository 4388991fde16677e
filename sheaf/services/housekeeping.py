"""Background recovery that runs in the API and in every worker process.

- sweep: take back expired leases (crashed workers) and re-send their wake-ups;
- reconcile: re-send wake-ups for queued rows whose message was lost (see `reconcile`);
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
from sheaf.domain.models import Dispatch, Status
from sheaf.errors import SheafError, TransientError
from sheaf.services.deps import Deps

log = logging.getLogger(__name__)

BATCH = 100
PEEK_LIMIT = 5000  # messages the reconciler looks at to tell a lost wake-up from a waiting one


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
    """Re-send the wake-ups of ready queued rows that waited `reconcile_after_seconds` since
    their last one and have none left in the queue; return how many were re-sent.

    Waiting long is not the same as lost: while a backlog drains, every row's wake-up is
    still in the queue, and re-sending them all each interval filled the queue (and KEDA's
    scaling signal) with copies. So the rows claimed as stale (which bumps their
    `dispatch_seq` and `last_dispatched_at`, so no other reconciler takes them for another
    threshold) are checked against the queue itself, and only those with no wake-up waiting
    get a new one. A row whose wake-up is waiting is looked at again a threshold later, so a
    wake-up lost at any time is re-sent within about two thresholds. An older wake-up still
    wakes the row (a lease is acquired by document id), so the bump alone loses nothing.

    When the queue cannot be looked into (no such port, or it is unreachable), every stale
    row is re-sent, as before. When it holds more than `PEEK_LIMIT` messages, none is this
    pass: with a backlog that long a copy would only wait behind it, and the safety-net poll
    of the workers claims rows that stay overdue for longer.
    """
    if not deps.bus.enabled:
        return 0  # polling finds queued rows by itself; there is no message to lose
    stale = await deps.store.claim_stale_dispatches(deps.settings.reconcile_after_seconds, BATCH)
    if not stale:
        return 0
    lost = await _without_wake_up(deps, stale)
    if lost:
        log.info("re-sending lost wake-ups of stale queued documents", extra={"count": len(lost)})
        await deps.bus.send(lost)
    return len(lost)


async def _without_wake_up(deps: Deps, stale: list[Dispatch]) -> list[Dispatch]:
    if deps.queue is None:
        return stale  # a bus that can only send: re-send them all
    try:
        waiting = await deps.queue.waiting(PEEK_LIMIT)
    except TransientError as exc:
        log.warning(
            "cannot look into the queue; re-sending every stale wake-up",
            extra={"error": exc.message, "count": len(stale)},
        )
        return stale
    if waiting is None:
        log.info(
            "the queue holds a long backlog; stale wake-ups are not re-sent this pass",
            extra={"peek_limit": PEEK_LIMIT, "stale": len(stale)},
        )
        return []
    # A wake-up consumed between the claim and the look is gone from the queue because its
    # document was taken meanwhile: read the rows not seen again, keep those still queued.
    unseen = [dispatch for dispatch in stale if dispatch.document_id not in waiting]
    return [dispatch for dispatch in unseen if await _still_queued(deps, dispatch)]


async def _still_queued(deps: Deps, dispatch: Dispatch) -> bool:
    row = await deps.store.get_document(dispatch.document_id, history=False)
    return row is not None and row.status is Status.QUEUED


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
