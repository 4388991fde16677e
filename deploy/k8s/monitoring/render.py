"""Render this folder's Kubernetes manifests from their one source of truth.

    python deploy/k8s/monitoring/render.py          # rewrite the manifests
    python deploy/k8s/monitoring/render.py --check  # exit 1 if they are out of date

- `prometheus-rule.yaml`: a PrometheusRule (Prometheus Operator) whose `spec` is
  `deploy/prometheus/sheaf-alerts.yaml` verbatim, indented — the rules promtool tests.
- `grafana-dashboards.yaml`: a ConfigMap holding every `deploy/grafana/*.json`, labelled
  for the Grafana dashboard sidecar (kube-prometheus-stack, the Grafana Helm chart), and
  a second ConfigMap with a provisioning provider for a Grafana without the sidecar.

Pure text: no YAML library, so the embedded rules and dashboards stay byte-identical to
their sources (tests/unit/test_alert_rules.py and test_metrics.py check that).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEPLOY = HERE.parents[1]
RULES = DEPLOY / "prometheus" / "sheaf-alerts.yaml"
DASHBOARDS = DEPLOY / "grafana"

HEADER = (
    "# Generated from {source} by deploy/k8s/monitoring/render.py.\n"
    "# Do not edit: change the source, then run `python deploy/k8s/monitoring/render.py`.\n"
)

RULE_MANIFEST = """\
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: sheaf
  labels:
    app.kubernetes.io/name: sheaf
    app.kubernetes.io/component: monitoring
    # kube-prometheus-stack selects rules by its release label by default: add yours, e.g.
    # release: kube-prometheus-stack
spec:
"""

DASHBOARD_MANIFEST = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: sheaf-grafana-dashboards
  labels:
    app.kubernetes.io/name: sheaf
    app.kubernetes.io/component: monitoring
    grafana_dashboard: "1"  # picked up by the Grafana dashboard sidecar
  annotations:
    grafana_folder: Sheaf  # sidecar folderAnnotation (kube-prometheus-stack)
data:
"""

PROVIDER_MANIFEST = """\
---
# Without the sidecar: mount this at /etc/grafana/provisioning/dashboards/ and the ConfigMap
# above at /var/lib/grafana/dashboards/sheaf/.
apiVersion: v1
kind: ConfigMap
metadata:
  name: sheaf-grafana-dashboard-provider
  labels:
    app.kubernetes.io/name: sheaf
    app.kubernetes.io/component: monitoring
data:
  sheaf.yaml: |
    apiVersion: 1
    providers:
      - name: sheaf
        folder: Sheaf
        type: file
        disableDeletion: true
        allowUiUpdates: false
        options:
          path: /var/lib/grafana/dashboards/sheaf
"""


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "".join(pad + line if line.strip() else line for line in text.splitlines(True))


def rules_body() -> str:
    """The rules file from its `groups:` line on (its header comment stays in the source)."""
    text = RULES.read_text()
    return text[text.index("groups:\n") :]


def prometheus_rule() -> str:
    source = HEADER.format(source="deploy/prometheus/sheaf-alerts.yaml")
    return source + RULE_MANIFEST + _indent(rules_body(), 2)


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def grafana_dashboards() -> str:
    parts = [HEADER.format(source="deploy/grafana/*.json"), DASHBOARD_MANIFEST]
    for path in dashboard_files():
        parts.append(f"  {path.name}: |\n" + _indent(path.read_text(), 4))
    parts.append(PROVIDER_MANIFEST)
    return "".join(parts)


def rendered() -> dict[Path, str]:
    return {
        HERE / "prometheus-rule.yaml": prometheus_rule(),
        HERE / "grafana-dashboards.yaml": grafana_dashboards(),
    }


def main(argv: list[str]) -> int:
    stale = [path for path, text in rendered().items() if not _same(path, text)]
    if "--check" in argv:
        for path in stale:
            print(f"{path.name} is out of date: run python deploy/k8s/monitoring/render.py")
        return 1 if stale else 0
    for path, text in rendered().items():
        path.write_text(text)
    return 0


def _same(path: Path, text: str) -> bool:
    return path.exists() and path.read_text() == text


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
