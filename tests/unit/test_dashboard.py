"""The operator's dashboard (`sheaf.services.dashboard`) on the in-memory store, with a clock
the test moves, and its route through the HTTP layer."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from api.app import create_app
from sheaf.domain.models import (
    Completion,
    Document,
    ErrorInfo,
    ErrorKind,
    NewDocument,
    ReleaseOutcome,
    Stats,
)
from sheaf.services import dashboard as board
from sheaf.services.deps import Deps
from sheaf.testing import InMemoryDocumentStore
from tests.unit.conftest import make_deps

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def at(self, seconds: float) -> None:
        self.now = T0 + timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> InMemoryDocumentStore:
    return InMemoryDocumentStore(clock=clock)


@pytest.fixture
def board_deps(store: InMemoryDocumentStore) -> Deps:
    return dataclasses.replace(make_deps(), store=store)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def new(store: InMemoryDocumentStore, max_attempts: int = 3) -> Document:
    doc_id = str(uuid.uuid4())
    document, _ = await store.create_document(
        NewDocument(doc_id, "c", f"{doc_id[:4]}.txt", "text/plain", 1, doc_id, doc_id, max_attempts)
    )
    return document


async def complete(
    store: InMemoryDocumentStore, clock: Clock, at: float, extract: float, worker: str = "w1"
) -> None:
    doc = await new(store)
    lease = (await store.acquire_document_lease(doc.id, worker, 600)).lease
    assert lease is not None
    clock.at(at)
    seconds = {"extract": extract, "total": extract + 1}
    await store.complete(lease, Completion(1, 0, seconds, "m", 3))


async def fail(
    store: InMemoryDocumentStore,
    clock: Clock,
    at: float,
    code: str,
    outcome: ReleaseOutcome,
    max_attempts: int = 3,
) -> None:
    doc = await new(store, max_attempts)
    lease = (await store.acquire_document_lease(doc.id, "w1", 600)).lease
    assert lease is not None
    clock.at(at)
    kind = ErrorKind.PERMANENT if outcome is ReleaseOutcome.PERMANENT else ErrorKind.TRANSIENT
    await store.release_document_lease(doc.id, lease.token, outcome, ErrorInfo(code, "x", kind))


async def test_the_window_counts_outcomes_failures_and_stage_percentiles(
    board_deps: Deps, store: InMemoryDocumentStore, clock: Clock
) -> None:
    await complete(store, clock, at=5, extract=9.0)  # outside the 300 s window read at 400
    for second, extract in ((105, 1.0), (115, 3.0), (295, 2.0)):
        await complete(store, clock, at=second, extract=extract)
    await fail(store, clock, 200, "encrypted", ReleaseOutcome.PERMANENT)
    await fail(store, clock, 210, "embedder_busy", ReleaseOutcome.TRANSIENT)  # 1 of 3: retried
    await fail(store, clock, 220, "embedder_busy", ReleaseOutcome.TRANSIENT, max_attempts=1)
    clock.at(400)

    found = await board.dashboard(board_deps, board.QueueHistory(), 300)

    assert (found.window_seconds, found.bucket_seconds, found.complete) == (300, 10, True)
    assert [b.start for b in found.throughput][:2] == [at(s) for s in (100, 110)]
    counts = {b.start: (b.completed, b.failed, b.retried) for b in found.throughput}
    busy = {start: n for start, n in counts.items() if n != (0, 0, 0)}
    assert busy == {
        at(100): (1, 0, 0),
        at(110): (1, 0, 0),
        at(200): (0, 1, 0),  # permanent: failed for good
        at(210): (0, 0, 1),  # transient with attempts left: retried
        at(220): (0, 1, 0),  # transient on the last attempt: failed for good
        at(290): (1, 0, 0),
    }
    assert found.failures == [("embedder_busy", 2), ("encrypted", 1)]
    extract = next(t for t in found.stages if t.stage == "extract")
    assert (extract.count, extract.p50_seconds, extract.p95_seconds) == (3, 2.0, 3.0)
    assert [t.stage for t in found.stages] == ["extract", "total"]


async def test_workers_are_those_that_ended_an_attempt_in_the_window_or_hold_a_document(
    board_deps: Deps, store: InMemoryDocumentStore, clock: Clock
) -> None:
    await complete(store, clock, at=10, extract=1.0, worker="w1")
    held = await new(store)
    clock.at(20)
    lease = (await store.acquire_document_lease(held.id, "w2", 600)).lease
    assert lease is not None
    clock.at(30)
    await store.renew_document_lease(held.id, lease.token, 600, "embed")

    clock.at(40)
    [w1, w2] = (await board.dashboard(board_deps, board.QueueHistory(), 60)).workers
    assert (w1.id, w1.completed, w1.last_seen_at, w1.last_heartbeat_at) == (
        "w1",
        1,
        T0 + timedelta(seconds=10),
        None,
    )
    assert w1.in_flight == ()
    assert (w2.id, w2.last_heartbeat_at) == ("w2", T0 + timedelta(seconds=30))
    assert [(f.document_id, f.stage) for f in w2.in_flight] == [(held.id, "embed")]

    clock.at(100)  # w1 has done nothing for 90 s: out of a 60 s window; w2 still works
    later = await board.dashboard(board_deps, board.QueueHistory(), 60)
    assert [w.id for w in later.workers] == ["w2"]


async def test_the_queue_curve_is_the_samples_of_the_window_and_a_fresh_last_point(
    board_deps: Deps, store: InMemoryDocumentStore, clock: Clock
) -> None:
    history = board.QueueHistory(keep_seconds=100)
    for second, queued in ((0, 9), (50, 5), (90, 2)):
        history.add(
            board.queue_sample(Stats({"queued": queued}, 3.0, 0), T0 + timedelta(seconds=second))
        )
    history.add(board.queue_sample(Stats({"queued": 1}, None, 0), T0 + timedelta(seconds=160)))
    assert [s.queued for s in history.since(T0)] == [2, 1]  # older than 100 s: dropped
    await new(store)
    clock.at(170)
    found = await board.dashboard(board_deps, history, 30)
    assert [(s.at, s.queued) for s in found.queue] == [
        (T0 + timedelta(seconds=160), 1),
        (T0 + timedelta(seconds=170), 1),  # the live point, from stats() now
    ]
    assert found.queue_sampled_since == T0 + timedelta(seconds=160)
    assert found.queue[-1].oldest_ready_age_seconds == 170.0


def test_percentiles_are_nearest_rank_values_and_windows_are_clamped() -> None:
    values = [float(v) for v in range(1, 21)]
    assert (board.percentile(values, 50), board.percentile(values, 95)) == (10.0, 19.0)
    assert board.percentile([4.0], 95) == 4.0
    assert board.clamp_window(1) == board.MIN_WINDOW_SECONDS
    assert board.clamp_window(10**9) == board.MAX_WINDOW_SECONDS


async def test_the_route_answers_json_and_refuses_a_bad_window(
    aiohttp_client: MakeClient, board_deps: Deps, store: InMemoryDocumentStore, clock: Clock
) -> None:
    client = await aiohttp_client(
        create_app(board_deps.settings, deps=board_deps, housekeeping=False)
    )
    await complete(store, clock, at=10, extract=0.5)
    clock.at(20)
    response = await client.get("/v1/admin/dashboard?window=60")
    assert response.status == 200
    body = await response.json()
    assert body["window_seconds"] == 60
    assert sum(b["completed"] for b in body["throughput"]) == 1
    assert body["workers"][0]["id"] == "w1"
    assert body["queue"][-1]["at"] == "2026-12-06T12:00:20Z"
    bad = await client.get("/v1/admin/dashboard?window=soon")
    assert bad.status == 400
    assert (await bad.json())["error"]["code"] == "bad_parameter"
