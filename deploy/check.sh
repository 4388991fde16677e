#!/usr/bin/env bash
# Offline checks of everything under deploy/ and the Dockerfile (docs/deploy.md, "What CI
# checks"). No cluster, Docker engine or Bicep compiler is needed or used:
#   1. the monitoring manifests match their sources (deploy/k8s/monitoring/render.py --check);
#   2. every overlay renders with kustomize and validates: built-in kinds with
#      `kubernetes-validate --strict`, custom resources (KEDA, Prometheus Operator) against
#      deploy/k8s/schemas; the KEDA PostgreSQL variant of docs/deploy.md too;
#   3. the Dockerfile passes hadolint, and the wheel its builder stage builds carries sql/;
#   4. the T-SQL grants script parses and lints (sqlfluff, T-SQL);
#   5. checkov passes on the Dockerfile, the rendered overlays and the Bicep, and its Bicep
#      parser finds resources in every .bicep file.
# Exits non-zero on the first failure. It installs nothing: `.ci/run` does, or by hand:
#   .venv/bin/pip install -e '.[dev,deploy]'
#   python3 -m venv .venv/checkov && .venv/checkov/bin/pip install 'checkov==3.3.30'
# (checkov lives in its own virtual environment: it pins packaging<24, which the dev tools
# outgrew.) Override tool locations with PYTHON, KUSTOMIZE ("kustomize build" or
# "kubectl kustomize"), KUBERNETES_VALIDATE, HADOLINT, SQLFLUFF, CHECKOV and CHECKOV_PYTHON
# (the Python of checkov's environment).
set -euo pipefail
cd "$(dirname "$0")/.."

# Kubernetes versions the built-in kinds are validated against (AKS's supported range).
K8S_VERSIONS=${K8S_VERSIONS:-"1.31 1.34"}
CHECKOV_VERSION=3.3.30

# Checks skipped on the command line because checkov's graph checks ignore the inline
# `checkov:skip` comments of Bicep files. One line each: why.
BICEP_GRAPH_SKIPS=(
  "CKV_AZURE_23: auditing is set on the SQL server (auditingSettings), which covers every database; the check wants it per database"
  "CKV_AZURE_25: threat detection is set on the SQL server (securityAlertPolicies, no alert disabled); the check wants it per database"
)

fail() { echo "deploy/check.sh: $*" >&2; exit 1; }
step() { printf '\n== %s\n' "$*"; }

find_tool() {  # find_tool VAR candidate... -> the first candidate that runs
  local var=$1; shift
  if [ -n "${!var:-}" ]; then echo "${!var}"; return; fi
  for candidate in "$@"; do
    if command -v "${candidate%% *}" >/dev/null 2>&1; then echo "$candidate"; return; fi
  done
  fail "cannot find ${var,,} (tried: $*); see the top of deploy/check.sh for how to install it"
}

PYTHON=$(find_tool PYTHON .venv/bin/python python3)
KUSTOMIZE=$(find_tool KUSTOMIZE "kustomize build" ".venv/bin/kubectl kustomize" "kubectl kustomize")
KUBERNETES_VALIDATE=$(find_tool KUBERNETES_VALIDATE .venv/bin/kubernetes-validate kubernetes-validate)
HADOLINT=$(find_tool HADOLINT .venv/bin/hadolint hadolint)
SQLFLUFF=$(find_tool SQLFLUFF .venv/bin/sqlfluff sqlfluff)
CHECKOV=$(find_tool CHECKOV .venv/checkov/bin/checkov checkov)
CHECKOV_PYTHON=${CHECKOV_PYTHON:-$(dirname "$(command -v "$CHECKOV")")/python}

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/k8s"

step "monitoring manifests are rendered from their sources"
"$PYTHON" deploy/k8s/monitoring/render.py --check

