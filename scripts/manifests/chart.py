#!/usr/bin/env python3
"""Lints and renders the Helm chart deploy/helm/meshdns with Helm's own
library (PyPI helm-python-sdk: no helm binary, no cluster).

For every values file in deploy/helm/parity/ (and the chart's ci/) it lints (strict: warnings
are errors, info is not) and renders the chart into
target/rendered/helm_<name>.yaml, which scripts/check-manifests then
validates with kubernetes-validate and scripts/manifests/check.py checks.
Values that must be refused (values.schema.json, the chart's own checks)
are tried too: rendering them must fail.

Usage: chart.py OUT_DIR
"""

import json
import pathlib
import sys

import helm_python as helm
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy/helm/meshdns"
PARITY = ROOT / "deploy/helm/parity"
NAMESPACE = "meshdns-system"

# Values the chart must refuse, and why.
REFUSED = {
    "member mode without a cluster name": {"mode": "member", "member": {"registries": ["https://a.example:7443"]}},
    "member mode without registries": {"mode": "member", "member": {"cluster": "east-1"}},
    "an unknown mode": {"mode": "both"},
    "a misspelt key": {"hub": {"replica": 3}},
    "a plaintext registry": {"mode": "member", "member": {"cluster": "east-1", "registries": ["http://a.example:7443"]}},
    "a cluster name that is not a DNS label": {"mode": "member", "member": {"cluster": "East_1", "registries": ["https://a.example:7443"]}},
}


def render(chart, values):
    files = chart.render(values, name="meshdns", namespace=NAMESPACE)
    docs = []
    for path in sorted(files):
        if path.endswith("NOTES.txt"):
            continue
        text = files[path].strip()
        if text:
            docs.append(f"# Source: {path}\n{text}")
    return "\n---\n".join(docs) + "\n"


def leaves(values, prefix=""):
    """Dotted paths of the values' keys, down to lists and MESHDNS_* maps."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in ("config", "annotations", "resources"):
            yield from leaves(value, path + ".")
        else:
            yield path


def documented():
    """Every value is in the chart README's table and in values.schema.json."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    schema = json.loads((CHART / "values.schema.json").read_text())
    missing = []
    for path in leaves(values):
        node = schema
        for part in path.split("."):
            node = node.get("properties", {}).get(part)
            if node is None:
                missing.append(f"{path}: not in values.schema.json")
                break
        # `member.region`, `member.zone` share a row.
        if f"`{path}`" not in readme:
            missing.append(f"{path}: not in README.md")
    return missing


def main():
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    failed = False
    missing = documented()
    for m in missing:
        print(f"FAIL chart value undocumented: {m}", file=sys.stderr)
    failed |= bool(missing)
    if not missing:
        print("ok   every chart value is in README.md and values.schema.json")
    chart = helm.Chart.load(str(CHART))
    for values_file in sorted(PARITY.glob("*.yaml")) + sorted((CHART / "ci").glob("*-values.yaml")):
        values = yaml.safe_load(values_file.read_text()) or {}
        report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
        problems = [m for m in report["messages"] if m["severity"] >= 2] + [
            {"error": e} for e in report["errors"]
        ]
        if problems:
            print(f"FAIL lint {values_file.name}: {json.dumps(problems)}", file=sys.stderr)
            failed = True
            continue
        try:
            manifest = render(chart, values)
        except helm.HelmError as e:
            print(f"FAIL render {values_file.name}: {e}", file=sys.stderr)
            failed = True
            continue
        stem = values_file.stem if values_file.parent == PARITY else "ci_" + values_file.stem.removesuffix("-values")
        target = out / f"helm_{stem}.yaml"
        target.write_text(manifest)
        kinds = sum(1 for d in yaml.safe_load_all(manifest) if d)
        print(f"ok   helm lint + render {values_file.name} ({kinds} objects)")
    for why, values in REFUSED.items():
        try:
            render(chart, values)
        except helm.HelmError:
            print(f"ok   helm refuses {why}")
            continue
        print(f"FAIL helm renders {why}", file=sys.stderr)
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
