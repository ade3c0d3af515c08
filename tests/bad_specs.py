"""The bad-input table: every invalid study and the field its error must name.

Shared by the local validation tests and the API-server admission tests, so a
study rejected in one place is rejected in the other with the same field path.
Each case is a patch applied to a known-good study.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Document = dict[str, Any]


def good_study() -> Document:
    return {
        "apiVersion": "rheostat.dev/v1alpha1",
        "kind": "TuningStudy",
        "metadata": {"name": "good"},
        "spec": {
            "objective": {"metric": "accuracy", "direction": "maximize"},
            "algorithm": {"name": "tpe", "seed": 1},
            "parameters": [
                {"name": "lr", "type": "float", "min": 1e-5, "max": 1.0, "log": True},
                {"name": "momentum", "type": "float", "min": 0.0, "max": 0.99},
                {"name": "layers", "type": "int", "min": 1, "max": 4},
                {"name": "optimizer", "type": "categorical", "values": ["sgd", "adam"]},
            ],
            "lrRangeTest": {"parameter": "lr", "minLr": 1e-6, "maxLr": 10.0},
            "budget": {"maxTrials": 4, "parallelism": 2},
            "trialTemplate": {
                "spec": {
                    "containers": [
                        {"name": "trainer", "image": "trainer:1", "command": ["python", "-m", "x"]}
                    ]
                }
            },
        },
    }


@dataclass(frozen=True)
class BadCase:
    id: str
    patch: Callable[[Document], None]
    field: str  # the path the error must name (local form, e.g. spec.parameters[0].max)


def _param(index: int, **changes: Any) -> Callable[[Document], None]:
    def apply(doc: Document) -> None:
        doc["spec"]["parameters"][index].update(changes)
        for key in [k for k, v in changes.items() if v is None]:
            del doc["spec"]["parameters"][index][key]

    return apply


def _set(path: str, value: Any) -> Callable[[Document], None]:
    def apply(doc: Document) -> None:
        *parents, last = path.split(".")
        node = doc
        for part in parents:
            node = node[part]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return apply


_DELETE = object()


def objectives_study(
    metrics: tuple[str, ...] = ("accuracy", "size"), algorithm: str = "nsga2"
) -> Document:
    """The good study with several objectives (maximize the first, minimize the rest)."""
    document = copy.deepcopy(good_study())
    _with_objectives(document, metrics=metrics)
    document["spec"]["algorithm"]["name"] = algorithm
    return document


def _with_objectives(
    doc: Document,
    *,
    metrics: tuple[str, ...] = ("accuracy", "size"),
    keep_objective: bool = False,
    pruner: str | None = "none",
) -> None:
    """Give `doc` several objectives, and no pruning unless `pruner` says otherwise."""
    spec = doc["spec"]
    if not keep_objective:
        del spec["objective"]
    directions = ["maximize"] + ["minimize"] * (len(metrics) - 1)
    spec["objectives"] = [
        {"metric": m, "direction": d} for m, d in zip(metrics, directions, strict=True)
    ]
    if pruner is not None:
        spec["earlyStopping"] = {"pruner": pruner}


def _both(*patches: Callable[[Document], None]) -> Callable[[Document], None]:
    def apply(doc: Document) -> None:
        for patch in patches:
            patch(doc)

    return apply


BAD_CASES: list[BadCase] = [
    BadCase("empty-parameter-list", _set("spec.parameters", []), "spec.parameters"),
    BadCase("min-equals-max", _param(1, min=0.5, max=0.5), "spec.parameters[1].max"),
    BadCase("min-above-max", _param(2, min=5, max=1), "spec.parameters[2].max"),
    BadCase("log-with-zero-min", _param(0, min=0.0), "spec.parameters[0].min"),
    BadCase("log-with-negative-min", _param(0, min=-1.0), "spec.parameters[0].min"),
    BadCase(
        "grid-over-float-without-step",
        _set("spec.algorithm", {"name": "grid"}),
        "spec.parameters",
    ),
    BadCase("unknown-algorithm", _set("spec.algorithm.name", "annealing"), "spec.algorithm.name"),
    BadCase("max-trials-zero", _set("spec.budget.maxTrials", 0), "spec.budget.maxTrials"),
    BadCase("parallelism-zero", _set("spec.budget.parallelism", 0), "spec.budget.parallelism"),
    BadCase("negative-timeout", _set("spec.budget.trialTimeout", -5), "spec.budget.trialTimeout"),
    BadCase("queue-depth-zero", _set("spec.budget.queueDepth", 0), "spec.budget.queueDepth"),
    BadCase("queue-timeout-zero", _set("spec.budget.queueTimeout", 0), "spec.budget.queueTimeout"),
    BadCase("queue-not-a-name", _set("spec.queue", "Bad_Queue"), "spec.queue"),
    BadCase("priority-class-empty", _set("spec.priorityClass", ""), "spec.priorityClass"),
    BadCase(
        "negative-max-failed",
        _set("spec.budget.maxFailedTrials", -1),
        "spec.budget.maxFailedTrials",
    ),
    BadCase(
        "duplicate-parameter-names",
        _param(1, name="lr"),
        "spec.parameters[1]",
    ),
    BadCase(
        "lr-test-parameter-missing",
        _set("spec.lrRangeTest.parameter", "learning_rate"),
        "spec.lrRangeTest.parameter",
    ),
    BadCase(
        "lr-test-parameter-categorical",
        _set("spec.lrRangeTest.parameter", "optimizer"),
        "spec.lrRangeTest.parameter",
    ),
    BadCase(
        "lr-test-parameter-int",
        _set("spec.lrRangeTest.parameter", "layers"),
        "spec.lrRangeTest.parameter",
    ),
    BadCase("min-lr-above-max-lr", _set("spec.lrRangeTest.minLr", 100.0), "spec.lrRangeTest.maxLr"),
    BadCase("lr-test-too-few-steps", _set("spec.lrRangeTest.steps", 3), "spec.lrRangeTest.steps"),
    BadCase(
        "unknown-suggestion",
        _set("spec.lrRangeTest.suggestion", "middle"),
        "spec.lrRangeTest.suggestion",
    ),
    BadCase("unknown-lr-policy", _set("spec.lrRangeTest.apply", "guess"), "spec.lrRangeTest.apply"),
    BadCase(
        "unknown-pruner",
        _set("spec.earlyStopping", {"pruner": "patient"}),
        "spec.earlyStopping.pruner",
    ),
    BadCase(
        "no-objective-metric",
        _set("spec.objective", {"direction": "maximize"}),
        "spec.objective.metric",
    ),
    BadCase("empty-objective-metric", _set("spec.objective.metric", ""), "spec.objective.metric"),
    BadCase(
        "unknown-direction", _set("spec.objective.direction", "up"), "spec.objective.direction"
    ),
    BadCase("wrong-api-version", _set("apiVersion", "rheostat.dev/v1"), "apiVersion"),
    BadCase("wrong-kind", _set("kind", "Experiment"), "kind"),
    BadCase("categorical-without-values", _param(3, values=None), "spec.parameters[3].values"),
    BadCase(
        "categorical-duplicate-values",
        _param(3, values=["sgd", "adam", "sgd"]),
        "spec.parameters[3].values",
    ),
    BadCase(
        "categorical-value-with-a-nul-byte",
        _param(3, values=["sgd", "ad\x00am"]),
        "spec.parameters[3].values",
    ),
    BadCase("float-without-bounds", _param(1, min=None), "spec.parameters[1].min"),
    BadCase("int-with-fractional-bounds", _param(2, min=0.5), "spec.parameters[2].min"),
    # 1e30 is a whole float, but no int64 (CEL's int) holds it: refused in both places.
    BadCase("int-with-bounds-beyond-2-53", _param(2, max=1e30), "spec.parameters[2].min"),
    BadCase("step-with-log", _param(0, step=0.1), "spec.parameters[0].step"),
    BadCase("zero-step", _param(1, step=0), "spec.parameters[1].step"),
    BadCase("bad-parameter-name", _param(1, name="mo mentum"), "spec.parameters[1].name"),
    BadCase("unknown-parameter-type", _param(1, type="double"), "spec.parameters[1].type"),
    BadCase(
        "metrics-port-out-of-range", _set("spec.metrics", {"port": 70000}), "spec.metrics.port"
    ),
    BadCase(
        "no-containers",
        _set("spec.trialTemplate", {"spec": {"containers": []}}),
        "spec.trialTemplate.spec.containers",
    ),
    # A trial template that is not a PodSpec: the client library would refuse every Job.
    BadCase(
        "pod-spec-unknown-field",
        _set("spec.trialTemplate.spec.metadata", {}),
        "spec.trialTemplate.spec.metadata",
    ),
    BadCase(
        "pod-spec-field-of-the-wrong-type",
        _set("spec.trialTemplate.spec.hostNetwork", "yes"),
        "spec.trialTemplate.spec.hostNetwork",
    ),
    BadCase(
        "no-pods-per-trial",
        _set("spec.trialTemplate.replicas", 0),
        "spec.trialTemplate.replicas",
    ),
    BadCase(
        "pods-per-trial-as-a-string",
        _set("spec.trialTemplate.replicas", "2"),
        "spec.trialTemplate.replicas",
    ),
    BadCase("no-budget", _set("spec.budget", _DELETE), "spec.budget"),
    BadCase("unknown-spec-field", _set("spec.maxTrialCount", 3), "spec.maxTrialCount"),
    BadCase("parameter-names-differ-only-in-case", _param(1, name="LR"), "spec.parameters"),
    BadCase(
        "trials-that-restart-in-place",
        _set("spec.trialTemplate.spec.restartPolicy", "Always"),
        "spec.trialTemplate.spec.restartPolicy",
    ),
    BadCase("warm-start-with-nothing", _set("spec.warmStart", {}), "spec.warmStart.configurations"),
    BadCase(
        "warm-start-from-empty-name",
        _set("spec.warmStart", {"fromStudy": ""}),
        "spec.warmStart.fromStudy",
    ),
    # Several objectives (`objectives`) instead of one (`objective`): exactly one of them.
    BadCase("no-objective-at-all", _set("spec.objective", _DELETE), "spec.objective"),
    BadCase(
        "objective-and-objectives",
        lambda doc: _with_objectives(doc, keep_objective=True),
        "spec.objective",
    ),
    BadCase(
        "objectives-with-one-metric",
        lambda doc: _with_objectives(doc, metrics=("accuracy",)),
        "spec.objectives",
    ),
    BadCase(
        "objectives-naming-a-metric-twice",
        lambda doc: _with_objectives(doc, metrics=("accuracy", "accuracy")),
        "spec.objectives",
    ),
    BadCase(
        "objectives-with-pruning-by-default",
        lambda doc: _with_objectives(doc, pruner=None),
        "spec.earlyStopping.pruner",
    ),
    BadCase(
        "objectives-with-a-median-pruner",
        lambda doc: _with_objectives(doc, pruner="median"),
        "spec.earlyStopping.pruner",
    ),
    BadCase(
        "objectives-with-cmaes",
        _both(_with_objectives, _set("spec.algorithm.name", "cmaes")),
        "spec.algorithm.name",
    ),
    BadCase(
        "objectives-warm-started-from-a-study",
        _both(_with_objectives, _set("spec.warmStart", {"fromStudy": "old"})),
        "spec.warmStart.fromStudy",
    ),
    BadCase(
        "objectives-with-an-empty-metric",
        lambda doc: _with_objectives(doc, metrics=("accuracy", "")),
        "spec.objectives[1].metric",
    ),
]


# Refused by `rheostat validate` and by the operator when it reads the study, but not
# at admission: a configuration's values are untyped, so CEL cannot see them (like a
# categorical's values; see rheostat.spec.Rule).
_WARM = "spec.warmStart.configurations"
OPERATOR_ONLY_CASES: list[BadCase] = [
    BadCase(
        "warm-start-unknown-parameter",
        _set("spec.warmStart", {"configurations": [{"lr": 0.1}, {"lr": 0.1, "dropout": 0.5}]}),
        f"{_WARM}[1].dropout",
    ),
    BadCase(
        "warm-start-value-out-of-range",
        _set("spec.warmStart", {"configurations": [{"momentum": 0.5}, {"lr": 3.0}]}),
        f"{_WARM}[1].lr",
    ),
    BadCase(
        "warm-start-not-a-choice",
        _set("spec.warmStart", {"configurations": [{"optimizer": "rmsprop"}]}),
        f"{_WARM}[0].optimizer",
    ),
    BadCase(
        "warm-start-fractional-int",
        _set("spec.warmStart", {"configurations": [{"layers": 2.5}]}),
        f"{_WARM}[0].layers",
    ),
    BadCase(
        "warm-start-string-for-a-number",
        _set("spec.warmStart", {"configurations": [{"momentum": "0.5"}]}),
        f"{_WARM}[0].momentum",
    ),
    BadCase(
        "warm-start-off-the-step",
        _both(
            _param(1, step=0.11), _set("spec.warmStart", {"configurations": [{"momentum": 0.3}]})
        ),
        f"{_WARM}[0].momentum",
    ),
    BadCase(
        "warm-start-partial-configuration-in-a-grid",
        _both(
            _set("spec.algorithm", {"name": "grid"}),
            _set("spec.warmStart", {"configurations": [{"lr": 0.1}]}),
        ),
        f"{_WARM}[0]",
    ),
    BadCase(
        "warm-start-empty-configuration",
        _set("spec.warmStart", {"configurations": [{}]}),
        f"{_WARM}[0]",
    ),
]


def bad_document(case: BadCase) -> Document:
    document = copy.deepcopy(good_study())
    case.patch(document)
    return document