step "kustomize: render and validate every overlay ($KUSTOMIZE)"
$KUSTOMIZE --help >/dev/null 2>&1 || fail "$KUSTOMIZE does not run"
validate_rendered() {  # validate_rendered NAME FILE
  local name=$1 rendered=$2 builtins="$WORK/$1.builtin.yaml" out
  "$PYTHON" deploy/k8s/schemas/validate.py "$rendered" --builtins-out "$builtins"
  for version in $K8S_VERSIONS; do
    out=$("$KUBERNETES_VALIDATE" --strict --quiet -k "$version" "$builtins") \
      || { echo "$out"; fail "$name: kubernetes-validate --strict (Kubernetes $version) failed"; }
    # kubernetes-validate only warns about kinds it has no schema for: that is a failure here.
    if [ -n "$out" ]; then echo "$out"; fail "$name: kubernetes-validate reported problems"; fi
    echo "ok    built-in kinds of $name (kubernetes-validate --strict, Kubernetes $version)"
  done
}
overlays=0
for overlay in deploy/k8s/overlays/*/; do
  name=$(basename "$overlay")
  rendered="$WORK/k8s/$name.yaml"
  $KUSTOMIZE "$overlay" >"$rendered" || fail "kustomize could not render $overlay"
  echo "rendered $overlay: $(grep -c '^kind:' "$rendered") resources"
  validate_rendered "$name" "$rendered"
  overlays=$((overlays + 1))
done
[ "$overlays" -ge 2 ] || fail "expected the dev and prod overlays, found $overlays"

step "the validator rejects what it must (a misspelt field, a kind without a schema)"
first=$(ls "$WORK"/k8s/*.yaml | head -1)
sed 's/^  cooldownPeriod: /  cooldownPeriods: 1\n  cooldownPeriod: /' "$first" >"$WORK/typo.yaml"
if "$PYTHON" deploy/k8s/schemas/validate.py "$WORK/typo.yaml" --builtins-out /dev/null >/dev/null 2>&1; then
  fail "a ScaledObject with a misspelt field passed validation"
fi
printf 'apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n' >"$WORK/unknown.yaml"
if "$PYTHON" deploy/k8s/schemas/validate.py "$WORK/unknown.yaml" --builtins-out /dev/null >/dev/null 2>&1; then
  fail "a custom resource without a schema passed validation"
fi
echo "ok    both refused"

step "the KEDA PostgreSQL variant in docs/deploy.md"
"$PYTHON" - docs/deploy.md "$WORK/keda-postgresql.yaml" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
found = re.search(r"<!-- keda-postgresql:start -->\s*```yaml\n(.*?)```\s*<!-- keda-postgresql:end -->", text, re.S)
if not found:
    sys.exit("docs/deploy.md has no ```yaml block between the keda-postgresql markers")
open(sys.argv[2], "w").write(found.group(1))
EOF
validate_rendered keda-postgresql "$WORK/keda-postgresql.yaml"

step "Dockerfile: hadolint ($($HADOLINT --version))"
"$HADOLINT" Dockerfile
echo "ok    Dockerfile"

step "the wheel the Dockerfile's builder stage builds carries the SQL"
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WORK/wheel" . >/dev/null
"$PYTHON" - "$WORK"/wheel/sheaf-*.whl <<'EOF'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
needed = ["sheaf/_sql/migrations/env.py", "sheaf/cli.py", "api/app.py", "worker/runner.py"]
needed += ["sheaf/_sql/procedures/mssql/claim_queued_documents.sql"]
missing = [name for name in needed if name not in names]
if missing:
    sys.exit(f"the wheel lacks {missing}")
print(f"ok    {sys.argv[1].rsplit('/', 1)[-1]}: {len(names)} files, sql/ as sheaf/_sql")
EOF

step "T-SQL grants script: sqlfluff"
"$SQLFLUFF" parse --dialect tsql deploy/bicep/sql-grants.sql >"$WORK/parse.log" \
  || { grep -n unparsable "$WORK/parse.log" || true; fail "sql-grants.sql does not parse"; }
"$SQLFLUFF" lint --dialect tsql deploy/bicep/sql-grants.sql

step "Bicep: checkov's parser finds resources in every file"
"$CHECKOV_PYTHON" - deploy/bicep <<'EOF'
import sys
from pathlib import Path
from checkov.bicep.parser import Parser

failed = False
for path in sorted(Path(sys.argv[1]).rglob("*.bicep")):
    template, _ = Parser().parse(path)
    resources = len((template or {}).get("resources") or {})
    modules = len((template or {}).get("modules") or {})
    status = "ok  " if resources else "FAIL"
    failed |= not resources
    print(f"{status}  {path}: {resources} resources, {modules} modules")
sys.exit(1 if failed else 0)
EOF

step "checkov $("$CHECKOV" --version) (offline: --skip-download)"
[ "$("$CHECKOV" --version)" = "$CHECKOV_VERSION" ] \
  || echo "note: checkov $("$CHECKOV" --version) is not the pinned $CHECKOV_VERSION; results may differ"
export BC_SKIP_MAPPING=TRUE
graph_skips=$(printf '%s\n' "${BICEP_GRAPH_SKIPS[@]}" | cut -d: -f1 | paste -sd, -)
run_checkov() {  # run_checkov LABEL checkov-arguments...
  local label=$1; shift
  "$CHECKOV" --skip-download --compact -o json "$@" >"$WORK/checkov-$label.json" || true
  "$CHECKOV_PYTHON" - "$label" "$WORK/checkov-$label.json" <<'EOF'
import json, sys
label, path = sys.argv[1], sys.argv[2]
data = json.load(open(path))
reports = data if isinstance(data, list) else [data]
bad = False
for report in reports:
    summary = report.get("summary", {})
    results = report.get("results", {})
    print(f"{label} [{report.get('check_type')}]: {summary.get('passed', 0)} passed, "
          f"{summary.get('failed', 0)} failed, {summary.get('skipped', 0)} skipped, "
          f"{summary.get('resource_count', 0)} resources, "
          f"{summary.get('parsing_errors', 0)} parsing errors")
    for check in results.get("skipped_checks", []):
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        print(f"  skipped {check['check_id']} {check['resource']}: {reason}")
    for check in results.get("failed_checks", []):
        print(f"  FAILED  {check['check_id']} {check['resource']} "
              f"({check['file_path']}:{check['file_line_range']}): {check['check_name']}")
    bad |= bool(summary.get("failed") or summary.get("parsing_errors"))
    bad |= not summary.get("resource_count")
if not reports or bad:
    sys.exit(f"checkov found problems in {label} (or scanned nothing)")
EOF
}
run_checkov dockerfile -f Dockerfile --framework dockerfile
run_checkov kubernetes -d "$WORK/k8s" --framework kubernetes
run_checkov bicep -d deploy/bicep --framework bicep --skip-check "$graph_skips"
echo "skipped for all Bicep files (command line):"
printf '  %s\n' "${BICEP_GRAPH_SKIPS[@]}"

step "deploy/check.sh: all checks passed"
