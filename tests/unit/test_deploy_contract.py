"""The deployment files agree with the code and with each other.

Kubernetes, Bicep and the settings are written in three languages by hand; nothing but these
tests notices when one of them moves. Everything is read from the files as they are (YAML
with PyYAML, Bicep with regular expressions), and every expectation is derived from the
code where the code has it: the settings from `Settings`, the routes from the apps.
deploy/check.sh renders and validates the same files with the real tools.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from api.app import create_app
from sheaf.config import Settings
from sheaf.domain.models import Status
from worker.health import create_health_app

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAYS = sorted(path for path in (K8S / "overlays").iterdir() if path.is_dir())
BICEP = ROOT / "deploy" / "bicep"
UNSET = re.compile(r"^#\s*unset\s+(SHEAF_[A-Z0-9_]+):\s*(.*)$")


# -- reading the files ----------------------------------------------------------------------------


def read_env(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """`KEY=value` lines, and `# unset KEY: reason` lines, of a kustomize env file."""
    values: dict[str, str] = {}
    unset: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if found := UNSET.match(line.strip()):
            unset[found[1]] = found[2].strip()
        elif line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value
    return values, unset


def base_env() -> dict[str, str]:
    return read_env(BASE / "sheaf.env")[0]


def overlay_env(overlay: Path) -> dict[str, str]:
    """The ConfigMap an overlay renders: the base, its azure.env's SHEAF_* and settings.env."""
    azure = {k: v for k, v in read_env(overlay / "azure.env")[0].items() if k.startswith("SHEAF_")}
    return {**base_env(), **azure, **read_env(overlay / "settings.env")[0]}


@cache
def base_docs() -> tuple[dict[str, Any], ...]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        if resource.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all((BASE / resource).read_text()) if d]
    return tuple(docs)


