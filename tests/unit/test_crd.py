"""The CRDs are generated from spec.py, structural, documented, and committed current."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rheostat.crd import all_crds, study_crd

ROOT = Path(__file__).resolve().parents[2]


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, child in node.get("properties", {}).items():
        found += _walk(child, f"{path}.{name}")
    if "items" in node:
        found += _walk(node["items"], f"{path}[]")
    return found


def _study_schema() -> dict[str, Any]:
    schema: dict[str, Any] = study_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_committed_crds_are_current() -> None:
    committed = list(yaml.safe_load_all((ROOT / "crds" / "rheostat.dev.yaml").read_text()))
    assert committed == all_crds(), "crds/ is stale: run `make crd` and commit the result"


def test_chart_carries_the_same_crds() -> None:
    chart_copy = ROOT / "charts" / "rheostat" / "crds" / "rheostat.dev.yaml"
    if chart_copy.exists():  # the chart arrives with the operator
        assert list(yaml.safe_load_all(chart_copy.read_text())) == all_crds()


def test_schema_is_structural() -> None:
    for path, node in _walk(_study_schema()):
        if path == ".metadata":
            continue  # the API server owns metadata's schema
        assert not {"$ref", "anyOf", "oneOf"} & node.keys(), path
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        if node.get("type") == "object" and "properties" not in node:
            assert node.get("x-kubernetes-preserve-unknown-fields"), path


def test_every_spec_field_has_a_description() -> None:
    spec = _study_schema()["properties"]["spec"]
    fields = [(path, node) for path, node in _walk(spec) if path and not path.endswith("[]")]
    missing = [path for path, node in fields if "description" not in node]
    assert missing == []


def test_cross_field_rules_become_cel_with_field_paths() -> None:
    spec = _study_schema()["properties"]["spec"]
    parameter_rules = spec["properties"]["parameters"]["items"]["x-kubernetes-validations"]
    messages = {r["message"]: r for r in parameter_rules}
    assert messages["max must be greater than min"]["fieldPath"] == ".max"
    assert "self.min < self.max" in messages["max must be greater than min"]["rule"]
    spec_rules = {r["message"] for r in spec["x-kubernetes-validations"]}
    assert any("grid search" in m for m in spec_rules)


def test_only_the_budget_may_change() -> None:
    spec = _study_schema()["properties"]["spec"]
    for name, node in spec["properties"].items():
        transition = [r for r in node.get("x-kubernetes-validations", []) if "oldSelf" in r["rule"]]
        assert bool(transition) == (name != "budget"), name


def test_printer_columns_and_names() -> None:
    crd = study_crd()
    names = crd["spec"]["names"]
    assert names["shortNames"] == ["tstudy"]
    assert names["categories"] == ["rheostat"]
    columns = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Phase", "Done", "Total", "Best", "LR", "ETA", "Age"]
    assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_status_keeps_unknown_fields_for_kopf() -> None:
    assert _study_schema()["properties"]["status"]["x-kubernetes-preserve-unknown-fields"] is True


def test_rules_cel_cannot_see_have_a_schema_twin() -> None:
    """A categorical's values are untyped (hidden from CEL): the schema refuses
    duplicates (a set) and NUL bytes (a pattern) at the same field."""
    parameter = _study_schema()["properties"]["spec"]["properties"]["parameters"]["items"]
    values = parameter["properties"]["values"]
    assert values["x-kubernetes-list-type"] == "set"
    assert values["items"]["pattern"] == "^[^\\x00]*$"
    assert values["items"]["x-kubernetes-preserve-unknown-fields"] is True
