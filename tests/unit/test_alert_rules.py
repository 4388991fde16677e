"""The alert rules: valid, unit-tested firing and not firing, one source of truth.

`promtool` comes with Prometheus (`apt-get install prometheus`); without it these tests
skip with that reason, except under CI=true, where they fail.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_service
from tests.unit.test_metrics import defined_series, promql_metric_names, render_module

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "sheaf-alerts.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "sheaf-alerts.test.yaml"
MANIFEST = ROOT / "deploy" / "k8s" / "monitoring" / "prometheus-rule.yaml"

# Exported by processes Prometheus scrapes, not by Sheaf's registry.
OUTSIDE_SHEAF = {"process_start_time_seconds"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        require_service("promtool", "not on PATH (apt-get install -y prometheus)")
    assert binary is not None
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=60, cwd=RULES.parent
    )


def alert_names() -> list[str]:
    return re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), flags=re.M)


def test_promtool_check_rules() -> None:
    done = promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    done = promtool("test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    tests = RULE_TESTS.read_text()
    for name in alert_names():
        cases = re.findall(rf"alertname: {name}\n\s+exp_alerts:(.*)", tests)
        assert cases, f"{name} has no promtool test"
        assert any(case.strip().startswith("[]") for case in cases), f"{name}: never silent"
        assert any(not case.strip() for case in cases), f"{name}: never fires"


def test_the_issue_alerts_are_all_there() -> None:
    assert set(alert_names()) >= {
        "SheafNoWorkerConsuming",
        "SheafQueueDepthHigh",
        "SheafProcessingFailureRatioHigh",
        "SheafLeaseExpirationsHigh",
        "SheafDocumentsNeedAHuman",
        "SheafWorkerRestarting",
        "SheafEmbeddingThrottled",
        "SheafOldestReadyDocumentTooOld",
    }


def test_alerts_read_only_metrics_sheaf_defines() -> None:
    known = defined_series() | OUTSIDE_SHEAF
    exprs = re.findall(r"expr: (?:\|\n((?:\s{10}.*\n)+)|(.*)\n)", RULES.read_text())
    assert len(exprs) == len(alert_names())
    for block, line in exprs:
        names = promql_metric_names(block or line)
        assert names, block or line
        assert names <= known, f"unknown metrics {names - known} in {block or line}"


def test_the_prometheus_rule_manifest_carries_the_same_rules() -> None:
    render = render_module()
    assert MANIFEST.read_text() == render.prometheus_rule(), (
        "stale: run python deploy/k8s/monitoring/render.py"
    )
    body = "".join(
        line[2:] if line.strip() else line
        for line in MANIFEST.read_text().split("spec:\n", 1)[1].splitlines(True)
    )
    assert body == RULES.read_text()[RULES.read_text().index("groups:\n") :]
