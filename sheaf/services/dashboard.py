"""The operator's dashboard: what the workers did lately, read from the database.

Everything except the queue's depth over time comes from the attempt history
(`DocumentRepository.activity`), so the dashboard works without Prometheus and shows the
same on every API replica. The database keeps no history of the queue's depth, so each API
process samples `stats()` into memory (`QueueHistory`, filled by `sample_queue`): one
cheap query every few seconds gives the exact depth and oldest-ready age, delayed retries
included, which a reconstruction from documents' timestamps could not (a row's earlier
trips through `queued` leave no trace). The price: the curve starts when the process
started, and each replica holds its own copy of the same numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sheaf.domain.models import Activity, AttemptOutcome, EndedAttempt, InFlight, Stats, Status
from sheaf.errors import SheafError
from sheaf.services.deps import Deps

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 5.0  # how often each API process samples the queue
HISTORY_SECONDS = 24 * 3600.0  # the longest window; older samples are dropped
MIN_WINDOW_SECONDS = 10.0
MAX_WINDOW_SECONDS = HISTORY_SECONDS
BUCKETS = 30  # points of the throughput chart, whatever the window
ATTEMPT_LIMIT = 20_000  # ended attempts read per request; beyond it `complete` is false
STAGES = ("download", "extract", "chunk", "embed", "index", "total")
_FAILED = frozenset({AttemptOutcome.PERMANENT, AttemptOutcome.TRANSIENT, AttemptOutcome.EXPIRED})


@dataclass(frozen=True, slots=True)
class QueueSample:
    at: datetime  # the database clock
    queued: int
    processing: int
    oldest_ready_age_seconds: float | None


class QueueHistory:
    """The queue samples of the last day, oldest first, in this process's memory."""

    def __init__(self, keep_seconds: float = HISTORY_SECONDS) -> None:
        self._keep = timedelta(seconds=keep_seconds)
        self._samples: deque[QueueSample] = deque()

    def add(self, sample: QueueSample) -> None:
        self._samples.append(sample)
        while self._samples and self._samples[0].at < sample.at - self._keep:
            self._samples.popleft()

    def since(self, moment: datetime) -> list[QueueSample]:
        return [s for s in self._samples if s.at >= moment]


def queue_sample(stats: Stats, at: datetime) -> QueueSample:
    return QueueSample(
        at=at,
        queued=stats.counts.get(Status.QUEUED, 0),
        processing=stats.counts.get(Status.PROCESSING, 0),
        oldest_ready_age_seconds=stats.oldest_ready_age_seconds,
    )


