"""Metrics, health endpoints, structured logs and dashboards, on the in-memory fakes.

Counters are process-global, so tests assert on how much a sample moved, never its value.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import io
import json
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

from api.app import create_app
from sheaf import logs, metrics, observability
from sheaf.config import Settings
from sheaf.domain.models import Document, Lease
from sheaf.errors import ConfigError, StoreUnavailable
from sheaf.observability import LoopMonitor
from sheaf.services import housekeeping
from sheaf.services.deps import Deps
from sheaf.services.ingest import accept_upload
from sheaf.services.processing import process_document
from sheaf.supervisor import check_worker_ports, worker_env, worker_metrics_ports
from sheaf.testing import InMemoryBlobStore
from tests.samples import encrypt_pdf, make_pdf
from tests.unit.conftest import make_deps
from worker.health import create_health_app
from worker.runner import observed

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
TEXT = " ".join(f"word{i % 50} topic{i % 7}" for i in range(200)).encode()

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


# -- helpers shared with tests/e2e/test_prometheus.py ----------------------------------------------

_GROUPING = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)"
_KEYWORDS = {"and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression (or a Grafana `label_values(...)`) reads."""
    expr = re.sub(r"\blabel_values\((.*),\s*\w+\)", r"\1", expr)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings: regexes, label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery durations
    expr = re.sub(_GROUPING, "", expr)  # label lists of aggregations and matching
    expr = re.sub(r"\$\w+", "", expr)  # Grafana variables
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        followed_by_call = expr[match.end() :].lstrip().startswith("(")
        if not followed_by_call and match.group() not in _KEYWORDS:
            names.add(match.group())
    return names


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, query) for every panel target and templating query of a dashboard."""
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            yield f"{dashboard['uid']} panel {panel['id']} {panel['title']!r}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            yield f"{dashboard['uid']} ${variable['name']}", query.get("query", query)


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


def load_dashboards() -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in DASHBOARDS]


def render_module() -> ModuleType:
    """deploy/k8s/monitoring/render.py, which is a script rather than a package module."""
    path = ROOT / "deploy" / "k8s" / "monitoring" / "render.py"
    spec = importlib.util.spec_from_file_location("sheaf_render_monitoring", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def defined_series() -> set[str]:
    """Every series name this process's registry can export, samples or not yet."""
    suffixes = {"counter": ["_total"], "gauge": [""], "info": ["_info"], "unknown": [""]}
    suffixes["histogram"] = ["_bucket", "_count", "_sum"]
    names: set[str] = set()
    for family in REGISTRY.collect():
        names |= {sample.name for sample in family.samples}
        names |= {family.name + suffix for suffix in suffixes.get(family.type, [""])}
    return names


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- the PromQL helper itself ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'histogram_quantile(0.9, sum by (le, s) (rate(a_bucket{x=~"$i"}[$__rate_interval])))',
            {"a_bucket"},
        ),
        ("sum(rate(a_total[5m])) / sum(rate(b_total[5m])) > 0.1", {"a_total", "b_total"}),
        ("max(c) and on() (sum(rate(d[10m])) or on() vector(0)) == 0", {"c", "d"}),
        ('(changes(p[30m]) and on(job, instance) i{role="w"}) >= 3', {"p", "i"}),
        ('label_values(sheaf_build_info{role="worker"}, instance)', {"sheaf_build_info"}),
        ("time() - max(t) > 300 or absent(t)", {"t"}),
    ],
)
def test_promql_metric_names(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


# -- dashboards and their Kubernetes form ----------------------------------------------------------


def test_dashboards_are_valid_json_with_unique_ids() -> None:
    dashboards = load_dashboards()
    assert {d["uid"] for d in dashboards} == {"sheaf-overview", "sheaf-worker"}
    for dashboard in dashboards:
        ids = [panel["id"] for panel in _panels(dashboard)]
        assert len(ids) == len(set(ids)), f"{dashboard['uid']}: duplicate panel ids"
        for panel in _panels(dashboard):
            refs = [target["refId"] for target in panel.get("targets", [])]
            assert len(refs) == len(set(refs)), f"{dashboard['uid']} panel {panel['id']}"
            assert panel["type"] == "row" or refs, f"panel {panel['id']} has no query"


def test_every_dashboard_query_reads_metrics_sheaf_defines() -> None:
    """A renamed metric breaks this test, not a dashboard in production. (The e2e test
    checks the same against what a real Prometheus scraped.)"""
    known = defined_series()
    for dashboard in load_dashboards():
        for where, query in dashboard_queries(dashboard):
            names = promql_metric_names(query)
            assert names, f"{where}: no metric in {query!r}"
            assert names <= known, f"{where}: unknown {names - known}"


def test_kubernetes_manifests_are_rendered_from_the_sources() -> None:
    render = render_module()
    for path, text in render.rendered().items():
        assert path.read_text() == text, (
            f"{path.name} is stale: run python deploy/k8s/monitoring/render.py"
        )
    configmap = (ROOT / "deploy" / "k8s" / "monitoring" / "grafana-dashboards.yaml").read_text()
    for path in DASHBOARDS:
        assert f"  {path.name}: |\n" in configmap


# -- processing: outcomes, error codes, stages, leases, fencing ------------------------------------


async def put(deps: Deps, data: bytes = TEXT) -> Document:
    async def body() -> AsyncIterator[bytes]:
        yield data

    return (await accept_upload(deps, "c", "f.pdf", body())).document


async def claim(deps: Deps, worker: str = "w1") -> Lease:
    [lease] = await deps.store.claim_queued_documents(worker, deps.settings.lease_seconds, 1)
    return lease


def all_label_values() -> set[str]:
    return {v for family in REGISTRY.collect() for s in family.samples for v in s.labels.values()}


async def test_attempts_are_counted_by_outcome_and_error_code(deps: Deps) -> None:
    completed = value("sheaf_documents_processed_total", outcome="completed", error_code="")
    encrypted = value(
        "sheaf_documents_processed_total", outcome="permanent", error_code="encrypted"
    )
    totals = value("sheaf_stage_duration_seconds_count", stage="total")
    acquired = value("sheaf_leases_acquired_total")
    ok = await put(deps)
    await process_document(deps, await claim(deps))
    locked = await put(deps, encrypt_pdf(make_pdf(["secret"]), "pw"))
    assert (await process_document(deps, await claim(deps))).label == "permanent:encrypted"

    assert value("sheaf_documents_processed_total", outcome="completed", error_code="") == (
        completed + 1
    )
    assert value(
        "sheaf_documents_processed_total", outcome="permanent", error_code="encrypted"
    ) == (encrypted + 1)
    assert value("sheaf_stage_duration_seconds_count", stage="total") == totals + 2
    assert value("sheaf_leases_acquired_total") == acquired + 2
    assert value("sheaf_documents_in_flight") == 0
    # Bounded labels: no document id, collection or file name ever becomes a label value.
    assert not {ok.id, locked.id, "c", "f.pdf"} & all_label_values()


async def test_a_lost_lease_is_counted_as_a_fencing_rejection(deps: Deps) -> None:
    from tests.unit.test_processing import slowed

    created = await put(deps)
    fenced = sum(value("sheaf_lease_fencing_rejections_total", operation=op) for op in OPS)
    lost = value("sheaf_documents_processed_total", outcome="lease_lost", error_code="")
    lease = await claim(deps)
    await asyncio.sleep(deps.settings.lease_seconds + 0.1)  # stalled: the lease expires
    assert (await deps.store.acquire_document_lease(created.id, "b", 30)).lease is not None
    assert (await process_document(slowed(deps, 0.05), lease)).label == "lease_lost"
    assert sum(value("sheaf_lease_fencing_rejections_total", operation=op) for op in OPS) > fenced
    assert value("sheaf_documents_processed_total", outcome="lease_lost", error_code="") == (
        lost + 1
    )


OPS = metrics.FENCED_OPERATIONS


async def test_heartbeats_are_counted(deps: Deps) -> None:
    from tests.unit.test_processing import slowed

    await put(deps)
    renewed = value("sheaf_leases_renewed_total")
    slow = slowed(deps, delay=0.15)  # several heartbeats (0.1 s) while it embeds
    assert (await process_document(slow, await claim(slow))).label == "completed"
    assert value("sheaf_leases_renewed_total") > renewed


async def test_an_interrupted_attempt_is_counted(deps: Deps) -> None:
    from tests.unit.test_processing import slowed

    await put(deps)
    interrupted = value("sheaf_documents_processed_total", outcome="interrupted", error_code="")
    slow = slowed(deps, delay=1.0)
    task = asyncio.create_task(process_document(slow, await claim(slow)))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert value("sheaf_documents_processed_total", outcome="interrupted", error_code="") == (
        interrupted + 1
    )
    assert value("sheaf_documents_in_flight") == 0


async def test_an_expired_lease_without_attempts_left_is_not_recovered() -> None:
    deps = make_deps(max_attempts=1)
    await put(deps)
    await deps.store.claim_queued_documents("gone", 0.05, 1)
    expired, recovered = value("sheaf_leases_expired_total"), value("sheaf_leases_recovered_total")
    await asyncio.sleep(0.1)
    assert await housekeeping.sweep(deps) == 1
    assert value("sheaf_leases_expired_total") == expired + 1
    assert value("sheaf_leases_recovered_total") == recovered  # it failed instead


async def test_a_requeued_expired_lease_counts_as_recovered(deps: Deps) -> None:
    await put(deps)
    await deps.store.claim_queued_documents("gone", 0.05, 1)
    expired, recovered = value("sheaf_leases_expired_total"), value("sheaf_leases_recovered_total")
    await asyncio.sleep(0.1)
    assert await housekeeping.sweep(deps) == 1
    assert value("sheaf_leases_expired_total") == expired + 1
    assert value("sheaf_leases_recovered_total") == recovered + 1


# -- the database gauges ---------------------------------------------------------------------------


async def test_database_gauges_are_read_from_the_store(deps: Deps) -> None:
    await put(deps, b"one")
    await put(deps, b"two")
    await claim(deps)
    before = time.time()
    await observability.refresh_database_gauges(deps)
    assert value("sheaf_documents", status="queued") == 1
    assert value("sheaf_documents", status="processing") == 1
    assert value("sheaf_documents", status="failed") == 0
    assert value("sheaf_leases_held") == 1
    assert value("sheaf_oldest_ready_document_age_seconds") >= 0
    assert value("sheaf_database_metrics_refresh_timestamp_seconds") >= before


async def test_database_gauges_refresh_on_a_timer_until_stopped() -> None:
    deps = make_deps(database_metrics_interval_seconds=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(observability.run_database_gauges(deps, stop))
    await asyncio.sleep(0.02)
    first = value("sheaf_database_metrics_refresh_timestamp_seconds")
    await asyncio.sleep(0.15)
    assert value("sheaf_database_metrics_refresh_timestamp_seconds") > first
    stop.set()
    await asyncio.wait_for(task, 1)


async def test_database_gauges_can_be_turned_off() -> None:
    deps = make_deps(database_metrics_interval_seconds=0)
    await asyncio.wait_for(observability.run_database_gauges(deps, asyncio.Event()), 1)


# -- health endpoints ------------------------------------------------------------------------------


class UnreachableBlobs(InMemoryBlobStore):
    async def ping(self) -> None:
        raise StoreUnavailable("blob store unreachable: connection refused")


async def test_worker_health_endpoints(aiohttp_client: MakeClient, deps: Deps) -> None:
    monitor = LoopMonitor(tick=0.01)
    monitor.start()
    try:
        client = await aiohttp_client(create_health_app(deps, monitor))
        await asyncio.sleep(0.05)
        health = await client.get("/healthz")
        assert health.status == 200
        assert (await health.json())["status"] == "ok"
        ready = await client.get("/readyz")
        assert ready.status == 200
        checks = (await ready.json())["checks"]
        assert checks["queue"]["mode"] == "servicebus"  # the recording bus says enabled
        assert checks["embedder"]["model"] == deps.embedder.model
        scrape = await client.get("/metrics")
        assert scrape.headers["Content-Type"].startswith("text/plain; version=")
        assert "sheaf_stage_duration_seconds_bucket" in await scrape.text()
    finally:
        await monitor.stop()


async def test_readyz_names_the_failed_check(aiohttp_client: MakeClient) -> None:
    deps = dataclasses.replace(make_deps(), blobs=UnreachableBlobs())
    monitor = LoopMonitor()
    client = await aiohttp_client(create_health_app(deps, monitor))
    ready = await client.get("/readyz")
    assert ready.status == 503
    body = await ready.json()
    assert body["ready"] is False
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["blob_store"] == {
        "ok": False,
        "error": "blob store unreachable: connection refused",
    }
    # The monitor was never started: the process cannot vouch for its loop.
    assert (await client.get("/healthz")).status == 503


async def test_a_blocked_event_loop_makes_healthz_fail() -> None:
    monitor = LoopMonitor(tick=0.02, stall=0.2, window=0.5)
    monitor.start()
    await asyncio.sleep(0.05)
    assert monitor.status()[0]
    time.sleep(0.3)  # CPU-bound code on the loop
    await asyncio.sleep(0.1)  # the monitor is on time again, and still remembers
    healthy, body = monitor.status()
    assert not healthy
    assert "something blocks it" in body["error"]
    assert value("sheaf_event_loop_lag_seconds") >= 0.2
    await asyncio.sleep(0.6)
    assert monitor.status()[0], "healthy again once the window has passed"
    await monitor.stop()


async def test_api_health_and_metrics(aiohttp_client: MakeClient, deps: Deps) -> None:
    client = await aiohttp_client(create_app(deps.settings, deps=deps, housekeeping=False))
    health = await client.get("/healthz")
    assert health.status == 200
    assert "event_loop_lag_seconds" in await health.json()
    assert (await client.get("/readyz")).status == 200
    text = await (await client.get("/metrics")).text()
    assert 'sheaf_build_info{python="' in text
    assert 'role="api"' in text
    assert 'sheaf_queue_mode{mode="servicebus"} 1.0' in text


async def test_uploads_are_counted_by_result_and_error_code(
    aiohttp_client: MakeClient, deps: Deps
) -> None:
    from tests.unit.test_api import form

    client = await aiohttp_client(create_app(deps.settings, deps=deps, housekeeping=False))
    created = value("sheaf_uploads_total", result="created", error_code="")
    duplicate = value("sheaf_uploads_total", result="duplicate", error_code="")
    unsupported = value("sheaf_uploads_total", result="rejected", error_code="unsupported_type")
    not_multipart = value("sheaf_uploads_total", result="rejected", error_code="not_multipart")
    await client.post("/v1/collections/c/documents", data=form(("a.txt", b"hello")))
    await client.post("/v1/collections/c/documents", data=form(("b.txt", b"hello")))
    gif = b"GIF89a" + b"\0" * 64
    assert (await client.post("/v1/collections/c/documents", data=form(("x", gif)))).status == 415
    assert (await client.post("/v1/collections/c/documents", data=b"x")).status == 400
    assert value("sheaf_uploads_total", result="created", error_code="") == created + 1
    assert value("sheaf_uploads_total", result="duplicate", error_code="") == duplicate + 1
    assert value("sheaf_uploads_total", result="rejected", error_code="unsupported_type") == (
        unsupported + 1
    )
    assert value("sheaf_uploads_total", result="rejected", error_code="not_multipart") == (
        not_multipart + 1
    )


async def test_http_methods_are_a_bounded_label(aiohttp_client: MakeClient, deps: Deps) -> None:
    client = await aiohttp_client(create_app(deps.settings, deps=deps, housekeeping=False))
    await client.request("PROPFIND", "/healthz")  # WebDAV: parsed, not ours
    await client.get("/v1/documents/some-document-id")
    labels = [
        sample.labels
        for family in REGISTRY.collect()
        if family.name == "sheaf_http_request_duration_seconds"
        for sample in family.samples
        if sample.name.endswith("_count")
    ]
    assert {"method": "other", "route": "unmatched", "status": "405"} in labels
    assert {"method": "GET", "route": "/v1/documents/{document_id}", "status": "404"} in labels
    assert all(label["method"] in {*metrics.HTTP_METHODS, "other"} for label in labels)


# -- the worker's metrics server under `sheaf up` --------------------------------------------------


def test_sheaf_up_gives_each_worker_its_own_metrics_port() -> None:
    settings = Settings.from_env({"SHEAF_WORKER_METRICS_PORT": "9100", "SHEAF_WORKERS": "3"})
    environ = {"SHEAF_WORKER_METRICS_PORT": "9100", "PATH": "/bin"}
    ports = [worker_env(environ, settings, n)["SHEAF_WORKER_METRICS_PORT"] for n in range(3)]
    assert ports == ["9100", "9101", "9102"]
    check_worker_ports(settings)
    off = Settings.from_env({})
    assert "SHEAF_WORKER_METRICS_PORT" not in worker_env({}, off, 1)


def test_without_a_setting_workers_get_the_ports_after_the_api_or_free_ones() -> None:
    with socket.socket() as api:
        api.bind(("127.0.0.1", 0))
        port = api.getsockname()[1]
        settings = Settings.from_env({"SHEAF_PORT": str(port), "SHEAF_WORKERS": "2"})
        with socket.socket() as taken:
            try:
                taken.bind(("127.0.0.1", port + 1))
            except OSError:
                pytest.skip(f"port {port + 1} is in use by another process")
            ports = worker_metrics_ports(settings)
    assert ports[1] == port + 2 or ports[1] not in (port, port + 1)
    assert ports[0] not in (port, port + 1)  # taken: the system chose another
    assert worker_env({}, settings, 0, ports[0])["SHEAF_WORKER_METRICS_PORT"] == str(ports[0])
    explicit = Settings.from_env({"SHEAF_WORKER_METRICS_PORT": "9100", "SHEAF_WORKERS": "2"})
    assert worker_metrics_ports(explicit) == [9100, 9101]


@pytest.mark.parametrize(
    ("base", "workers", "port"), [("7999", "2", "8000"), ("65535", "2", "8000")]
)
def test_worker_metrics_ports_must_not_collide(base: str, workers: str, port: str) -> None:
    settings = Settings.from_env(
        {"SHEAF_WORKER_METRICS_PORT": base, "SHEAF_WORKERS": workers, "SHEAF_PORT": port}
    )
    with pytest.raises(ConfigError, match="SHEAF_WORKER_METRICS_PORT"):
        check_worker_ports(settings)


async def test_a_worker_serves_metrics_only_when_given_a_port(unused_tcp_port: int) -> None:
    import aiohttp

    async with observed(make_deps()):
        assert value("sheaf_worker_slots") == make_deps().settings.concurrency
    deps = make_deps(worker_metrics_port=unused_tcp_port)
    async with observed(deps), aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{unused_tcp_port}"
        async with http.get(f"{url}/metrics") as response:
            assert 'role="worker"' in await response.text()
        async with http.get(f"{url}/healthz") as response:
            assert response.status == 200


# -- structured logs -------------------------------------------------------------------------------


@pytest.fixture
def json_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """Everything logged, as the JSON lines a worker process writes."""
    monkeypatch.setattr(logs, "_PROCESS", {})
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.ContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


class LoggingEmbedder:
    """An adapter that logs without knowing which document it works for."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.model = inner.model
        self.dimensions = inner.dimensions

    async def embed(self, texts: list[str]) -> list[tuple[float, ...]]:
        logging.getLogger("sheaf.adapters.test").info("embedding batch")
        return await self.inner.embed(texts)  # type: ignore[no-any-return]

    async def close(self) -> None:
        pass


async def test_every_line_carries_the_worker_and_the_document(
    json_lines: io.StringIO, deps: Deps
) -> None:
    logs.stamp(worker_id="host-42")
    logging.getLogger("sheaf.anywhere").info("worker started")
    created = await put(deps)
    lease = await claim(deps)
    await process_document(
        dataclasses.replace(deps, embedder=LoggingEmbedder(deps.embedder)), lease
    )
    logging.getLogger("sheaf.anywhere").info("idle")

    lines = parsed(json_lines)
    assert all(line["worker_id"] == "host-42" for line in lines)
    first = lines[0]
    assert {"timestamp", "level", "logger", "event"} <= first.keys()
    assert (first["level"], first["event"]) == ("info", "worker started")
    assert "document_id" not in first
    adapter = next(line for line in lines if line["event"] == "embedding batch")
    done = next(line for line in lines if line["event"] == "document completed")
    for line in (adapter, done):
        assert line["document_id"] == created.id
        assert line["collection"] == "c"
        assert line["attempt"] == 1
        assert line["lease"] == lease.token[:8]
    assert done["duration_seconds"] > 0
    assert "document_id" not in lines[-1], "the document's fields end with its processing"


def test_an_explicit_extra_wins_and_text_is_readable(json_lines: io.StringIO) -> None:
    logs.stamp(worker_id="w")
    with logs.bound(document_id="d1", attempt=2):
        logging.getLogger("x").warning("attempt failed", extra={"attempt": 3, "error_code": "e"})
    [line] = parsed(json_lines)
    assert (line["document_id"], line["attempt"], line["error_code"]) == ("d1", 3, "e")
    record = logging.makeLogRecord({"msg": "attempt failed", "levelname": "WARNING"})
    record.document_id = "d1"
    text = logs.TextFormatter().format(record)
    assert re.fullmatch(r"\d\d:\d\d:\d\d WARNING attempt failed  document_id=d1", text)


def test_settings_for_observability_are_validated() -> None:
    with pytest.raises(ConfigError, match="SHEAF_WORKER_METRICS_PORT"):
        Settings.from_env({"SHEAF_WORKER_METRICS_PORT": "70000"})
    with pytest.raises(ConfigError, match="SHEAF_DATABASE_METRICS_INTERVAL_SECONDS"):
        Settings.from_env({"SHEAF_DATABASE_METRICS_INTERVAL_SECONDS": "-1"})
