"""A real Prometheus scrapes `sheaf up` (the API and each worker process) while documents
flow; what it stored is checked through its HTTP API, and so are the dashboards and the
alert rules against what it saw.

Needs the `prometheus` binary (`apt-get install -y prometheus`): skipped with that reason
when absent, a failure under CI=true.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import require_service
from tests.e2e.conftest import (
    ROOT,
    Proc,
    free_port,
    sheaf_env,
    start,
    upload,
    wait_ready,
    wait_status,
)
from tests.samples import encrypt_pdf, make_docx, make_pdf
from tests.unit.test_metrics import dashboard_queries, load_dashboards, promql_metric_names

pytestmark = pytest.mark.e2e

RULES = ROOT / "deploy" / "prometheus" / "sheaf-alerts.yaml"
# Defined in sheaf/metrics.py, exported once the Service Bus consumer runs.
PENDING_SERVICE_BUS = {"sheaf_servicebus_dead_letter_messages"}


def free_port_pair() -> int:
    """A port p with p and p + 1 free: `sheaf up` puts its two workers there."""
    for _ in range(50):
        base = free_port()
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", base + 1))
        except OSError:
            continue
        return base
    raise AssertionError("no two consecutive free ports")


class Prometheus:
    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url

    async def get(self, path: str, **params: str) -> Any:
        async with self.http.get(f"{self.url}{path}", params=params) as response:
            body = await response.json()
            assert body["status"] == "success", body
            return body["data"]

    async def value(self, query: str) -> float | None:
        """The single value of an instant query, or None when it has no result."""
        result = (await self.get("/api/v1/query", query=query))["result"]
        assert len(result) <= 1, (query, result)
        return float(result[0]["value"][1]) if result else None

    async def until(self, query: str, ok: Any, timeout: float = 30) -> float:
        deadline = time.monotonic() + timeout
        while True:
            got = await self.value(query)
            if got is not None and ok(got):
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"Prometheus: {query} = {got}")
            await asyncio.sleep(0.5)


def prometheus_config(api: str, workers: list[str]) -> dict[str, Any]:
    """JSON is YAML: Prometheus reads this as its config file."""
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "sheaf-api", "static_configs": [{"targets": [api]}]},
            {"job_name": "sheaf-worker", "static_configs": [{"targets": workers}]},
        ],
    }


def start_prometheus(procs: list[Proc], tmp_path: Path, config: dict[str, Any]) -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        require_service("Prometheus", "no prometheus binary on PATH (apt-get install prometheus)")
    assert binary is not None
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))
    port = free_port()
    args = [
        binary,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    procs.append(Proc(args, dict(os.environ), tmp_path, tmp_path / "prometheus.log"))
    return f"http://127.0.0.1:{port}"


async def wait_http_ok(http: aiohttp.ClientSession, url: str, proc: Proc) -> None:
    for _ in range(300):
        assert proc.popen.poll() is None, proc.output()
        try:
            async with http.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never answered 200:\n{proc.output()}")


def grafana_to_promql(query: str) -> str:
    return query.replace("$__rate_interval", "1m").replace("$instance", ".*")


async def test_prometheus_sees_documents_flow_and_every_panel_has_its_metrics(
    tmp_path: Path, procs: list[Proc], http: aiohttp.ClientSession
) -> None:
    api_port, worker_base = free_port(), free_port_pair()
    api = f"127.0.0.1:{api_port}"
    workers = [f"127.0.0.1:{worker_base}", f"127.0.0.1:{worker_base + 1}"]
    prom = Prometheus(http, start_prometheus(procs, tmp_path, prometheus_config(api, workers)))
    env = sheaf_env(
        SHEAF_WORKERS="2",
        SHEAF_WORKER_METRICS_PORT=str(worker_base),
        SHEAF_DATABASE_METRICS_INTERVAL_SECONDS="0.5",
    )
    up = start(procs, ["-m", "sheaf", "up", "--port", str(api_port)], env, tmp_path, "up")
    await wait_ready(f"http://{api}", up)
    for worker in workers:  # each worker process answers its own probes
        await wait_ready(f"http://{worker}", up)
        await wait_http_ok(http, f"http://{worker}/healthz", up)
    await wait_http_ok(http, f"{prom.url}/-/ready", procs[0])

    # Three targets, one per process; two of them say they are workers.
    await prom.until('count(up{job=~"sheaf-.*"} == 1)', lambda v: v == 3)
    await prom.until('count(sheaf_build_info{role="worker"})', lambda v: v == 2)
    before = await prom.until("sum(sheaf_documents_processed_total)", lambda v: v >= 0)

    url = f"http://{api}"
    good = {
        "a.pdf": make_pdf(["Quarterly audit overview of the finance department."] * 2),
        "b.docx": make_docx(["Ledger summary.", "Closing notes."], [["cash", "1200"]]),
        "c.txt": b"Field notes: the auditors visited the plant twice.",
    }
    ids = [(await upload(http, url, "audit", name, data))[1]["id"] for name, data in good.items()]
    locked = (await upload(http, url, "audit", "x.pdf", encrypt_pdf(make_pdf(["s"]), "pw")))[1]
    for document_id in ids:
        await wait_status(http, url, document_id, {"completed"}, timeout=30)
    await wait_status(http, url, locked["id"], {"failed"}, timeout=30)

    # The key series exist and move; summed over the worker targets, each attempt counts once.
    after = await prom.until("sum(sheaf_documents_processed_total)", lambda v: v >= before + 4)
    assert after == before + 4
    await prom.until('sum(sheaf_documents_processed_total{outcome="completed"})', lambda v: v >= 3)
    await prom.until(
        'sum(sheaf_documents_processed_total{outcome="permanent", error_code="encrypted"})',
        lambda v: v == 1,
    )
    await prom.until("sum(increase(sheaf_documents_processed_total[1m]))", lambda v: v > 0)
    for stage in ("download", "extract", "chunk", "embed", "index", "total"):
        query = f'sum(sheaf_stage_duration_seconds_count{{stage="{stage}"}})'
        await prom.until(query, lambda v: v >= 3)
    total = 'rate(sheaf_stage_duration_seconds_bucket{stage="total"}[1m])'
    p95 = await prom.until(f"histogram_quantile(0.95, sum by (le) ({total}))", lambda v: v > 0)
    assert p95 < 60
    await prom.until('sum(sheaf_uploads_total{result="created"})', lambda v: v == 4)
    assert await prom.until("sum(sheaf_leases_acquired_total)", lambda v: v >= 4) == 4
    await prom.until('max(sheaf_documents{status="completed"})', lambda v: v == 3)
    await prom.until('max(sheaf_documents{status="failed"})', lambda v: v == 1)
    uploads = '{route="/v1/collections/{collection}/documents", method="POST"}'
    await prom.until(f"sum(sheaf_http_request_duration_seconds_count{uploads})", lambda v: v == 4)
    # Only the API reads the database gauges; workers never export a fresh refresh time.
    await prom.until(
        'count(sheaf_database_metrics_refresh_timestamp_seconds{job="sheaf-api"} > 0)',
        lambda v: v == 1,
    )
    assert (
        await prom.value(
            'count(sheaf_database_metrics_refresh_timestamp_seconds{job="sheaf-worker"} > 0)'
        )
        is None
    )

    # Every dashboard query reads only metrics Prometheus scraped, and is valid PromQL.
    seen = set(await prom.get("/api/v1/label/__name__/values"))
    for dashboard in load_dashboards():
        for where, query in dashboard_queries(dashboard):
            missing = promql_metric_names(query) - seen
            assert not missing, f"{where}: {missing} never scraped"
            if not query.startswith("label_values("):
                await prom.get("/api/v1/query", query=grafana_to_promql(query))

    # The alert rules loaded, evaluate without error, and read scraped metrics too.
    [group] = (await prom.get("/api/v1/rules"))["groups"]
    assert len(group["rules"]) == RULES.read_text().count("- alert: ")
    for rule in group["rules"]:
        assert rule["health"] in {"ok", "unknown"}, rule
        missing = promql_metric_names(rule["query"]) - seen - PENDING_SERVICE_BUS
        assert not missing, f"{rule['name']}: {missing} never scraped"
    firing = {a["labels"]["alertname"] for a in (await prom.get("/api/v1/alerts"))["alerts"]}
    assert not firing & {"SheafQueueMetricsStale", "SheafWorkerRestarting"}

    # Worker log lines carry their worker_id, and document lines their document.
    lines = [json.loads(line) for line in up.log.read_text().splitlines() if line.startswith("{")]
    processing = [line for line in lines if "lease" in line]  # logged while processing
    assert {line["document_id"] for line in processing} >= set(ids)
    assert all(line.get("worker_id") for line in processing)