async def sample_queue(
    deps: Deps, history: QueueHistory, stop: asyncio.Event, every: float = SAMPLE_SECONDS
) -> None:
    """Until `stop`, add a sample every `every` seconds; an unreachable database only
    leaves a gap in the curve."""
    while not stop.is_set():
        try:
            # An empty read of the activity, for its database clock: samples and the
            # dashboard's own reads must share one clock.
            activity = await deps.store.activity(0.0, 0)
            history.add(queue_sample(await deps.store.stats(), activity.now))
        except SheafError as exc:
            log.warning("queue sample skipped: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


@dataclass(frozen=True, slots=True)
class Bucket:
    start: datetime
    completed: int = 0
    failed: int = 0  # the document failed for good in this attempt
    retried: int = 0  # a transient failure with attempts left: the document was re-queued


@dataclass(frozen=True, slots=True)
class StageTiming:
    stage: str
    count: int
    p50_seconds: float
    p95_seconds: float


@dataclass(frozen=True, slots=True)
class Worker:
    id: str
    last_seen_at: datetime  # its latest attempt start, end or heartbeat
    last_heartbeat_at: datetime | None  # None when it holds no document now
    completed: int
    failed: int
    in_flight: tuple[InFlight, ...] = ()


@dataclass(frozen=True, slots=True)
class Dashboard:
    now: datetime
    window_seconds: float
    bucket_seconds: float
    throughput: list[Bucket]
    failures: list[tuple[str, int]]  # (error code, failed attempts), most first
    stages: list[StageTiming]
    queue: list[QueueSample]
    queue_sampled_since: datetime | None
    workers: list[Worker]
    complete: bool


def clamp_window(seconds: float) -> float:
    return min(max(seconds, MIN_WINDOW_SECONDS), MAX_WINDOW_SECONDS)


async def dashboard(deps: Deps, history: QueueHistory, window_seconds: float) -> Dashboard:
    """The dashboard over the last `window_seconds` (clamped to 10 s … 24 h)."""
    window = clamp_window(window_seconds)
    activity = await deps.store.activity(window, ATTEMPT_LIMIT)
    now = activity.now
    queue = [*history.since(now - timedelta(seconds=window))]
    queue.append(queue_sample(await deps.store.stats(), now))  # always a fresh last point
    bucket = window / BUCKETS
    return Dashboard(
        now=now,
        window_seconds=window,
        bucket_seconds=bucket,
        throughput=throughput(activity.ended, now, window, bucket),
        failures=failures(activity.ended),
        stages=stage_timings(activity.ended),
        queue=queue,
        queue_sampled_since=queue[0].at if len(queue) > 1 else None,
        workers=workers(activity),
        complete=activity.complete,
    )


def failed_for_good(attempt: EndedAttempt) -> bool:
    if attempt.outcome is AttemptOutcome.PERMANENT:
        return True
    return attempt.outcome in _FAILED and attempt.number >= attempt.max_attempts


def throughput(
    ended: Iterable[EndedAttempt], now: datetime, window: float, bucket: float
) -> list[Bucket]:
    """Attempts per bucket by what they did to their document, oldest bucket first."""
    start = now - timedelta(seconds=window)
    counts = [Counter[str]() for _ in range(BUCKETS)]
    for attempt in ended:
        index = int((attempt.ended_at - start).total_seconds() // bucket)
        counts[min(max(index, 0), BUCKETS - 1)][_effect(attempt)] += 1
    return [
        Bucket(start + timedelta(seconds=i * bucket), c["completed"], c["failed"], c["retried"])
        for i, c in enumerate(counts)
    ]


def _effect(attempt: EndedAttempt) -> str:
    if attempt.outcome is AttemptOutcome.COMPLETED:
        return "completed"
    if failed_for_good(attempt):
        return "failed"
    return "retried" if attempt.outcome in _FAILED else "other"


def failures(ended: Iterable[EndedAttempt]) -> list[tuple[str, int]]:
    """Failed attempts (for good or retried) by error code; an expired lease has none."""
    codes = Counter(
        attempt.error_code or attempt.outcome.value
        for attempt in ended
        if attempt.outcome in _FAILED
    )
    return sorted(codes.items(), key=lambda item: (-item[1], item[0]))


def stage_timings(ended: Iterable[EndedAttempt]) -> list[StageTiming]:
    """p50 and p95 of each stage over the completed attempts (only they record timings)."""
    seconds: dict[str, list[float]] = {}
    for attempt in ended:
        if attempt.outcome is AttemptOutcome.COMPLETED:
            for stage, value in attempt.stage_seconds.items():
                seconds.setdefault(stage, []).append(value)
    order = [*STAGES, *sorted(set(seconds) - set(STAGES))]
    return [
        StageTiming(stage, len(values), percentile(values, 50), percentile(values, 95))
        for stage in order
        if (values := sorted(seconds.get(stage, [])))
    ]


def percentile(ordered: list[float], p: float) -> float:
    """Nearest rank: a value that was measured, never an interpolation between two."""
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def workers(activity: Activity) -> list[Worker]:
    """Workers that ended an attempt in the window or hold a document now, by id.

    A worker that has not touched a document in the window is not listed: Sheaf records
    workers only through their attempts.
    """
    seen: dict[str, datetime] = {}
    done: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    holding: dict[str, list[InFlight]] = {}
    for attempt in activity.ended:
        latest = seen.get(attempt.worker_id, attempt.ended_at)
        seen[attempt.worker_id] = max(latest, attempt.ended_at)
        done[attempt.worker_id] += attempt.outcome is AttemptOutcome.COMPLETED
        failed[attempt.worker_id] += attempt.outcome in _FAILED
    for flight in activity.in_flight:
        holding.setdefault(flight.worker_id, []).append(flight)
        latest = seen.get(flight.worker_id, flight.heartbeat_at)
        seen[flight.worker_id] = max(latest, flight.heartbeat_at)
    return [
        Worker(
            id=worker,
            last_seen_at=seen[worker],
            last_heartbeat_at=max((f.heartbeat_at for f in holding.get(worker, [])), default=None),
            completed=done[worker],
            failed=failed[worker],
            in_flight=tuple(holding.get(worker, [])),
        )
        for worker in sorted(seen)
    ]
