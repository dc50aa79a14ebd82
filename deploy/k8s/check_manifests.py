#!/usr/bin/env python3
"""Offline checks of the Kubernetes manifests in deploy/k8s (CI runs it).

    python3 deploy/k8s/check_manifests.py        # from anywhere

Fails (exit 1) when:
- a manifest does not match the Kubernetes OpenAPI schema (strict: unknown
  fields are errors too) of the oldest and the newest version checked, with
  the schemas bundled in the PyPI package kubernetes-validate (no cluster,
  no network); a kind it has no schema for is an error, not a warning;
- base/kustomization.yaml and the files in base/ disagree (a manifest not
  applied, or a resource that does not exist);
- the drain does not fit: terminationGracePeriodSeconds must cover the
  preStop sleep plus twice server.shutdown_timeout (in-flight requests,
  then each worker's message), as deploy/README.md explains;
- a probe names a port the container does not declare, or the container
  loses its non-root / read-only-root settings;
- a ConfigMap or Secret key is not a STAGEWORKS__ override (a typo there
  would be ignored silently by the process).

Kustomize patches (*-patch.yaml) are partial objects and not schema-checked
alone; when kubectl is on the PATH, the rendered output of each
kustomization (`kubectl kustomize`, offline) is checked as a whole instead.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml

HERE = Path(__file__).resolve().parent
# The oldest Kubernetes these manifests are meant for, and the newest the
# package knows. policy/v1 PDB's unhealthyPodEvictionPolicy needs 1.27+
# (beta, on by default), autoscaling/v2 1.23+.
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())

errors: list[str] = []


def error(message: str) -> None:
    errors.append(message)


def documents(text: str, where: str) -> list[dict]:
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        error(f"{where}: not valid YAML: {err}")
        return []


def validate(doc: dict, where: str) -> None:
    name = f"{doc.get('kind', '?')}/{(doc.get('metadata') or {}).get('name', '?')}"
    for version in VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = "/".join(str(p) for p in err.path)
            error(f"{where}: {name} invalid for Kubernetes {version} at {path or '(top)'}: {err.message}")
        except kubernetes_validate.SchemaNotFoundError as err:
            error(f"{where}: {name}: Kubernetes {version} has no {doc.get('kind')!r} "
                  f"in {doc.get('apiVersion')!r} (a typo in kind or apiVersion?)")
            del err
        except Exception as err:  # a broken document can upset the validator itself
            error(f"{where}: {name}: cannot validate for Kubernetes {version}: {err!r}")


def seconds(duration: str) -> float:
    """A Stageworks duration ("30s", "1m", "500ms") in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*", duration)
    if not match:
        raise ValueError(f"unreadable duration {duration!r}")
    return float(match.group(1)) * units[match.group(2)]


def check_objects(objects: list[tuple[str, dict]]) -> None:
    """Cross-object rules on one set of objects (base, or a rendered overlay)."""
    config = {}
    for where, doc in objects:
        if doc.get("kind") in ("ConfigMap", "Secret"):
            for section in ("data", "stringData"):
                for key, value in (doc.get(section) or {}).items():
                    if not key.startswith("STAGEWORKS__") and key != "STAGEWORKS_CONFIG":
                        error(f"{where}: {doc['kind']} key {key!r} is not a STAGEWORKS__SECTION__KEY override")
                    config[key] = value
    for where, doc in objects:
        if doc.get("kind") != "Deployment":
            continue
        pod = doc["spec"]["template"]["spec"]
        grace = pod.get("terminationGracePeriodSeconds", 30)
        for container in pod.get("containers", []):
            cname = container.get("name")
            ports = {p.get("name") for p in container.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                spec = container.get(probe)
                if not spec:
                    error(f"{where}: container {cname} has no {probe}")
                    continue
                port = (spec.get("httpGet") or {}).get("port")
                if isinstance(port, str) and port not in ports:
                    error(f"{where}: {probe} of {cname} names port {port!r}, not declared ({sorted(ports)})")
            security = container.get("securityContext") or {}
            if security.get("readOnlyRootFilesystem") is not True:
                error(f"{where}: container {cname} must keep readOnlyRootFilesystem: true")
            if security.get("allowPrivilegeEscalation") is not False:
                error(f"{where}: container {cname} must keep allowPrivilegeEscalation: false")
            pre_stop = ((container.get("lifecycle") or {}).get("preStop") or {})
            command = (pre_stop.get("exec") or {}).get("command") or []
            sleep = float(command[1]) if len(command) == 2 and command[0] == "sleep" else 0.0
            if "sleep" in pre_stop:
                sleep = float(pre_stop["sleep"].get("seconds", 0))
            shutdown = seconds(config.get("STAGEWORKS__SERVER__SHUTDOWN_TIMEOUT", "30s"))
            needed = sleep + 2 * shutdown
            if grace < needed:
                error(f"{where}: terminationGracePeriodSeconds {grace} < preStop {sleep:g} s + "
                      f"2 x server.shutdown_timeout {shutdown:g} s = {needed:g} s: the drain would be SIGKILLed")
        if (pod.get("securityContext") or {}).get("runAsNonRoot") is not True:
            error(f"{where}: the pod must keep runAsNonRoot: true")


def check_kustomization(directory: Path) -> None:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    listed = set(kustomization.get("resources", []))
    present = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
    for name in sorted(present - listed):
        if not name.endswith("-patch.yaml"):
            error(f"{directory.name}/{name} is not in {directory.name}/kustomization.yaml's resources")
    for name in sorted(listed):
        if not name.startswith("..") and not (directory / name).exists():
            error(f"{directory.name}/kustomization.yaml lists {name}, which does not exist")


def main() -> int:
    manifests = sorted(
        p for p in HERE.rglob("*.yaml")
        if p.name != "kustomization.yaml" and not p.name.endswith("-patch.yaml")
    )
    base: list[tuple[str, dict]] = []
    count = 0
    for path in manifests:
        where = str(path.relative_to(HERE.parent.parent))
        for doc in documents(path.read_text(), where):
            validate(doc, where)
            count += 1
            if path.parent.name == "base":
                base.append((where, doc))
    check_objects(base)
    for kustomization in sorted(HERE.rglob("kustomization.yaml")):
        check_kustomization(kustomization.parent)

    rendered = 0
    kubectl = shutil.which("kubectl")
    if kubectl:
        for kustomization in sorted(HERE.rglob("kustomization.yaml")):
            directory = kustomization.parent
            where = f"kubectl kustomize {directory.relative_to(HERE.parent.parent)}"
            result = subprocess.run([kubectl, "kustomize", str(directory)],
                                    capture_output=True, text=True, timeout=120)
            if result.returncode != 0:
                error(f"{where}: {result.stderr.strip()}")
                continue
            docs = documents(result.stdout, where)
            for doc in docs:
                validate(doc, where)
            check_objects([(where, d) for d in docs])
            rendered += 1

    print(f"{count} manifests in {len(manifests)} files checked against Kubernetes "
          f"{' and '.join(VERSIONS)} (kubernetes-validate {kubernetes_validate.version.__version__}, strict)")
    if kubectl:
        print(f"{rendered} kustomizations rendered with kubectl and checked")
    else:
        print("kubectl not found: the kustomizations' rendered output (patches) is not checked")
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