def doc(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in base_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"deploy/k8s/base has {len(found)} {kind} named {name}"
    return found[0]


def pod_spec(kind: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = doc(kind, name)["spec"]["template"]["spec"]
    return spec


def container(kind: str, name: str) -> dict[str, Any]:
    (only,) = pod_spec(kind, name)["containers"]
    return dict(only)


def trigger(kind: str) -> dict[str, str]:
    (found,) = [
        t for t in doc("ScaledObject", "sheaf-worker")["spec"]["triggers"] if t["type"] == kind
    ]
    return dict(found["metadata"])


def bicep_default(file: Path, param: str) -> str:
    found = re.search(rf"^param\s+{param}\s+\w+\s*=\s*(.+?)\s*$", file.read_text(), re.M)
    assert found, f"{file.name} declares no default for {param}"
    return found[1].strip("'")


def parameters_file() -> dict[str, Any]:
    params: dict[str, Any] = json.loads((BICEP / "main.parameters.json").read_text())["parameters"]
    return {name: entry["value"] for name, entry in params.items()}


def routes(app: Any) -> set[str]:
    return {
        resource.canonical
        for resource in app.router.resources()
        if any(route.method == "GET" for route in resource)
    }


def setting_names() -> set[str]:
    return {f"SHEAF_{name.upper()}" for name in Settings.model_fields}


# -- settings -------------------------------------------------------------------------------------


def test_every_setting_is_in_the_configmap_or_named_as_left_out() -> None:
    values, unset = read_env(BASE / "sheaf.env")
    missing = setting_names() - set(values) - set(unset)
    assert not missing, f"add to deploy/k8s/base/sheaf.env (a value or `# unset`): {missing}"
    assert not set(values) & set(unset), "a setting both set and named as unset"
    assert not (set(values) | set(unset)) - setting_names(), "sheaf.env names unknown settings"
    assert all(unset.values()), "every `# unset` line says why"


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = {name for name in setting_names() if f"`{name}`" not in readme}
    assert not missing, (
        f"not in the README (regenerate its table: sheaf config --markdown): {missing}"
    )


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda path: path.name)
def test_each_overlay_configmap_is_valid_settings_for_azure(overlay: Path) -> None:
    settings = Settings.from_env(overlay_env(overlay))
    assert settings.database_dialect == "mssql"
    assert settings.database_auth == "entra"
    assert settings.blob_backend == "azure"
    assert settings.message_bus == "servicebus"
    assert settings.embedder == "azure-openai"
    assert settings.auth_mode != "none", "the API refuses a network address without auth"
    assert settings.host == "0.0.0.0"


def test_no_secret_is_set_in_a_configmap() -> None:
    secrets = {
        f"SHEAF_{name.upper()}"
        for name, field in Settings.model_fields.items()
        if "SecretStr" in str(field.annotation) or field.annotation is SecretStr
    } - {"SHEAF_DATABASE_URL"}
    _, unset = read_env(BASE / "sheaf.env")
    assert secrets <= set(unset)
    for overlay in OVERLAYS:
        env = overlay_env(overlay)
        assert not secrets & set(env), f"{overlay.name} sets a secret"
        assert make_url(env["SHEAF_DATABASE_URL"]).password is None, "Entra ID: no password"


def test_per_pod_settings_are_left_unset() -> None:
    _, unset = read_env(BASE / "sheaf.env")
    assert "SHEAF_WORKER_ID" in unset, "one worker id for every pod would break leases"
    assert "SHEAF_AZURE_CLIENT_ID" in unset, "the app and the migrator are different identities"


# -- probes and ports -----------------------------------------------------------------------------


def port_named(kind: str, name: str, port: str | int) -> int:
    if isinstance(port, int):
        return port
    (found,) = [p["containerPort"] for p in container(kind, name)["ports"] if p["name"] == port]
    return int(found)


def probes(kind: str, name: str) -> dict[str, dict[str, Any]]:
    spec = container(kind, name)
    return {
        key: spec[key]["httpGet"] for key in ("startupProbe", "livenessProbe", "readinessProbe")
    }


def test_api_probes_and_port_are_the_apps() -> None:
    defaults = Settings.from_env({})
    env = base_env()
    served = routes(create_app(defaults))
    port = port_named("Deployment", "sheaf-api", "http")
    assert port == int(env["SHEAF_PORT"]) == defaults.port
    for probe in probes("Deployment", "sheaf-api").values():
        assert probe["path"] in served
        assert port_named("Deployment", "sheaf-api", probe["port"]) == port
    assert probes("Deployment", "sheaf-api")["livenessProbe"]["path"] == "/healthz"
    assert probes("Deployment", "sheaf-api")["readinessProbe"]["path"] == "/readyz"
    (service_port,) = doc("Service", "sheaf-api")["spec"]["ports"]
    assert port_named("Deployment", "sheaf-api", service_port["targetPort"]) == port
    assert env["SHEAF_API_URL"].endswith(f"sheaf-api:{service_port['port']}")


def test_worker_probes_and_port_are_the_health_servers() -> None:
    env = base_env()
    served = routes(create_health_app(None, None))  # type: ignore[arg-type]  # routes only
    port = port_named("Deployment", "sheaf-worker", "metrics")
    assert port == int(env["SHEAF_WORKER_METRICS_PORT"]) != 0, "port 0 serves no probes"
    for probe in probes("Deployment", "sheaf-worker").values():
        assert probe["path"] in served
        assert port_named("Deployment", "sheaf-worker", probe["port"]) == port
    assert probes("Deployment", "sheaf-worker")["livenessProbe"]["path"] == "/healthz"


def test_scrape_targets_name_real_ports_and_paths() -> None:
    (api,) = doc("ServiceMonitor", "sheaf-api")["spec"]["endpoints"]
    (worker,) = doc("PodMonitor", "sheaf-worker")["spec"]["podMetricsEndpoints"]
    assert api["port"] in {p["name"] for p in doc("Service", "sheaf-api")["spec"]["ports"]}
    assert api["path"] in routes(create_app(Settings.from_env({})))
    assert port_named("Deployment", "sheaf-worker", worker["port"])
    assert worker["path"] in routes(create_health_app(None, None))  # type: ignore[arg-type]


def test_the_image_defaults_match_the_manifests() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    env = base_env()
    for name in ("SHEAF_PORT", "SHEAF_WORKER_METRICS_PORT", "SHEAF_HOST"):
        assert re.search(rf"\b{name}={re.escape(env[name])}\b", dockerfile), name
    exposed = re.search(r"^EXPOSE (.+)$", dockerfile, re.M)
    assert exposed
    assert set(exposed[1].split()) == {
        env["SHEAF_PORT"],
        env["SHEAF_WORKER_METRICS_PORT"],
    }


# -- shutdown, autoscaling and the queue ----------------------------------------------------------


def test_worker_termination_grace_exceeds_its_shutdown_grace() -> None:
    grace = pod_spec("Deployment", "sheaf-worker")["terminationGracePeriodSeconds"]
    assert grace > float(base_env()["SHEAF_SHUTDOWN_GRACE_SECONDS"])
    assert grace > Settings.model_fields["shutdown_grace_seconds"].default


def test_queue_name_is_one_name_everywhere() -> None:
    names = {
        "ConfigMap SHEAF_SERVICEBUS_QUEUE": base_env()["SHEAF_SERVICEBUS_QUEUE"],
        "KEDA trigger queueName": trigger("azure-servicebus")["queueName"],
        "Bicep main.bicep queueName": bicep_default(BICEP / "main.bicep", "queueName"),
        "Bicep main.parameters.json queueName": parameters_file()["queueName"],
    }
    assert len(set(names.values())) == 1, names
    for overlay in OVERLAYS:
        assert read_env(overlay / "azure.env")[0]["SHEAF_SERVICEBUS_QUEUE"] in names.values()


def component_targets() -> dict[str, list[str]]:
    """Each azure.env key and the `Kind/name:fieldPath` it is copied to."""
    component = yaml.safe_load((BASE / "azure" / "kustomization.yaml").read_text())
    found: dict[str, list[str]] = {}
    for item in component["replacements"]:
        key = item["source"]["fieldPath"].removeprefix("data.")
        for target in item["targets"]:
            where = f"{target['select']['kind']}/{target['select']['name']}"
            found.setdefault(key, []).extend(f"{where}:{p}" for p in target["fieldPaths"])
    return found


def test_the_overlay_copies_the_queue_to_the_app_and_to_keda_alike() -> None:
    targets = component_targets()["SHEAF_SERVICEBUS_QUEUE"]
    assert "ConfigMap/sheaf-config:data.SHEAF_SERVICEBUS_QUEUE" in targets
    assert any(t.startswith("ScaledObject/sheaf-worker:") and "queueName" in t for t in targets)


def test_keda_scales_per_worker_slots_with_fallback_and_workload_identity() -> None:
    concurrency = base_env()["SHEAF_CONCURRENCY"]
    assert trigger("azure-servicebus")["messageCount"] == concurrency
    assert trigger("mssql")["targetValue"] == concurrency
    spec = doc("ScaledObject", "sheaf-worker")["spec"]
    assert spec["scaleTargetRef"]["name"] == doc("Deployment", "sheaf-worker")["metadata"]["name"]
    assert spec["fallback"]["replicas"] >= 1
    auth = doc("TriggerAuthentication", "sheaf-keda")["spec"]["podIdentity"]
    assert auth["provider"] == "azure-workload"
    assert {t["authenticationRef"]["name"] for t in spec["triggers"]} == {"sheaf-keda"}


def test_the_ready_rows_query_matches_the_schema_and_states() -> None:
    query = trigger("mssql")["query"]
    migration = (ROOT / "sql" / "migrations" / "versions" / "0001_initial.py").read_text()
    assert "FROM dbo.documents" in query
    for column in re.findall(r"\b(status|ready_at|not_before)\b", query):
        assert f'"{column}"' in migration, column
    assert f"N'{Status.QUEUED.value}'" in query
    assert f"N'{Status.PROCESSING.value}'" in query
    grants = (BICEP / "sql-grants.sql").read_text()
    assert "GRANT SELECT ON OBJECT::dbo.documents TO [$(KedaIdentity)]" in grants


def test_max_delivery_count_is_five_times_max_attempts() -> None:
    servicebus = (BICEP / "modules" / "servicebus.bicep").read_text()
    assert re.search(r"^\s*maxDeliveryCount:\s*5 \* sheafMaxAttempts\s*$", servicebus, re.M)
    attempts = {
        int(bicep_default(BICEP / "main.bicep", "sheafMaxAttempts")),
        int(parameters_file()["sheafMaxAttempts"]),
        int(base_env()["SHEAF_MAX_ATTEMPTS"]),
        Settings.model_fields["max_attempts"].default,
    }
    assert len(attempts) == 1, attempts


# -- identities: Bicep outputs, overlays and service accounts -------------------------------------


def overlay_env_keys_from_bicep() -> set[str]:
    main = (BICEP / "main.bicep").read_text()
    block = main.split("output overlayEnv string = join([", 1)[1].split("]", 1)[0]
    return set(re.findall(r"^\s*'([A-Z_]+)=", block, re.M))


def test_bicep_output_overlay_env_and_the_component_agree() -> None:
    from_bicep = overlay_env_keys_from_bicep() | {"IMAGE"}  # IMAGE is added after the build
    assert set(component_targets()) == from_bicep
    for overlay in OVERLAYS:
        assert set(read_env(overlay / "azure.env")[0]) == from_bicep, overlay.name
    assert {k for k in from_bicep if k.startswith("SHEAF_")} <= setting_names()


def test_service_accounts_match_the_federated_credentials() -> None:
    main = BICEP / "main.bicep"
    app_account = bicep_default(main, "appServiceAccount")
    migrator_account = bicep_default(main, "migratorServiceAccount")
    assert pod_spec("Deployment", "sheaf-api")["serviceAccountName"] == app_account
    assert pod_spec("Deployment", "sheaf-worker")["serviceAccountName"] == app_account
    assert pod_spec("Job", "sheaf-migrate")["serviceAccountName"] == migrator_account
    for account in (app_account, migrator_account):
        annotations = doc("ServiceAccount", account)["metadata"]["annotations"]
        assert "azure.workload.identity/client-id" in annotations
    namespaces = {
        yaml.safe_load((o / "kustomization.yaml").read_text())["namespace"] for o in OVERLAYS
    }
    assert parameters_file()["kubernetesNamespace"] in namespaces
    assert bicep_default(main, "kubernetesNamespace") in namespaces


@pytest.mark.parametrize(
    ("kind", "name"),
    [("Deployment", "sheaf-api"), ("Deployment", "sheaf-worker"), ("Job", "sheaf-migrate")],
)
def test_pods_run_locked_down_with_workload_identity(kind: str, name: str) -> None:
    template = doc(kind, name)["spec"]["template"]
    spec = template["spec"]
    assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    security = container(kind, name)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in container(kind, name)["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]], "a writable /tmp on a read-only root"
    resources = container(kind, name)["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    assert {"name": "sheaf-config"} in [e["configMapRef"] for e in container(kind, name)["envFrom"]]


# -- OCR: Azure AI Document Intelligence ----------------------------------------------------------


def bicep_block(text: str, header: str) -> str:
    """The top-level declaration whose first line matches `header`, up to its closing brace."""
    found = re.search(rf"^{header}.*?^\}}$", text, re.M | re.S)
    assert found, f"no declaration matching {header!r}"
    return found[0]


def bicep_allowed(file: Path, param: str) -> list[str]:
    found = re.search(rf"@allowed\(\[([^\]]*)\]\)\s*param\s+{param}\b", file.read_text())
    assert found, f"{file.name} declares no allowed values for {param}"
    return re.findall(r"'([^']*)'", found[1])


def test_the_document_intelligence_account_is_entra_only_and_the_app_may_use_it() -> None:
    module = (BICEP / "modules" / "documentintelligence.bicep").read_text()
    openai = (BICEP / "modules" / "openai.bicep").read_text()
    account = bicep_block(module, r"resource account 'Microsoft\.CognitiveServices/accounts@")
    api_version = re.compile(r"'Microsoft\.CognitiveServices/accounts@([\d-]+)'")
    assert api_version.findall(module) == api_version.findall(openai)[:1]
    assert re.search(r"^\s*kind: 'FormRecognizer'$", account, re.M)
    assert re.search(r"^\s*name: 'S0'$", account, re.M)
    assert re.search(r"^\s*disableLocalAuth: true$", account, re.M), "Entra ID only, no keys"
    assert re.search(r"^\s*customSubDomainName: accountName$", account, re.M), "Entra needs one"
    # Network and identity as the Azure OpenAI account has them; logs to the same workspace.
    for key in ("publicNetworkAccess", "defaultAction", "type"):
        setting = re.compile(rf"^\s*{key}: (.+)$", re.M)
        assert setting.findall(account) == setting.findall(openai)[:1], key
    assert "Microsoft.Insights/diagnosticSettings@" in module
    assert "categoryGroup: 'allLogs'" in module
    # The app identity (API and workers) is a Cognitive Services User on the account.
    role = re.search(r"^var (\w+) = 'a97b65f3-24c7-4388-baec-2e87ef14e83b'", module, re.M)
    assert role, "the Cognitive Services User role id"
    grant = bicep_block(module, r"resource \w+ 'Microsoft\.Authorization/roleAssignments@")
    assert re.search(r"^\s*scope: account$", grant, re.M)
    assert f"roleDefinitions', {role[1]})" in grant
    assert re.search(r"^\s*principalId: appPrincipalId$", grant, re.M)
    assert re.search(r"^output endpoint string = account\.properties\.endpoint$", module, re.M)


def test_main_bicep_creates_document_intelligence_only_when_ocr_engine_chooses_it() -> None:
    main_file = BICEP / "main.bicep"
    main = main_file.read_text()
    field = Settings.model_fields["ocr_engine"]
    assert set(bicep_allowed(main_file, "ocrEngine")) == set(get_args(field.annotation))
    assert bicep_default(main_file, "ocrEngine") == field.default == base_env()["SHEAF_OCR_ENGINE"]
    assert parameters_file()["ocrEngine"] == field.default
    module = bicep_block(
        main, r"module documentIntelligence 'modules/documentintelligence\.bicep' = if \("
    )
    condition = re.match(r"[^\n]*= if \((.+?)\) \{$", module, re.M)
    assert condition
    condition_text = condition[1]
    if re.fullmatch(r"\w+", condition_text):  # a var naming the condition
        defined = re.search(rf"^var {condition_text} = (.+)$", main, re.M)
        assert defined
        condition_text = defined[1]
    assert condition_text.strip() == "ocrEngine == 'azure-document-intelligence'"
    assert re.search(r"^\s*appPrincipalId: identities\.outputs\.appPrincipalId$", module, re.M)
    assert re.search(r"^\s*workspaceId: workspace\.id$", module, re.M)
    assert re.search(
        r"^output documentIntelligenceEndpoint string = .*documentIntelligence\.outputs\.endpoint",
        main,
        re.M,
    )


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda path: path.name)
def test_the_commented_document_intelligence_switch_is_valid_settings(overlay: Path) -> None:
    example = dict(
        re.findall(
            r"^#\s+(SHEAF_OCR_ENGINE|SHEAF_AZURE_DOCUMENT_INTELLIGENCE_\w+)=(\S+)$",
            (overlay / "settings.env").read_text(),
            re.M,
        )
    )
    assert example["SHEAF_OCR_ENGINE"] == "azure-document-intelligence"
    assert "SHEAF_AZURE_DOCUMENT_INTELLIGENCE_KEY" not in example, "no key: workload identity"
    settings = Settings.from_env({**overlay_env(overlay), **example})
    assert settings.ocr_engine == "azure-document-intelligence"
    assert (
        settings.azure_document_intelligence_endpoint
        == example["SHEAF_AZURE_DOCUMENT_INTELLIGENCE_ENDPOINT"]
    )
    assert settings.azure_document_intelligence_key is None
    assert settings.needs_azure_credential


def test_every_setting_named_in_the_deploy_files_and_docs_is_real() -> None:
    files = [p for p in (ROOT / "deploy").rglob("*") if p.is_file()]
    files += [ROOT / "docs" / "deploy.md"]
    unknown: dict[str, set[str]] = {}
    for path in files:
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for name in set(re.findall(r"\bSHEAF_[A-Z0-9_]*[A-Z0-9]\b", text)) - setting_names():
            unknown.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert not unknown, f"not settings of sheaf.config.Settings: {unknown}"
    for name in ("SHEAF_OCR_ENGINE", "SHEAF_AZURE_DOCUMENT_INTELLIGENCE_ENDPOINT"):
        assert name in (ROOT / "docs" / "deploy.md").read_text(), name
