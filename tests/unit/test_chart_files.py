"""The Helm chart's files, checked without helm or a cluster.

Every values key is documented, the values schema is a valid JSON Schema that
accepts the chart's own values files, the dashboards are well-formed Grafana JSON
with a query in every panel, and the chart's CRDs are the canonical ones. Rendering,
linting and running the chart's RBAC against an API server is
tests/integration/test_chart.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "rheostat"
DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
KEY = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][\w./-]*|\"[^\"]+\")\s*:(\s|$)")


def _values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return schema


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of a values file over values.yaml (maps merge, the rest replaces)."""
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merged(result[key], value)
        else:
            result[key] = value
    return result


def _structurally_valid(instance: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """A small subset of JSON Schema (type, properties, additionalProperties, items, enum)."""
    kinds: dict[str, type | tuple[type, ...]] = {
        "object": dict,
        "array": list,
        "string": str,
        "boolean": bool,
        "integer": int,
        "number": (int, float),
    }
    problems: list[str] = []
    expected = schema.get("type")
    wrong_type = expected is not None and (
        not isinstance(instance, kinds[expected])
        or (expected in ("integer", "number") and isinstance(instance, bool))
    )
    if wrong_type:
        return [f"{path or '/'}: expected {expected}, got {type(instance).__name__}"]
    if "enum" in schema and instance not in schema["enum"]:
        problems.append(f"{path}: {instance!r} not in {schema['enum']}")
    if isinstance(instance, dict):
        properties = schema.get("properties", {})
        for key, value in instance.items():
            if key in properties:
                problems += _structurally_valid(value, properties[key], f"{path}/{key}")
            elif schema.get("additionalProperties") is False:
                problems.append(f"{path}/{key}: not allowed")
            elif isinstance(schema.get("additionalProperties"), dict):
                problems += _structurally_valid(
                    value, schema["additionalProperties"], f"{path}/{key}"
                )
    if isinstance(instance, list) and "items" in schema:
        for index, item in enumerate(instance):
            problems += _structurally_valid(item, schema["items"], f"{path}/{index}")
    return problems


def _validation_errors(instance: Any) -> list[str]:
    try:
        import jsonschema  # type: ignore[import-untyped]  # no stubs installed
    except ImportError:  # not a declared dependency: fall back to the structural subset
        return _structurally_valid(instance, _schema())
    validator = jsonschema.Draft7Validator(_schema())
    return [f"/{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(instance)]


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found += panel.get("panels", [])  # panels inside collapsed rows
    return found


# ----- values.yaml ----------------------------------------------------------------------


def test_every_values_key_has_a_comment_above_it() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for number, line in enumerate(lines):
        match = KEY.match(line)
        if not match or line.lstrip().startswith("#"):
            continue
        above = lines[number - 1].strip() if number else ""
        if not above.startswith("#"):
            undocumented.append(f"values.yaml:{number + 1}: {match['key']}")
    assert undocumented == []


def test_values_keys_the_brief_names_exist() -> None:
    values = _values()
    assert values["replicaCount"] == 1
    assert set(values["image"]) == {"repository", "tag", "digest", "pullPolicy"}
    assert values["admissionPolicy"]["enabled"] is True
    assert values["readinessProbe"]["enabled"] is True
    assert values["networkPolicy"]["enabled"] is False
    assert values["watchNamespaces"] == []
    assert values["metrics"]["port"] == 8080
    assert values["livenessProbe"]["port"] == 8081
    assert values["livenessProbe"]["path"] == "/healthz"
    assert values["grafana"]["dashboards"]["labels"] == {"grafana_dashboard": "1"}
    for key in ("create", "name", "annotations"):
        assert key in values["serviceAccount"]
    for key in ("rbac", "resources", "nodeSelector", "tolerations", "affinity"):
        assert key in values
    assert values["podMonitor"]["enabled"] is False
    assert values["serviceMonitor"]["enabled"] is False


# ----- values.schema.json ---------------------------------------------------------------


def test_values_schema_is_a_valid_json_schema() -> None:
    schema = _schema()
    assert schema["type"] == "object"
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft7Validator.check_schema(schema)


def test_schema_describes_every_top_level_key() -> None:
    properties = _schema()["properties"]
    assert set(_values()) <= set(properties)
    assert all("description" in node for node in properties.values())


def test_default_values_validate() -> None:
    assert _validation_errors(_values()) == []


@pytest.mark.parametrize("path", CI_VALUES, ids=lambda p: p.name)
def test_ci_values_validate(path: Path) -> None:
    override = yaml.safe_load(path.read_text())
    assert _validation_errors(_merged(_values(), override)) == []


@pytest.mark.parametrize(
    ("override", "where"),
    [
        ({"replicaCount": 2, "leaderElection": {"enabled": False}}, "replicaCount"),
        ({"replicaCount": -1}, "replicaCount"),
        ({"leaderElection": {"enabled": "yes"}}, "enabled"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "watchNamespaces"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"podMonitor": {"enabeld": True}}, "enabeld"),
        ({"resyncInterval": "fast"}, "resyncInterval"),
    ],
)
def test_schema_rejects_bad_values(override: dict[str, Any], where: str) -> None:
    pytest.importorskip("jsonschema")
    errors = _validation_errors(_merged(_values(), override))
    assert errors
    assert any(where in error for error in errors), errors


def test_ci_values_exist_for_both_modes() -> None:
    names = {p.name for p in CI_VALUES}
    assert {"default-values.yaml", "namespaced-values.yaml"} <= names
    namespaced = yaml.safe_load((CHART / "ci" / "namespaced-values.yaml").read_text())
    assert namespaced["watchNamespaces"]


# ----- dashboards -----------------------------------------------------------------------


def test_both_dashboards_are_shipped() -> None:
    assert {p.name for p in DASHBOARDS} == {"overview.json", "study.json"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_grafana_json_with_a_query_per_panel(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["title"].startswith("Rheostat")
    assert dashboard["uid"]
    panels = _panels(dashboard)
    assert panels
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {path.name}: {ids}"
    for panel in panels:
        if panel["type"] == "row":
            continue
        targets = panel.get("targets") or []
        assert any(t.get("expr") for t in targets), f"{path.name}: panel {panel['title']!r}"
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_datasource_is_a_template_variable(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in _panels(dashboard):
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == "${datasource}"
    # Every $variable a query uses is defined (Grafana's built-ins aside).
    text = path.read_text()
    used = set(re.findall(r"\$(\w+)", text)) - {"__rate_interval", "__range", "__interval"}
    assert used <= set(variables), used - set(variables)


def test_study_dashboard_selects_by_namespace_and_study() -> None:
    dashboard = json.loads((CHART / "dashboards" / "study.json").read_text())
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"namespace", "study"} <= variables
    for panel in _panels(dashboard):
        exprs = [t["expr"] for t in panel["targets"]]
        assert any('study="$study"' in e for e in exprs), panel["title"]


# ----- CRDs -----------------------------------------------------------------------------


def test_chart_crds_are_an_exact_copy_of_crds() -> None:
    chart_copy = CHART / "crds" / "rheostat.dev.yaml"
    canonical = ROOT / "crds" / "rheostat.dev.yaml"
    assert chart_copy.read_bytes() == canonical.read_bytes(), "run hack/sync-chart-crds.sh"


def test_chart_yaml() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "rheostat"
    assert chart["appVersion"] == "0.1.0"
