"""Validate rendered Kubernetes manifests offline; deploy/check.sh runs it on every overlay.

    python deploy/k8s/schemas/validate.py RENDERED.yaml --builtins-out BUILTIN.yaml

Custom resources (a group with a dot that is not *.k8s.io: keda.sh, monitoring.coreos.com)
are validated here against this folder's schemas, `<kind>-<group>-<version>.json`, made
strict: every object that lists its properties rejects any other (as the API server's
structural-schema pruning would silently drop it, a typo must fail here instead).
`metadata` is checked against the ObjectMeta fields manifests may set. A custom resource
with no schema here is an error, never a silent pass.

Built-in kinds are written to `--builtins-out` for `kubernetes-validate --strict`, which
knows the Kubernetes API's own schemas. Needs PyYAML and jsonschema (both come with
kubernetes-validate, the `deploy` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml

HERE = Path(__file__).resolve().parent
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT_META = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": DNS_SUBDOMAIN},
        "namespace": {"type": "string", "maxLength": 63, "pattern": DNS_SUBDOMAIN},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
    "required": ["name"],
    "additionalProperties": False,
}


def is_custom(api_version: str) -> bool:
    """keda.sh/v1alpha1 is custom; apps/v1, v1 and networking.k8s.io/v1 are built in."""
    group = api_version.rpartition("/")[0]
    return "." in group and not group.endswith(".k8s.io")


def schema_path(doc: dict[str, Any]) -> Path:
    group, _, version = doc["apiVersion"].rpartition("/")
    return HERE / f"{doc['kind'].lower()}-{group}-{version}.json"


def strict(node: Any) -> Any:
    """A copy of `node` where objects listing `properties` allow no others."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    copy = {key: strict(value) for key, value in node.items()}
    opaque = copy.get("x-kubernetes-preserve-unknown-fields") is True
    if "properties" in copy and "additionalProperties" not in copy and not opaque:
        copy["additionalProperties"] = False
    return copy


def load_schema(doc: dict[str, Any]) -> dict[str, Any]:
    path = schema_path(doc)
    if not path.is_file():
        raise LookupError(
            f"no schema for {doc['apiVersion']} {doc['kind']}: add {path.name} to "
            f"{HERE} (from the upstream CRD's openAPIV3Schema)"
        )
    schema = strict(json.loads(path.read_text()))
    schema["properties"]["metadata"] = OBJECT_META
    return schema


def errors_of(doc: dict[str, Any]) -> list[str]:
    """Every schema violation of one custom resource, as `path: message` lines."""
    validator = jsonschema.Draft202012Validator(load_schema(doc))
    found = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in found]


def name_of(doc: dict[str, Any]) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def check(docs: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Validate the custom resources; return the failures and the built-in documents."""
    failures: list[str] = []
    builtins: list[dict[str, Any]] = []
    for doc in docs:
        if not is_custom(doc["apiVersion"]):
            builtins.append(doc)
            continue
        try:
            problems = errors_of(doc)
        except LookupError as exc:
            problems = [str(exc)]
        failures += [f"{name_of(doc)}: {problem}" for problem in problems]
        if not problems:
            print(f"ok    {doc['apiVersion']} {name_of(doc)} ({schema_path(doc).name})")
    return failures, builtins


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rendered", type=Path, help="output of `kubectl kustomize OVERLAY`")
    parser.add_argument("--builtins-out", type=Path, required=True)
    args = parser.parse_args(argv)
    docs = [doc for doc in yaml.safe_load_all(args.rendered.read_text()) if doc]
    failures, builtins = check(docs)
    args.builtins_out.write_text(yaml.safe_dump_all(builtins, sort_keys=False))
    for failure in failures:
        print(f"FAIL  {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
