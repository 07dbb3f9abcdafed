#!/usr/bin/env python3
"""Validate Kubernetes manifests offline; run by scripts/chart-lint.sh in its own venv.

Every YAML document in the files given must pass the check for its kind:

- Kubernetes built-in kinds (Deployment, Service, ClusterRole, CustomResourceDefinition, ...):
  the Kubernetes OpenAPI schemas of --kube-version as JSON Schema, strict (an unknown field is an
  error), from the `kubernetes-validate` package, which ships them.
- Ryzanstein's kinds (ryzanstein.dev): the openAPIV3Schema of the matching version in the CRDs
  given with --crds, with unknown fields refused as `kubectl apply` (--validate=strict) refuses
  them. CEL rules (x-kubernetes-validations) are not evaluated here.
- prometheus-operator kinds (monitoring.coreos.com): decoded strictly into that project's Go
  types by the monitoring-validate binary given with --monitoring-validator; every PrometheusRule
  expression is also parsed as PromQL.

Anything else, a document without apiVersion/kind/metadata.name, or a kind no check knows, fails.
`--self-test` feeds known-bad objects through the same checks and fails unless each is refused.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Iterable

import jsonschema
import promql_parser
import yaml
from kubernetes_validate import utils as kv

RYZANSTEIN_GROUP = "ryzanstein.dev"
MONITORING_GROUP = "monitoring.coreos.com"


@dataclass
class Doc:
    source: str
    obj: dict[str, Any]

    @property
    def name(self) -> str:
        meta = self.obj.get("metadata") or {}
        return f"{self.obj.get('kind', '?')}/{meta.get('name', '?')}"


def load_docs(path: str) -> list[Doc]:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    docs = []
    for obj in yaml.safe_load_all(text):
        if obj is None:
            continue
        if not isinstance(obj, dict):
            raise SystemExit(f"{path}: a document is a {type(obj).__name__}, not an object")
        docs.append(Doc(path, obj))
    return docs


# --- CRD openAPIV3Schema -> JSON Schema -------------------------------------------------------


def crd_to_jsonschema(node: Any) -> Any:
    """Translate a structural openAPIV3Schema into JSON Schema with the API server's semantics:
    nullable, int-or-string, preserve-unknown-fields, and unknown properties refused."""
    if isinstance(node, list):
        return [crd_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: crd_to_jsonschema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = crd_to_jsonschema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = crd_to_jsonschema(value)
        elif key.startswith("x-kubernetes-") or key in ("nullable", "description", "example"):
            continue
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    is_object = out.get("type") in ("object", ["object", "null"])
    if (
        is_object
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
        and not node.get("x-kubernetes-embedded-resource")
    ):
        # The API server prunes unknown fields and `kubectl apply` (strict field validation,
        # the default) refuses them; a field the schema does not list is a mistake.
        out["additionalProperties"] = False
    return out


class CrdSchemas:
    def __init__(self, crd_docs: Iterable[Doc]):
        self.by_gvk: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.scope: dict[tuple[str, str], str] = {}
        for doc in crd_docs:
            crd = doc.obj
            if crd.get("kind") != "CustomResourceDefinition":
                raise SystemExit(f"{doc.source}: {doc.name} is not a CustomResourceDefinition")
            spec = crd["spec"]
            group, kind = spec["group"], spec["names"]["kind"]
            self.scope[(group, kind)] = spec["scope"]
            for version in spec["versions"]:
                schema = (version.get("schema") or {}).get("openAPIV3Schema")
                if schema is None:
                    raise SystemExit(f"{doc.source}: {kind} {version['name']} has no openAPIV3Schema")
                js = crd_to_jsonschema(schema)
                props = js.setdefault("properties", {})
                # apiVersion, kind and metadata are the API server's; check their shape only.
                props["apiVersion"] = {"const": f"{group}/{version['name']}"}
                props["kind"] = {"const": kind}
                props["metadata"] = {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 253}},
                }
                js["required"] = sorted(set(js.get("required", [])) | {"apiVersion", "kind", "metadata"})
                jsonschema.Draft7Validator.check_schema(js)
                self.by_gvk[(group, version["name"], kind)] = js

    def validate(self, obj: dict[str, Any]) -> list[str]:
        group, _, version = obj["apiVersion"].partition("/")
        key = (group, version, obj["kind"])
        schema = self.by_gvk.get(key)
        if schema is None:
            known = ", ".join(f"{g}/{v} {k}" for g, v, k in sorted(self.by_gvk)) or "none"
            return [f"no CRD defines {obj['apiVersion']} {obj['kind']} (CRDs loaded: {known})"]
        errors = []
        if self.scope.get((group, obj["kind"])) == "Cluster" and "namespace" in obj["metadata"]:
            errors.append("metadata.namespace is set on a cluster-scoped kind")
        validator = jsonschema.Draft7Validator(schema)
        for err in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
            path = ".".join(str(p) for p in err.absolute_path) or "(root)"
            errors.append(f"{path}: {err.message}")
        return errors


# --- the checks ----------------------------------------------------------------------------


def check_builtin(obj: dict[str, Any], kube_version: str) -> list[str]:
    try:
        kv.validate(obj, kube_version, strict=True)
    except kv.SchemaNotFoundError as e:
        return [e.message]
    except kv.ValidationError as e:
        path = ".".join(str(p) for p in e.absolute_path) or "(root)"
        return [f"{path}: {e.message}"]
    return []


def check_promql(obj: dict[str, Any]) -> list[str]:
    errors = []
    groups = (obj.get("spec") or {}).get("groups") or []
    # A wrong shape is the strict decode's to report; only well-shaped rules are parsed here.
    for g, group in enumerate(groups if isinstance(groups, list) else []):
        rules = group.get("rules") if isinstance(group, dict) else None
        for r, rule in enumerate(rules if isinstance(rules, list) else []):
            if not isinstance(rule, dict):
                continue
            expr = rule.get("expr")
            where = f"spec.groups[{g}].rules[{r}] ({rule.get('alert') or rule.get('record')})"
            if not isinstance(expr, str) or not expr.strip():
                errors.append(f"{where}: expr is missing or not a string")
                continue
            try:
                promql_parser.parse(expr)
            except ValueError as e:
                errors.append(f"{where}: invalid PromQL: {e}: {expr.strip()}")
    return errors


def check_monitoring(docs: list[Doc], validator: str | None) -> dict[int, list[str]]:
    """Strict decode of all monitoring.coreos.com documents in one run of the Go validator."""
    results: dict[int, list[str]] = {}
    if not docs:
        return results
    if not validator:
        return {id(d): ["monitoring.coreos.com kinds need --monitoring-validator"] for d in docs}
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, doc in enumerate(docs):
            path = os.path.join(tmp, f"{i}.yaml")
            with open(path, "w", encoding="utf-8") as f:
                yaml.safe_dump(doc.obj, f, sort_keys=False)
            paths.append(path)
        proc = subprocess.run([validator, *paths], capture_output=True, text=True, check=False)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"{validator} failed ({proc.returncode}): {proc.stderr.strip()}")
        for i, doc in enumerate(docs):
            errs = [
                line.split(": ", 2)[-1]
                for line in proc.stdout.splitlines()
                if line.startswith(f"FAIL {paths[i]}:")
            ]
            if not any(line.startswith(f"ok   {paths[i]}:") for line in proc.stdout.splitlines()) and not errs:
                errs = [f"the monitoring validator did not report on it: {proc.stdout.strip()}"]
            results[id(doc)] = errs
    for doc in docs:
        if doc.obj.get("kind") == "PrometheusRule":
            results[id(doc)] = results.get(id(doc), []) + check_promql(doc.obj)
    return results


def validate_docs(
    docs: list[Doc], kube_version: str, crds: CrdSchemas | None, monitoring_validator: str | None
) -> dict[int, list[str]]:
    results: dict[int, list[str]] = {}
    monitoring = []
    for doc in docs:
        obj = doc.obj
        missing = [k for k in ("apiVersion", "kind") if not isinstance(obj.get(k), str)]
        if missing or not isinstance(obj.get("metadata"), dict) or not obj["metadata"].get("name"):
            results[id(doc)] = ["apiVersion, kind and metadata.name are required"]
            continue
        group = obj["apiVersion"].partition("/")[0] if "/" in obj["apiVersion"] else ""
        if group == RYZANSTEIN_GROUP:
            if crds is None:
                results[id(doc)] = ["ryzanstein.dev kinds need --crds"]
            else:
                results[id(doc)] = crds.validate(obj)
        elif group == MONITORING_GROUP:
            monitoring.append(doc)
        else:
            results[id(doc)] = check_builtin(obj, kube_version)
    results.update(check_monitoring(monitoring, monitoring_validator))
    return results


# --- self-test: each of these must be refused ------------------------------------------------

GOOD_DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "d"},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"a": "b"}},
        "template": {
            "metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}]},
        },
    },
}


def bad_cases(examples: list[Doc]) -> list[tuple[str, dict[str, Any], str]]:
    """(what, object, a text the refusal must contain)."""

    def deployment(edit) -> dict[str, Any]:
        d = copy.deepcopy(GOOD_DEPLOYMENT)
        edit(d)
        return d

    cases: list[tuple[str, dict[str, Any], str]] = [
        ("Deployment with a misspelled field (replica)",
         deployment(lambda d: d["spec"].update(replica=d["spec"].pop("replicas"))), "'replica'"),
        ("Deployment with replicas as a string",
         deployment(lambda d: d["spec"].update(replicas="two")), "'two' is not of type"),
        ("Deployment whose container has no name",
         deployment(lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name")),
         "'name' is a required property"),
        ("Deployment with a probe field in the wrong place",
         deployment(lambda d: d["spec"]["template"]["spec"]["containers"][0].update(
             livenessProbe={"path": "/healthz"})), "'path'"),
        ("Service with a string port",
         {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
          "spec": {"ports": [{"port": "http"}]}}, "'http' is not of type"),
        ("ClusterRole rule with verbs as a string",
         {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r"},
          "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": "get"}]}, "'get' is not of type"),
        ("unknown built-in kind",
         {"apiVersion": "apps/v1", "kind": "Deploymnet", "metadata": {"name": "x"}}, "Deploymnet"),
        ("object without metadata.name",
         {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}, "metadata.name"),
        ("ServiceMonitor with a misspelled endpoint field",
         {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "m"},
          "spec": {"selector": {}, "endpoints": [{"port": "http", "intervall": "30s"}]}}, "intervall"),
        ("PrometheusRule with invalid PromQL",
         {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": {"name": "p"},
          "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "sum(rate(x[5m]) >"}]}]}},
         "invalid PromQL"),
        ("PrometheusRule with rules as an object",
         {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": {"name": "p"},
          "spec": {"groups": [{"name": "g", "rules": {"alert": "A"}}]}}, "cannot unmarshal object"),
        ("an unknown ryzanstein.dev kind",
         {"apiVersion": "ryzanstein.dev/v1alpha1", "kind": "Nope", "metadata": {"name": "x"}}, "Nope"),
    ]
    # Each valid Ryzanstein example, broken three ways: the CRD schema must catch each.
    for doc in examples:
        if not doc.obj.get("apiVersion", "").startswith(RYZANSTEIN_GROUP + "/"):
            continue
        where = f"{doc.name} ({os.path.basename(doc.source)})"
        o = copy.deepcopy(doc.obj)
        o["spec"]["notAField"] = True
        cases.append((f"{where} with an unknown spec field", o, "notAField"))
        o = copy.deepcopy(doc.obj)
        first = next(iter(o["spec"]))
        o["spec"][first] = 12345
        cases.append((f"{where} with spec.{first} as a number", o, "12345"))
        o = copy.deepcopy(doc.obj)
        o["spec"].pop(next(iter(o["spec"])))
        o["spec"] = {}
        cases.append((f"{where} with an empty spec", o, "required"))
    return cases


def self_test(
    kube_version: str, crds: CrdSchemas | None, monitoring_validator: str | None, examples: list[Doc]
) -> int:
    good = [Doc("self-test: a valid Deployment", copy.deepcopy(GOOD_DEPLOYMENT))]
    good += [Doc(f"self-test: {d.source}", d.obj) for d in examples]
    results = validate_docs(good, kube_version, crds, monitoring_validator)
    problems = 0
    for doc in good:
        if errs := results[id(doc)]:
            print(f"self-test FAIL: refused {doc.name} from {doc.source[11:]}: {errs}")
            problems += 1
    cases = bad_cases(examples)
    docs = [(Doc(f"self-test: {what}", obj), expect) for what, obj, expect in cases]
    results = validate_docs([d for d, _ in docs], kube_version, crds, monitoring_validator)
    for doc, expect in docs:
        errs = results[id(doc)]
        if any(expect in e for e in errs):
            print(f"self-test ok: refused {doc.source[11:]}: {errs[0]}")
        elif errs:
            print(f"self-test FAIL: refused {doc.source[11:]}, but not for the expected reason "
                  f"(wanted {expect!r}): {errs}")
            problems += 1
        else:
            print(f"self-test FAIL: accepted {doc.source[11:]}")
            problems += 1
    total = len(good) + len(cases)
    print(f"self-test: {total - problems} of {total} cases behaved as expected")
    return 1 if problems else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", help="multi-document YAML files to validate")
    ap.add_argument("--kube-version", default="1.35.0")
    ap.add_argument("--crd", action="append", default=[], help="a CRD YAML file (repeatable)")
    ap.add_argument("--monitoring-validator", help="path of the monitoring-validate binary")
    ap.add_argument("--self-test", action="store_true",
                    help="check that bad objects are refused; FILES are valid examples to break")
    args = ap.parse_args()

    crds = None
    if args.crd:
        crds = CrdSchemas(d for path in args.crd for d in load_docs(path))
    docs = [d for path in args.files for d in load_docs(path)]
    if args.self_test:
        return self_test(args.kube_version, crds, args.monitoring_validator, docs)
    if not args.files:
        ap.error("no files to validate")

    if not docs:
        print("FAIL: no documents in " + ", ".join(args.files))
        return 1
    results = validate_docs(docs, args.kube_version, crds, args.monitoring_validator)
    failed = 0
    for doc in docs:
        errs = results[id(doc)]
        if errs:
            failed += 1
            for e in errs:
                print(f"FAIL {doc.source}: {doc.name}: {e}")
        else:
            print(f"ok   {doc.source}: {doc.name}")
    print(f"{len(docs) - failed} valid, {failed} invalid (Kubernetes {args.kube_version} schemas, strict)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
