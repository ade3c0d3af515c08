"""Lint a Grafana dashboard: Grafana's schema, and the kube-prometheus conventions.

Used by hack/dashboards.py --check (run by `make lint`). Grafana's own dashboard-linter is
a Go module that is not served here, so the two checks it would make live here instead:

- schema: the dashboard is parsed back through grafana-foundation-sdk's typed models (panel
  options and Prometheus queries included); a key they drop or change is not Grafana schema;
- conventions: a `datasource` variable that every panel and query uses, `$__rate_interval`
  as the window of every rate()/increase() over a graph, and `namespace` and `study`
  variables on the study dashboard.
"""

from __future__ import annotations

import json
import re
from typing import Any

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import dashboard as model


def _panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    found: list[dict[str, Any]] = []
    for panel in board.get("panels", []):
        found += [panel, *panel.get("panels", [])]
    return found


# rate(), irate() or increase() and its argument, which may hold one level of parentheses.
RANGE_FUNCTION = re.compile(r"\b(i?rate|increase)\(([^()]*(?:\([^()]*\))?[^()]*)\)")


def convention_errors(name: str, board: dict[str, Any]) -> list[str]:
    """Where a dashboard breaks the kube-prometheus conventions this chart follows."""
    errors: list[str] = []
    variables = {v["name"]: v for v in board.get("templating", {}).get("list", [])}
    if variables.get("datasource", {}).get("type") != "datasource":
        errors.append(f"{name}: no `datasource` variable of type datasource")
    for panel in _panels(board):
        if panel.get("type") == "row":
            continue
        title = panel.get("title", "?")
        refs = [panel.get("datasource"), *(t.get("datasource") for t in panel.get("targets", []))]
        if any((ref or {}).get("uid") != "${datasource}" for ref in refs):
            errors.append(f"{name} / {title}: datasource is not ${{datasource}}")
        for target in panel.get("targets", []):
            for function, body in RANGE_FUNCTION.findall(target.get("expr", "")):
                # $__range is the one other window kube-prometheus allows: a stat's total
                # over the dashboard's time range, queried as an instant vector.
                window = re.search(r"\[([^\]]+)\]\s*$", body)
                allowed = {"$__rate_interval"} | ({"$__range"} if target.get("instant") else set())
                if not window or window.group(1) not in allowed:
                    errors.append(f"{name} / {title}: {function}() without $__rate_interval")
    if name == "study.json":
        errors += [
            f"{name}: no `{var}` template variable"
            for var in ("namespace", "study")
            if variables.get(var, {}).get("type") != "query"
        ]
    return errors


def _pruned(value: Any) -> Any:
    """JSON without the empty values the SDK omits on output, so a round trip compares."""
    if isinstance(value, dict):
        items = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in items.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def _lost(before: Any, after: Any, path: str = "") -> list[str]:
    """Paths present in `before` that a round trip did not bring back unchanged."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [p for k, v in before.items() for p in _lost(v, after.get(k), f"{path}.{k}")]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [
            p
            for i, (b, a) in enumerate(zip(before, after, strict=True))
            for p in _lost(b, a, f"{path}[{i}]")
        ]
    return [] if before == after else [path or "."]


def schema_errors(name: str, text: str) -> list[str]:
    """Keys the SDK's typed dashboard model drops or changes when it parses the file back."""
    register_default_plugins()  # so panel options and queries parse as their typed models
    data = _pruned(json.loads(text))
    again = _pruned(json.loads(json.dumps(model.Dashboard.from_json(data), cls=JSONEncoder)))
    return [f"{name}: {path} is not in Grafana's dashboard schema" for path in _lost(data, again)]
