"""`rheostat validate` and the API server accept and reject the same studies.

Hypothesis mutates a valid study the way a hostile user (or a careless template)
would, in every section of the spec: numbers as strings or booleans, boundary and
huge numbers, empty, repeated or huge lists, steps that do not fit their range, long
and unicode names, unknown fields (a `metadata:` slipped into the pod spec), missing
fields, any JSON where settings, defaults or choices go, repeated or NUL-bearing
choices, several objectives (consistent or not), warm starts (configurations inside
or outside the space, an earlier study), the trial template's pod spec. Every
document goes to `rheostat validate`'s own checks and to a server-side dry run
through the generated CRD. They must agree, except for the checks in LOCAL_ONLY
(each with the reason it cannot be CEL) and those that need the search space
(Optuna settings): the operator refuses those when it reads the study, with an
InvalidSpec condition (see rheostat.spec.Rule).

Examples are derandomized, so CI runs the same few thousand documents every time;
set RHEOSTAT_AGREEMENT_EXPLORE=1 to let Hypothesis look for new ones. The documents
drawn also depend on Hypothesis's version (a CI clone once drew a case the main
checkout's older install never had), so pyproject.toml pins it exactly.
"""

from __future__ import annotations

import copy
import os
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.rest import ApiException

from rheostat.spec import InvalidStudyError, study_from_mapping
from rheostat.validation import runtime_problems
from tests.bad_specs import good_study
from tests.integration.operator_support import install_crds

GROUP, VERSION, PLURAL = "rheostat.dev", "v1alpha1", "tuningstudies"
EXAMPLES = 2000

NUMBER_FIELDS = [
    ("spec", "parameters", 0, "min"),
    ("spec", "parameters", 0, "max"),
    ("spec", "parameters", 1, "min"),
    ("spec", "parameters", 1, "max"),
    ("spec", "parameters", 1, "step"),
    ("spec", "parameters", 2, "min"),
    ("spec", "parameters", 2, "max"),
    ("spec", "parameters", 2, "step"),
    ("spec", "budget", "maxTrials"),
    ("spec", "budget", "parallelism"),
    ("spec", "budget", "maxFailedTrials"),
    ("spec", "budget", "trialTimeout"),
    ("spec", "budget", "maxRetries"),
    ("spec", "budget", "unschedulableTimeout"),
    ("spec", "lrRangeTest", "minLr"),
    ("spec", "lrRangeTest", "maxLr"),
    ("spec", "lrRangeTest", "steps"),
    ("spec", "algorithm", "seed"),
    ("spec", "metrics", "port"),
    ("spec", "metrics", "scrapeInterval"),
    ("spec", "trialTemplate", "spec", "activeDeadlineSeconds"),
    ("spec", "trialTemplate", "spec", "priority"),
    ("spec", "trialTemplate", "replicas"),
]
BOOL_FIELDS = [
    ("spec", "parameters", 0, "log"),
    ("spec", "parameters", 1, "log"),
    ("spec", "trialTemplate", "spec", "hostNetwork"),
]
STRING_FIELDS = [
    ("metadata", "name"),
    ("spec", "objective", "metric"),
    ("spec", "objective", "direction"),
    ("spec", "algorithm", "name"),
    ("spec", "parameters", 1, "name"),
    ("spec", "parameters", 1, "type"),
    ("spec", "parameters", 3, "type"),
    ("spec", "lrRangeTest", "parameter"),
    ("spec", "lrRangeTest", "suggestion"),
    ("spec", "earlyStopping", "pruner"),
    ("spec", "trialTemplate", "spec", "containers", 0, "name"),
    ("spec", "trialTemplate", "spec", "containers", 0, "image"),
    ("spec", "trialTemplate", "spec", "restartPolicy"),
    ("spec", "trialTemplate", "spec", "serviceAccountName"),
    ("spec", "lrRangeTest", "apply"),
    ("spec", "metrics", "prometheusUrl"),
    ("spec", "warmStart", "fromStudy"),
]
# Fields that hold anything (a categorical's default and choices, settings): any JSON.
ANY_FIELDS = [
    ("spec", "parameters", 3, "values"),
    ("spec", "parameters", 3, "default"),
    ("spec", "parameters", 1, "default"),
    ("spec", "algorithm", "settings"),
    ("spec", "earlyStopping", "settings"),
    ("spec", "trialTemplate", "metadata"),
    ("spec", "trialTemplate", "spec", "nodeSelector"),
    ("spec", "trialTemplate", "spec", "tolerations"),
    ("spec", "trialTemplate", "spec", "containers"),
    ("spec", "trialTemplate", "spec", "containers", 0, "env"),
    ("spec", "warmStart", "configurations"),
]
OBJECTS = [
    ("spec",),
    ("spec", "budget"),
    ("spec", "parameters", 2),
    ("spec", "objective"),
    ("spec", "lrRangeTest"),
    ("spec", "algorithm"),
    ("spec", "metrics"),
    ("spec", "earlyStopping"),
    ("spec", "warmStart"),
    ("spec", "trialTemplate"),
    ("spec", "trialTemplate", "spec"),
]
# Unknown keys; for the pod spec, the plausible slips (issue 21 defect 11).
UNKNOWN_KEYS = ["foo", "maxTrialCount", "Min", "metadata", "hostnetwork"]

