"""Generate the CustomResourceDefinitions from the spec models.

The API server only accepts *structural* OpenAPI v3 schemas: every node typed, no
`$ref`, no `anyOf` that declares types. Pydantic's JSON Schema is close but not
that, so this module walks it, inlines definitions, drops `null` from optional
fields and turns open objects into `x-kubernetes-preserve-unknown-fields`. The
cross-field :class:`rheostat.spec.Rule` objects become `x-kubernetes-validations`
(CEL) on the same nodes, so `kubectl apply` and `rheostat validate` agree.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from rheostat.pod_spec_fields import POD_SPEC_FIELDS
from rheostat.spec import API_GROUP, API_VERSION, SpecModel, StudySpec

JsonSchema = dict[str, Any]

_DROPPED_KEYS = {"title", "additionalProperties", "$defs"}
_SCALAR_TYPES = {"string", "integer", "number", "boolean"}
# Only the budget may change once a study runs; everything else defines what the
# finished trials mean, so changing it would silently mix two different studies.
MUTABLE_SPEC_FIELDS = ("budget",)


def _model_rules(root: type[BaseModel]) -> dict[str, type[SpecModel]]:
    """Map each JSON Schema definition name to its model, to attach its rules."""
    found: dict[str, type[SpecModel]] = {}
    pending: list[type[BaseModel]] = [root]
    while pending:
        model = pending.pop()
        if issubclass(model, SpecModel):
            found[model.__name__] = model
        for info in model.model_fields.values():
            for arg in _type_args(info.annotation):
                if (
                    isinstance(arg, type)
                    and issubclass(arg, BaseModel)
                    and arg.__name__ not in found
                ):
                    pending.append(arg)
    return found


def _type_args(annotation: Any) -> list[Any]:
    args = list(getattr(annotation, "__args__", ()) or ())
    nested = [a for arg in args for a in _type_args(arg)]
    return [annotation, *args, *nested]


class _Converter:
    """Turns one Pydantic JSON Schema into a structural schema."""

    def __init__(self, schema: JsonSchema, models: dict[str, type[SpecModel]]) -> None:
        self.defs: dict[str, JsonSchema] = schema.get("$defs", {})
        self.models = models

    def convert(self, node: JsonSchema, model_name: str | None = None) -> JsonSchema:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            merged = {**self.defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
            return self.convert(merged, name)
        if "anyOf" in node:
            return self._convert_union(node)
        out: JsonSchema = {}
        for key, value in node.items():
            if key in _DROPPED_KEYS or key == "properties":
                continue
            if key == "const":
                out["enum"] = [value]
            elif key == "exclusiveMinimum":
                out["minimum"] = value
                out["exclusiveMinimum"] = True
            elif key == "exclusiveMaximum":
                out["maximum"] = value
                out["exclusiveMaximum"] = True
            elif key == "items":
                out["items"] = self.convert(value)
            else:
                # A copy: a model used twice (objective, objectives) must not share
                # lists, or the YAML dump writes anchors and aliases.
                out[key] = copy.deepcopy(value)
        if "properties" in node:
            out["type"] = "object"
            out["properties"] = {k: self.convert(v) for k, v in node["properties"].items()}
        if out.get("type") == "object" and "properties" not in out:
            out["x-kubernetes-preserve-unknown-fields"] = True
        elif out.get("type") == "object" and node.get("additionalProperties") is not False:
            # Pass-through models (pod spec, containers) keep fields we do not model.
            out["x-kubernetes-preserve-unknown-fields"] = True
        if "const" in node and "type" not in out:
            out["type"] = "string"
        if model_name in self.models:
            out.update(_validations(self.models[model_name]))
            _merge_schema_twins(out, self.models[model_name])
        return out

    def _convert_union(self, node: JsonSchema) -> JsonSchema:
        members = [m for m in node["anyOf"] if m.get("type") != "null"]
        extra = {k: v for k, v in node.items() if k not in {"anyOf", "default"}}
        if node.get("default") is not None:
            extra["default"] = node["default"]
        extra.pop("title", None)
        if len(members) == 1:
            return self.convert({**members[0], **extra})
        if all(m.get("type") in _SCALAR_TYPES for m in members):
            # A categorical value may be a string, number or boolean.
            return {**extra, "x-kubernetes-preserve-unknown-fields": True}
        raise ValueError(f"cannot express union {members} in a structural schema")


def _validations(model: type[SpecModel]) -> JsonSchema:
    rules = [
        {"rule": r.cel, "message": r.message, **({"fieldPath": r.field} if r.field else {})}
        for r in model.rules
        if r.cel is not None
    ]
    return {"x-kubernetes-validations": rules} if rules else {}


def _merge_schema_twins(node: JsonSchema, model: type[SpecModel]) -> None:
    """Give each field the schema keywords of the rules CEL cannot check there."""
    for rule in model.rules:
        if rule.schema is not None:
            _deep_merge(node["properties"][rule.field.removeprefix(".")], rule.schema)


def _deep_merge(target: JsonSchema, extra: Any) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _kind_schema(kind: str, items: str | None) -> JsonSchema:
    node: JsonSchema = {"type": kind}
    if kind == "object":
        node["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "array":
        node["items"] = _kind_schema(items or "object", None)
    return node


def _declare_pod_spec(pod_spec: JsonSchema) -> None:
    """Declare every PodSpec field, so an unknown one is refused (strict field validation,
    as kubectl asks) or pruned, never handed to the client library that would refuse
    every Job. Nested objects stay open: one level keeps the CRD small."""
    pod_spec.pop("x-kubernetes-preserve-unknown-fields", None)
    for name, (kind, items) in POD_SPEC_FIELDS.items():
        if name not in pod_spec["properties"]:
            pod_spec["properties"][name] = {
                **_kind_schema(kind, items),
                "description": "PodSpec field, passed to trial pods unchanged.",
            }


def spec_schema() -> JsonSchema:
    """The structural schema of a TuningStudy's spec."""
    raw = StudySpec.model_json_schema(by_alias=True, mode="validation")
    schema = _Converter(raw, _model_rules(StudySpec)).convert(raw, "StudySpec")
    for info in StudySpec.model_fields.values():
        if info.default_factory is not None and info.alias:
            # `{}` lets the API server fill in the nested defaults of an omitted block.
            schema["properties"][info.alias]["default"] = {}
    _declare_pod_spec(schema["properties"]["trialTemplate"]["properties"]["spec"])
    params = schema["properties"]["parameters"]
    # List-map semantics make the API server reject duplicate parameter names itself.
    params["x-kubernetes-list-type"] = "map"
    params["x-kubernetes-list-map-keys"] = ["name"]
    for name, prop in schema["properties"].items():
        if name not in MUTABLE_SPEC_FIELDS:
            prop.setdefault("x-kubernetes-validations", []).append(
                {
                    "rule": "self == oldSelf",
                    "message": f"{name} cannot change once a study exists; only budget can",
                }
            )
    optional = [n for n in schema["properties"] if n not in schema.get("required", [])]
    schema.setdefault("x-kubernetes-validations", []).extend(
        {
            "rule": f"has(self.{n}) == has(oldSelf.{n})",
            "message": f"{n} cannot be added or removed once a study exists",
        }
        for n in optional
        if n not in MUTABLE_SPEC_FIELDS
    )
    return schema


