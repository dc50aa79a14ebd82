#!/usr/bin/env python3
"""Checks the Grafana dashboard and the alert rules against the metrics that
Stageworks exports (CI runs it; see deploy/README.md, "How CI checks").

    python3 deploy/grafana/check_queries.py            # from the repository root

Fails (exit 1) when:
- stageworks.json is not valid JSON, or not shaped as the dashboard should be
  (a datasource variable every panel uses, an instance variable, unique
  panel ids, every graph with at least one query);
- a dashboard query or an alert rule names a metric that metrics.txt does
  not list (a histogram allows its _bucket, _sum and _count series; a rule
  may use the rules' own recorded series);
- a metric that metrics.txt marks `exported` no longer appears in the Rust
  sources (renamed or removed: its panels and alerts would go silently empty);
- with --promtool PATH: a dashboard query is not valid PromQL (each one, its
  Grafana variables replaced by sample values, is written into a scratch
  rule file as a recording rule, which `promtool check rules` parses).

Metrics marked `planned` (issue 16) may be used before they exist; the check
lists those still missing from the sources. A metric in the sources but not
in metrics.txt is reported as a warning (add it to the list).

The PromQL "parser" here is a set of regular expressions: good enough to
find the metric names in the queries this repository writes, not a full
grammar. Needs PyYAML for the rules (installed with kubernetes-validate).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

# PromQL words that look like identifiers but are no metric names.
KEYWORDS = {
    "and", "or", "unless", "bool", "by", "without", "on", "ignoring",
    "group_left", "group_right", "offset", "inf", "nan", "atan2",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
SOURCE_DIRS = ("src", "supervision/src", "actors/src")
SOURCE_METRIC = re.compile(
    r'(?:counter|gauge|histogram)!\(\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"'
)


def load_metrics(path: Path) -> dict[str, tuple[str, str]]:
    """name -> (type, status) from metrics.txt."""
    metrics: dict[str, tuple[str, str]] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) < 3 or fields[1] not in ("counter", "gauge", "histogram"):
            raise SystemExit(f"{path}:{number}: expected NAME TYPE STATUS [LABELS], got {line!r}")
        if fields[0] in metrics:
            raise SystemExit(f"{path}:{number}: {fields[0]} listed twice")
        metrics[fields[0]] = (fields[1], fields[2])
    return metrics


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    e = re.sub(r"\$\{[^}]*\}|\$\w+", "1", expr)  # Grafana variables
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', e)  # strings (may hold braces)
    e = re.sub(r"'(?:[^'\\]|\\.)*'", "''", e)
    e = re.sub(r"#[^\n]*", " ", e)  # comments
    e = re.sub(r"\{[^{}]*\}", " ", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)  # ranges, subqueries
    e = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e
    )
    e = re.sub(r"\boffset\s+-?\w+", " ", e)
    found = set()
    for match in re.finditer(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])", e):
        name = match.group(1)
        if name.lower() in KEYWORDS:
            continue
        if re.match(r"\s*\(", e[match.end():]):  # a function call
            continue
        found.add(name)
    return found


def resolve(name: str, metrics: dict[str, tuple[str, str]], recorded: set[str]) -> bool:
    if name in metrics or name in recorded:
        return True
    for suffix in HISTOGRAM_SUFFIXES:
        base = name[: -len(suffix)]
        if name.endswith(suffix) and metrics.get(base, ("", ""))[0] == "histogram":
            return True
    return False


def dashboard_queries(path: Path, errors: list[str]) -> list[tuple[str, str]]:
    """(where, expr) of every query in the dashboard; shape errors appended."""
    try:
        board = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        errors.append(f"{path}: not valid JSON: {err}")
        return []
    queries: list[tuple[str, str]] = []
    if not board.get("uid"):
        errors.append(f"{path}: the dashboard has no uid (provisioning needs a stable one)")
    variables = {v.get("name"): v for v in board.get("templating", {}).get("list", [])}
    if variables.get("datasource", {}).get("type") != "datasource":
        errors.append(f"{path}: no `datasource` variable of type datasource")
    if "instance" not in variables:
        errors.append(f"{path}: no `instance` variable")
    for name, variable in variables.items():
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        inner = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query or "")
        queries.append((f"variable {name}", inner.group(1) if inner else query or ""))

    def walk(panels: list[dict]) -> None:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    ids = set()
    for panel in walk(board.get("panels", [])):
        title = panel.get("title", "?")
        if panel.get("id") in ids:
            errors.append(f"{path}: panel id {panel.get('id')} used twice ({title!r})")
        ids.add(panel.get("id"))
        if "gridPos" not in panel:
            errors.append(f"{path}: panel {title!r} has no gridPos")
        if panel.get("type") in ("row", "text"):
            continue
        uid = (panel.get("datasource") or {}).get("uid")
        if uid != "${datasource}":
            errors.append(f"{path}: panel {title!r} does not use the $datasource variable")
        targets = panel.get("targets", [])
        if not targets:
            errors.append(f"{path}: panel {title!r} has no query")
        for target in targets:
            expr = target.get("expr", "")
            if not expr.strip():
                errors.append(f"{path}: panel {title!r} has an empty query")
            if (target.get("datasource") or {}).get("uid", "${datasource}") != "${datasource}":
                errors.append(f"{path}: a query of {title!r} does not use $datasource")
            queries.append((f"panel {title!r}", expr))
    if not ids:
        errors.append(f"{path}: no panels")
    return queries


def rule_queries(path: Path, errors: list[str]) -> tuple[list[tuple[str, str]], set[str]]:
    import yaml  # only here: the dashboard check needs no third-party module

    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        errors.append(f"{path}: not valid YAML: {err}")
        return [], set()
    queries, recorded = [], set()
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record")
            if rule.get("record"):
                recorded.add(rule["record"])
            queries.append((f"rule {name}", str(rule.get("expr", ""))))
    return queries, recorded


# Sample values of the Grafana variables, for parsing only.
GRAFANA_VARIABLES = {
    "__rate_interval": "1m", "__interval": "1m", "__range": "1h",
    "job": "stageworks", "instance": ".*",
}


def promql_syntax(promtool: str, queries: list[tuple[str, str]], errors: list[str]) -> None:
    """Parses each dashboard query with promtool (as a recording rule)."""
    rules = []
    for number, (where, expr) in enumerate(queries):
        concrete = re.sub(
            r"\$\{(\w+)[^}]*\}|\$(\w+)",
            lambda m: GRAFANA_VARIABLES.get(m.group(1) or m.group(2), "x"),
            expr,
        )
        rules.append({"record": f"dashboard_query_{number}", "expr": concrete})
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as scratch:
        json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, scratch)  # JSON is YAML
    result = subprocess.run([promtool, "check", "rules", scratch.name],
                            capture_output=True, text=True)
    Path(scratch.name).unlink()
    if result.returncode != 0:
        for line in (result.stdout + result.stderr).splitlines():
            match = re.search(r"rule (\d+), \"dashboard_query_\d+\": (.*)", line)
            if match:
                where, expr = queries[int(match.group(1)) - 1]
                errors.append(f"{where}: not valid PromQL: {match.group(2)}")
        if not any("not valid PromQL" in e for e in errors):
            errors.append("promtool check rules failed on the dashboard queries:\n"
                          + result.stdout + result.stderr)


def source_metrics(root: Path) -> tuple[set[str], str]:
    text = []
    for directory in SOURCE_DIRS:
        for file in sorted((root / directory).rglob("*.rs")):
            text.append(file.read_text(errors="replace"))
    text = "\n".join(text)
    return set(SOURCE_METRIC.findall(text)), text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metrics", type=Path, default=HERE / "metrics.txt")
    parser.add_argument("--dashboard", type=Path, action="append")
    parser.add_argument("--rules", type=Path, action="append")
    parser.add_argument("--sources", type=Path, default=ROOT, help="repository root")
    parser.add_argument("--promtool", help="also parse the dashboard's queries with this promtool")
    args = parser.parse_args()
    dashboards = args.dashboard or [HERE / "stageworks.json"]
    rules = args.rules or [ROOT / "deploy/prometheus/alerts.yml"]

    errors: list[str] = []
    metrics = load_metrics(args.metrics)

    exported, source_text = source_metrics(args.sources)
    if not exported:
        errors.append(f"no metric found in {args.sources}/{{{','.join(SOURCE_DIRS)}}}: wrong --sources?")
    planned_missing, planned_present = [], []
    for name, (_, status) in sorted(metrics.items()):
        in_sources = f'"{name}"' in source_text
        if status == "exported" and not in_sources:
            errors.append(f"{args.metrics}: {name} is marked exported but no source names it")
        if status == "planned":
            (planned_present if in_sources else planned_missing).append(name)
    unlisted = sorted(exported - set(metrics))

    queries: list[tuple[str, str]] = []
    recorded: set[str] = set()
    for path in dashboards:
        found = [(f"{path.name}: {w}", q) for w, q in dashboard_queries(path, errors)]
        if args.promtool and found:
            promql_syntax(args.promtool, found, errors)
        queries += found
    for path in rules:
        found, names = rule_queries(path, errors)
        queries += [(f"{path.name}: {w}", q) for w, q in found]
        recorded |= names

    used = set()
    for where, expr in queries:
        names = metric_names(expr)
        if not names:
            errors.append(f"{where}: no metric found in {expr!r}")
        for name in sorted(names):
            used.add(name)
            if not resolve(name, metrics, recorded):
                errors.append(f"{where}: unknown metric {name!r} (not in {args.metrics.name})")

    print(f"{len(queries)} queries checked, {len(used)} distinct series names, "
          f"{len(metrics)} metrics listed")
    if planned_missing:
        print("planned, not in the sources yet (their panels and alerts stay empty): "
              + ", ".join(planned_missing))
    if planned_present:
        print("planned and now in the sources (mark them exported in "
              f"{args.metrics.name}): " + ", ".join(planned_present))
    for name in unlisted:
        print(f"warning: {name} is exported but not in {args.metrics.name}")
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