numbers = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, 2**53, 2**53 + 1, 100_000, 100_001, 65_536]),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from([0.0, 0.5, 1.5, 1e-300, 1e30, -0.0, 4.0]),
)
not_numbers = st.one_of(st.sampled_from(["1", "0.1", "", "1e-3", True, False, None]), st.text())
texts = st.one_of(
    st.text(max_size=80),
    st.sampled_from(
        [
            *["", "a" * 300, "Trainer", "mömentum", "lr", "LR", "x y", "-a", "a-"],
            *["Never", "http://p", "categorical", "int", "float"],
        ]
    ),
)
scalars = st.one_of(numbers, st.booleans(), texts, st.sampled_from(["sgd", "adam", "a\x00b"]))
anything = st.recursive(
    scalars | st.none(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
PARAMETER_NAMES = ["lr", "momentum", "layers", "optimizer", "dropout", "LR"]


def _parent(document: dict[str, Any], path: tuple[Any, ...]) -> Any:
    """The object holding `path`'s last part (made if absent), or None if out of reach."""
    node: Any = document
    for part in path[:-1]:
        if isinstance(node, dict) and isinstance(part, str):
            node = node.setdefault(part, {})
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return None
    return node if isinstance(node, dict) else None


def _set(document: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    parent = _parent(document, path)
    if parent is not None:
        parent[path[-1]] = value


@st.composite
def mutations(draw: st.DrawFn) -> dict[str, Any]:
    document = copy.deepcopy(good_study())
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        kind = draw(
            st.sampled_from(
                [
                    "number",
                    "not-number",
                    "bool",
                    "string",
                    "unknown",
                    "drop",
                    "list",
                    "values",
                    "objectives",
                    "any",
                    "warm-start",
                ]
            )
        )
        if kind == "number":
            _set(document, draw(st.sampled_from(NUMBER_FIELDS)), draw(numbers))
        elif kind == "not-number":
            _set(document, draw(st.sampled_from(NUMBER_FIELDS)), draw(not_numbers))
        elif kind == "bool":
            _set(document, draw(st.sampled_from(BOOL_FIELDS)), draw(not_numbers | st.booleans()))
        elif kind == "string":
            _set(document, draw(st.sampled_from(STRING_FIELDS)), draw(texts))
        elif kind == "unknown":
            path = draw(st.sampled_from(OBJECTS))
            value = draw(st.sampled_from([1, {}, "x"]))
            _set(document, (*path, draw(st.sampled_from(UNKNOWN_KEYS))), value)
        elif kind == "drop":
            path = draw(st.sampled_from(NUMBER_FIELDS + STRING_FIELDS + BOOL_FIELDS + ANY_FIELDS))
            parent = _parent(document, path)
            if parent is not None:
                parent.pop(path[-1], None)
        elif kind == "list":
            parameters = document["spec"]["parameters"]
            choice = draw(st.sampled_from(["empty", "repeat", "huge", "one"]))
            if choice == "empty":
                document["spec"]["parameters"] = []
            elif choice == "repeat" and len(parameters) > 1:
                parameters.append(copy.deepcopy(parameters[1]))
            elif choice == "huge":
                for index in range(draw(st.integers(min_value=60, max_value=70))):
                    parameters.append({"name": f"p{index}", "type": "int", "min": 0, "max": 3})
            else:
                document["spec"]["parameters"] = parameters[:1]
        elif kind == "objectives":
            _mutate_objectives(draw, document["spec"])
        elif kind == "any":
            _set(document, draw(st.sampled_from(ANY_FIELDS)), draw(anything))
        elif kind == "warm-start":
            _mutate_warm_start(draw, document["spec"])
        else:
            choices = st.one_of(st.text(max_size=5), st.integers(), st.booleans(), scalars)
            drawn: list[Any] = draw(st.lists(choices, max_size=4))
            if drawn and draw(st.booleans()):
                drawn.append(draw(st.sampled_from(drawn)))  # a repeated choice
            _set(document, ("spec", "parameters", 3, "values"), drawn)
    return document


def _mutate_objectives(draw: st.DrawFn, spec: dict[str, Any]) -> None:
    """Several objectives, right or wrong: too few or many, repeated or odd metrics,
    alongside `objective` or instead of it, with or without pruning, with any sampler."""
    metrics = draw(
        st.lists(st.sampled_from(["accuracy", "loss", "size", "", "m" * 300]), max_size=10)
    )
    directions = st.sampled_from(["minimize", "maximize", "up"])
    spec["objectives"] = [{"metric": m, "direction": draw(directions)} for m in metrics]
    if draw(st.booleans()):
        spec.pop("objective", None)
    if draw(st.booleans()):
        spec["earlyStopping"] = {"pruner": draw(st.sampled_from(["none", "median"]))}
    if draw(st.booleans()):
        spec.setdefault("algorithm", {})["name"] = draw(
            st.sampled_from(["nsga2", "cmaes", "tpe", "bayesian"])
        )
    if draw(st.booleans()):
        spec["warmStart"] = {"fromStudy": "earlier"}


def _mutate_warm_start(draw: st.DrawFn, spec: dict[str, Any]) -> None:
    """Configurations (points of the space or not) and an earlier study, or neither."""
    point = st.dictionaries(st.sampled_from(PARAMETER_NAMES), scalars, max_size=4)
    warm: dict[str, Any] = {}
    if draw(st.booleans()):
        warm["configurations"] = draw(st.lists(point, max_size=3))
    if draw(st.booleans()):
        warm["fromStudy"] = draw(texts)
    spec["warmStart"] = warm


# Checks `rheostat validate` makes and the API server cannot, each with the reason.
# The operator validates with spec.py when it reads a study, so a study that passes
# admission but fails one of these gets an InvalidSpec condition, never runs.
# (path pattern, message pattern, why it cannot be CEL or schema)
LOCAL_ONLY: list[tuple[str, str, str]] = [
    (
        r"^spec\.parameters\[\d+\]\.values$",
        r"needs values|only for categorical",
        "values is untyped (strings, numbers and booleans mixed), so the API server hides "
        "it from CEL, and no schema keyword ties its presence to another field's value",
    ),
    (
        r"^spec\.parameters\[\d+\]\.(values\[\d+\]|default)$",
        r"^must be ",
        "a structural schema cannot say 'any scalar': the untyped node admits a list or "
        "an object there",
    ),
    (
        r"^spec\.warmStart\.configurations\[\d+\]",
        r"",
        "a configuration's values are untyped, and whether they are points of the "
        "search space (range, step, choices) is a cross-field check CEL cannot see",
    ),
    (
        r"^spec\.parameters\[\d+\]\.values$",
        r"must differ from one another",
        "the API server's set tells 0 from 0.0 when a client sends JSON 0.0 (kubectl sends "
        "YAML 0.0 as 0); the operator reads 0.0 back as 0 and refuses the study. Exact "
        "duplicates the server refuses too (bad_specs: categorical-duplicate-values)",
    ),
]
# runtime_problems (sampler/pruner settings Optuna refuses, a grid too large) need
# Optuna and the built search space: local only as well.


def _categorical_without_values() -> dict[str, Any]:
    document = copy.deepcopy(good_study())
    del document["spec"]["parameters"][3]["values"]
    return document


def _choices_equal_as_numbers() -> dict[str, Any]:
    document = copy.deepcopy(good_study())
    document["spec"]["parameters"][3]["values"] = [2147483647, 0, 0.0]  # found in CI
    return document


def _warm_start_outside_the_space() -> dict[str, Any]:
    document = copy.deepcopy(good_study())
    document["spec"]["warmStart"] = {"configurations": [{"lr": 3.0, "optimizer": "rmsprop"}]}
    return document


def _local_only(path: str, message: str) -> bool:
    return any(re.search(where, path) and re.search(what, message) for where, what, _ in LOCAL_ONLY)


def local_verdict(document: dict[str, Any]) -> tuple[bool, bool]:
    """(accepted, refused only by a check the API server cannot make)."""
    try:
        study = study_from_mapping(document)
    except InvalidStudyError as error:
        return False, all(_local_only(p.path, p.message) for p in error.problems)
    return not runtime_problems(study), True


def server_verdict(
    api: client.CustomObjectsApi, namespace: str, document: dict[str, Any]
) -> tuple[bool, str]:
    """(admitted, the server's reason if not) for a server-side dry run."""
    try:
        api.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, document, dry_run="All", field_validation="Strict"
        )
    except ApiException as error:
        if error.status in {400, 422}:
            return False, str(error.body)[:400]
        raise
    return True, ""


@pytest.fixture(scope="module")
def custom(admin_api: client.ApiClient) -> client.CustomObjectsApi:
    install_crds(admin_api)
    return client.CustomObjectsApi(admin_api)


def test_validate_and_admission_agree(custom: client.CustomObjectsApi, namespace: str) -> None:
    explore = bool(os.environ.get("RHEOSTAT_AGREEMENT_EXPLORE"))
    disagreements: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=not explore,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(mutations())
    @example(_categorical_without_values())  # each LOCAL_ONLY entry is met at least once
    @example(_warm_start_outside_the_space())
    @example(_choices_equal_as_numbers())
    def check(document: dict[str, Any]) -> None:
        local, operator_only = local_verdict(document)
        server, reason = server_verdict(custom, namespace, document)
        if local == server or (server and not local and operator_only):
            return
        try:
            study_from_mapping(document)
            problems = "accepted locally"
        except InvalidStudyError as error:
            problems = str(error)
        disagreements.append(
            f"local={local} server={server}: {problems} | server: {reason}\n{document}"
        )

    check()
    assert not disagreements, f"{len(disagreements)} disagreements, e.g.:\n" + "\n\n".join(
        disagreements[:5]
    )