_STATUS_SCHEMA: JsonSchema = {
    "type": "object",
    "description": "Observed state, written by the operator.",
    # Kopf keeps its own progress here too; it must not be pruned.
    "x-kubernetes-preserve-unknown-fields": True,
}


def _metadata_rule() -> JsonSchema:
    return {
        "rule": "size(self.metadata.name) <= 45",
        "message": "metadata.name must be at most 45 characters (trial names append to it)",
    }


def study_crd() -> JsonSchema:
    """The TuningStudy CustomResourceDefinition."""
    columns = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Done", "type": "integer", "jsonPath": ".status.trials.finished"},
        {"name": "Total", "type": "integer", "jsonPath": ".spec.budget.maxTrials"},
        # Rounded by the operator (status.display): a number column prints all 17 digits.
        {"name": "Best", "type": "string", "jsonPath": ".status.display.best"},
        {"name": "LR", "type": "string", "jsonPath": ".status.display.lr"},
        # A duration string: a "date" column shows a time in the future as <invalid>.
        {"name": "ETA", "type": "string", "jsonPath": ".status.display.eta"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    schema = {
        "type": "object",
        "description": "A hyperparameter tuning study: search space, algorithm and budget.",
        "properties": {
            "apiVersion": {"type": "string", "description": "API version."},
            "kind": {"type": "string", "description": "Kind."},
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": _STATUS_SCHEMA,
        },
        "required": ["spec"],
        "x-kubernetes-validations": [_metadata_rule()],
    }
    return _crd("TuningStudy", "tuningstudies", "tstudy", schema, columns)


def trial_crd() -> JsonSchema:
    """The TuningTrial CustomResourceDefinition: one trial, owned by its study."""
    columns = [
        {"name": "Study", "type": "string", "jsonPath": ".spec.study"},
        {"name": "Number", "type": "integer", "jsonPath": ".spec.number"},
        {"name": "State", "type": "string", "jsonPath": ".status.state"},
        # kubectl prints a number column in full (17 digits): show the rounded copy.
        {"name": "Value", "type": "string", "jsonPath": ".status.display.value"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    schema = {
        "type": "object",
        "description": "One trial of a TuningStudy: its parameters, state and result.",
        "properties": {
            "apiVersion": {"type": "string", "description": "API version."},
            "kind": {"type": "string", "description": "Kind."},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "description": "What the trial runs; immutable.",
                "required": ["study", "number", "params"],
                "x-kubernetes-validations": [
                    {"rule": "self == oldSelf", "message": "a trial's spec is immutable"}
                ],
                "properties": {
                    "study": {"type": "string", "description": "Name of the owning study."},
                    "number": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "Optuna trial number within the study.",
                    },
                    "params": {
                        "type": "object",
                        "description": "Parameter values of this trial.",
                        "x-kubernetes-preserve-unknown-fields": True,
                    },
                },
            },
            "status": _STATUS_SCHEMA,
        },
        "required": ["spec"],
    }
    return _crd("TuningTrial", "tuningtrials", "ttrial", schema, columns)


def _crd(
    kind: str, plural: str, short: str, schema: JsonSchema, columns: list[JsonSchema]
) -> JsonSchema:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["rheostat"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def all_crds() -> list[JsonSchema]:
    """Every CRD Rheostat installs, in apply order."""
    return [study_crd(), trial_crd()]
