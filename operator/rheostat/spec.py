"""The TuningStudy spec as typed models: the one source of the study schema.

Everything that accepts a study reads it through this module: `rheostat validate`,
`rheostat run` and the operator parse with :func:`parse_study`, and the CRD's
structural schema (with its CEL rules) is generated from the same models by
:mod:`rheostat.crd`. A cross-field rule is written once, as a :class:`Rule` that
carries both its Python check and its CEL expression, so the API server and the
local CLI reject exactly the same studies with the same message.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from rheostat.pod_spec_fields import POD_SPEC_FIELDS

API_GROUP = "rheostat.dev"
API_VERSION = "v1alpha1"
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"
KIND = "TuningStudy"
# A study's name prefixes its children (`<study>-t<number>`, `<study>-lr-range-test`),
# whose Job names end up in pod labels limited to 63 characters.
MAX_STUDY_NAME = 45
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
PARAMETER_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
# A string without NUL bytes: values end up in environment variables and SQLite.
NO_NUL = "^[^\\x00]*$"

Algorithm = Literal["grid", "random", "tpe", "bayesian", "cmaes", "qmc", "nsga2"]
ALGORITHMS: tuple[str, ...] = ("grid", "random", "tpe", "bayesian", "cmaes", "qmc", "nsga2")
# Objectives of one multi-objective study: two at least (one is `objective`), and few
# enough that the front stays readable and the CEL uniqueness check stays cheap.
MAX_OBJECTIVES = 8
# Pods of one multi-pod trial: their hostnames (`<study>-t<number>-<index>`) stay DNS
# labels, and a trial this wide is a cluster's worth of nodes already.
MAX_REPLICAS = 1000
Pruner = Literal["none", "median", "successive-halving", "hyperband"]
Scalar = str | int | float | bool


@dataclass(frozen=True)
class Rule:
    """A cross-field rule, written once for both Python and the API server.

    `cel` is evaluated by the API server on the object the rule is attached to
    (`self`); `check` is the same predicate in Python. `cel` is None where CEL
    cannot see the fields: a categorical's `values` may mix strings, numbers and
    booleans, so its schema is untyped and the API server hides it from CEL. Such a
    rule either has a `schema` twin (a list type, a pattern) or is applied only by
    the operator when it reads the study. `field` names the offending field relative
    to that object, so both places point at the same path.
    """

    cel: str | None
    message: str
    check: Callable[[Any], bool]
    field: str = ""
    # Where CEL cannot see the field, the structural-schema keywords that make the API
    # server refuse the same documents, merged into the schema of `field` (in the
    # server's own words, e.g. "Duplicate value", but at the same path).
    schema: Mapping[str, Any] | None = None


def _whole_number(value: Any) -> Any:
    """JSON has one number type: the API server admits 4.0 for an integer; so do we.

    Only up to 2**53, where a float stops holding every integer (the API server
    refuses larger ones as not integers).
    """
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    return value


# An integer field: 4 or 4.0, never "4" or true (strict otherwise).
WholeNumber = Annotated[int, BeforeValidator(_whole_number)]


class SpecModel(BaseModel):
    """Base for spec models: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        # Numbers are numbers and booleans booleans, as the API server types them:
        # "0.1" or true for a number would pass here and fail at `kubectl apply`.
        strict=True,
    )
    rules: ClassVar[tuple[Rule, ...]] = ()


class Objective(SpecModel):
    """What a trial is judged by."""

    metric: str = Field(
        min_length=1,
        max_length=253,
        description="Name of the metric the trainer reports (e.g. accuracy, loss).",
    )
    direction: Literal["minimize", "maximize"] = Field(
        default="maximize", description="Whether larger or smaller values are better."
    )


class AlgorithmSpec(SpecModel):
    """Which sampler proposes parameters."""

    name: Algorithm = Field(
        default="tpe",
        description=(
            "Search algorithm: grid, random, tpe, bayesian (Gaussian process), "
            "cmaes, qmc (quasi-Monte Carlo) or nsga2 (genetic, for several objectives)."
        ),
    )
    seed: Annotated[int, Field(ge=0, le=2**32 - 1), BeforeValidator(_whole_number)] | None = Field(
        default=None, description="Random seed; the same seed proposes the same trials."
    )
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra keyword arguments for the Optuna sampler (e.g. n_startup_trials).",
    )


def _divides(step: float, span: float) -> bool:
    """Whether `span` is a whole number of steps (to 1e-6 of a step), as the CEL twin says."""
    ratio = span / step
    return step <= span and ratio <= 1e15 and ratio - int(ratio + 1e-9) < 1e-6


def _distinct(values: Sequence[Scalar]) -> bool:
    """No value twice; a boolean is never equal to a number (True == 1 in Python).

    1 and 1.0 are the same choice here. The API server's set agrees when kubectl sends
    them (YAML 1.0 becomes JSON 1) but not for a client that sends `1.0`: it admits
    [1, 1.0], and the operator, which reads 1.0 back as 1, refuses the study.
    """
    keys = [(isinstance(v, bool), v) for v in values]
    return len(set(keys)) == len(keys)


# The largest whole number a JSON double holds exactly; CEL's int() overflows not far
# above it (int64), so an int parameter's bounds and step stay within it.
MAX_WHOLE = 2**53


def _is_integral(value: float | None) -> bool:
    return value is None or (float(value).is_integer() and abs(value) <= MAX_WHOLE)


class Parameter(SpecModel):
    """One hyperparameter and the range it is searched over."""

    name: str = Field(
        pattern=PARAMETER_NAME,
        max_length=63,
        description="Parameter name, passed to trials as RHEOSTAT_PARAM_<NAME>.",
    )
    type: Literal["float", "int", "categorical"] = Field(
        description="float and int search a range; categorical picks from values."
    )
    min: float | None = Field(default=None, description="Lower bound (float and int).")
    max: float | None = Field(default=None, description="Upper bound (float and int).")
    log: bool = Field(
        default=False, description="Search on a log scale (learning rates); needs min > 0."
    )
    step: float | None = Field(
        default=None,
        gt=0,
        description="Discretisation step; needed for float parameters in a grid search.",
    )
    values: list[Scalar] | None = Field(
        default=None, min_length=1, description="Choices of a categorical parameter."
    )
    default: Scalar | None = Field(
        default=None,
        description="Value used by the LR range test (otherwise the middle of the range).",
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="self.type == 'categorical' || (has(self.min) && has(self.max))",
            message="min and max are required for float and int parameters",
            check=lambda p: p.type == "categorical" or (p.min is not None and p.max is not None),
            field=".min",
        ),
        Rule(
            cel="!has(self.min) || !has(self.max) || self.min < self.max",
            message="max must be greater than min",
            check=lambda p: p.min is None or p.max is None or p.min < p.max,
            field=".max",
        ),
        Rule(
            cel="!has(self.log) || !self.log || !has(self.min) || self.min > 0.0",
            message="a log-scale parameter needs min > 0",
            check=lambda p: not p.log or p.min is None or p.min > 0,
            field=".min",
        ),
        Rule(
            cel="!(has(self.log) && self.log && has(self.step))",
            message="step cannot be combined with a log scale",
            check=lambda p: not (p.log and p.step is not None),
            field=".step",
        ),
        Rule(
            cel="self.type != 'int' || ((!has(self.min) || (self.min >= -9007199254740992.0"
            " && self.min <= 9007199254740992.0 && double(int(self.min)) == self.min))"
            " && (!has(self.max) || (self.max >= -9007199254740992.0"
            " && self.max <= 9007199254740992.0 && double(int(self.max)) == self.max)))",
            message="an int parameter needs whole-number bounds (at most 2^53 in size)",
            check=lambda p: p.type != "int" or (_is_integral(p.min) and _is_integral(p.max)),
            field=".min",
        ),
        Rule(
            cel="!has(self.step) || !has(self.min) || !has(self.max) || self.max <= self.min "
            "|| (self.step <= self.max - self.min && (self.max - self.min) / self.step <= 1e15 "
            "&& (self.max - self.min) / self.step "
            "- double(int((self.max - self.min) / self.step + 1e-9)) < 1e-6)",
            message="step must divide max - min (otherwise the range is silently cut short)",
            check=lambda p: (
                p.step is None
                or p.min is None
                or p.max is None
                or p.max <= p.min
                or _divides(p.step, p.max - p.min)
            ),
            field=".step",
        ),
        Rule(
            cel="self.type != 'int' || !has(self.step) || (self.step <= 9007199254740992.0"
            " && double(int(self.step)) == self.step)",
            message="an int parameter needs a whole-number step (at most 2^53)",
            check=lambda p: p.type != "int" or _is_integral(p.step),
            field=".step",
        ),
        Rule(
            cel=None,
            message="a categorical parameter needs values",
            check=lambda p: p.type != "categorical" or p.values is not None,
            field=".values",
        ),
        Rule(
            cel=None,
            message="values are only for categorical parameters; use min and max",
            check=lambda p: p.type == "categorical" or p.values is None,
            field=".values",
        ),
        Rule(
            cel=None,
            message="categorical values must differ from one another",
            check=lambda p: p.values is None or _distinct(p.values),
            field=".values",
            schema={"x-kubernetes-list-type": "set"},
        ),
        Rule(
            cel=None,
            message="a categorical value cannot contain a NUL byte (it is passed in an "
            "environment variable)",
            check=lambda p: not any(isinstance(v, str) and "\x00" in v for v in p.values or ()),
            field=".values",
            schema={"items": {"pattern": NO_NUL}},
        ),
        Rule(
            cel="self.type != 'categorical' || (!has(self.min) && !has(self.max))",
            message="min and max are not used by a categorical parameter",
            check=lambda p: p.type != "categorical" or (p.min is None and p.max is None),
            field=".min",
        ),
    )


class LrRangeTest(SpecModel):
    """Leslie Smith's learning-rate range test, run once before the trials."""

    parameter: str = Field(description="The float parameter that is the learning rate.")
    min_lr: float = Field(default=1e-7, gt=0, description="Learning rate of the first step.")
    max_lr: float = Field(default=10.0, gt=0, description="Learning rate of the last step.")
    steps: WholeNumber = Field(
        default=100, ge=10, le=1000, description="Number of batches the LR is raised over."
    )
    suggestion: Literal["valley", "steep", "minimum", "slide"] = Field(
        default="minimum", description="Rule that turns the loss curve into a learning rate."
    )
    apply: Literal["narrow", "fix", "report", "schedule"] = Field(
        default="narrow",
        description=(
            "narrow: search around the suggestion; fix: use the suggestion for every "
            "trial; report: record it and leave the range alone; schedule: for a "
            "cyclical schedule (one-cycle, cyclic LR), the parameter is the peak LR, "
            "searched within half a decade of the range test's peak, and "
            "each trial gets RHEOSTAT_LR_BASE and RHEOSTAT_LR_PEAK."
        ),
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="self.minLr < self.maxLr",
            message="maxLr must be greater than minLr",
            check=lambda t: t.min_lr < t.max_lr,
            field=".maxLr",
        ),
    )


class Budget(SpecModel):
    """How many trials to run, how many at once, and how many may fail."""

    max_trials: WholeNumber = Field(
        ge=1, le=100_000, description="Trials to finish before the study ends."
    )
    parallelism: WholeNumber = Field(
        default=1, ge=1, le=1000, description="Trials running at once."
    )
    max_failed_trials: WholeNumber = Field(
        default=3, ge=0, description="The study fails once more trials than this have failed."
    )
    trial_timeout: Annotated[int, Field(ge=1), BeforeValidator(_whole_number)] | None = Field(
        default=None,
        description="Seconds a trial's trainer may run before it is stopped and failed, "
        "counted from its container's start (waiting for a node does not count).",
    )
    max_retries: WholeNumber = Field(
        default=2,
        ge=0,
        description=(
            "Retries of a trial lost to the infrastructure (eviction, node loss); "
            "training errors are never retried."
        ),
    )
    unschedulable_timeout: WholeNumber = Field(
        default=600,
        ge=1,
        description=(
            "Seconds a trial pod may stay stuck (unschedulable, its image not pulled, its "
            "config missing, refused by admission) before the attempt counts as lost to "
            "the cluster and is retried (up to maxRetries)."
        ),
    )
    queue_depth: WholeNumber = Field(
        default=1,
        ge=1,
        le=1000,
        description=(
            "Trials of this study that may wait for quota (a suspended Job, under Kueue) at "
            "once: the next trial is sampled only when one is admitted, so it is chosen "
            "with the results that came in while it would have waited."
        ),
    )
    queue_timeout: WholeNumber = Field(
        default=600,
        ge=1,
        description=(
            "Seconds a trial may wait in a queue that cannot admit it (Kueue's Workload "
            "is Inadmissible, e.g. no such LocalQueue, or deactivated) before it fails "
            "with Kueue's message. Waiting for quota has no limit."
        ),
    )


class EarlyStopping(SpecModel):
    """Pruning of unpromising trials from their intermediate metrics."""

    pruner: Pruner = Field(
        default="median",
        description="none, median, successive-halving (ASHA) or hyperband.",
    )
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra keyword arguments for the Optuna pruner (e.g. n_warmup_steps).",
    )


class MetricsSpec(SpecModel):
    """Where intermediate metrics come from."""

    port: WholeNumber = Field(
        default=9090, ge=1, le=65535, description="Port the trainer serves /metrics on."
    )
    prometheus_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="Query this Prometheus server instead of scraping trial pods directly.",
    )
    scrape_interval: float = Field(
        default=2.0, gt=0, le=300, description="Seconds between two reads of a trial's metrics."
    )


class EnvVar(BaseModel):
    """An environment variable of the trial container (Kubernetes EnvVar)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = Field(min_length=1, description="Variable name.")
    value: str | None = Field(default=None, description="Literal value.")


class Container(BaseModel):
    """The trial container; any other Kubernetes container field is passed through."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = Field(pattern=DNS_LABEL, description="Container name.")
    image: str | None = Field(default=None, description="Trainer image (ignored locally).")
    command: list[str] | None = Field(
        default=None, description="Entrypoint; never rewritten by Rheostat."
    )
    args: list[str] | None = Field(default=None, description="Arguments to the entrypoint.")
    env: list[EnvVar] | None = Field(default=None, description="Extra environment variables.")


class PodSpec(BaseModel):
    """The trial pod's spec; other PodSpec fields pass through, unknown ones are refused."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)
    containers: list[Container] = Field(
        min_length=1, description="Containers; the first one is the trainer."
    )
    restart_policy: Literal["Never"] | None = Field(
        default=None,
        alias="restartPolicy",
        description="Never (the default): a trainer that exits is a finished or failed "
        "trial; retries of infrastructure losses are Rheostat's, with the same parameters.",
    )


class TrialTemplate(BaseModel):
    """A Pod template for every trial (and the LR range test)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Labels and annotations added to trial pods."
    )
    spec: PodSpec = Field(description="Pod spec of a trial.")
    replicas: WholeNumber = Field(
        default=1,
        ge=1,
        le=MAX_REPLICAS,
        strict=True,
        description="Pods per trial. Above 1 a trial is an Indexed Job plus a headless "
        "Service: each pod gets MASTER_ADDR, MASTER_PORT, WORLD_SIZE, NNODES and "
        "NODE_RANK for torchrun, and index 0 reports for the trial. The LR range test "
        "stays one pod. Local runs support only 1.",
    )


class WarmStart(SpecModel):
    """What a study knows before its first trial: configurations to try, an earlier study.

    Configurations run first, as ordinary trials that count against maxTrials. An
    earlier study's finished trials are told to the sampler and never re-run; they
    cost no compute here, so they do not count against maxTrials either.
    """

    configurations: list[dict[str, Scalar]] = Field(
        default_factory=list,
        max_length=1000,
        description="Parameter sets to run first, in order (a parameter left out is sampled).",
    )
    from_study: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="Earlier study whose finished trials seed the sampler: on a cluster the "
        "name of a TuningStudy in the same namespace; locally the path of its results.json "
        "or study.db, or its name (then runs/<name>/study.db, a local run's default).",
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="(has(self.configurations) && size(self.configurations) > 0) "
            "|| has(self.fromStudy)",
            message="warmStart needs configurations, fromStudy or both",
            check=lambda w: bool(w.configurations) or w.from_study is not None,
            field=".configurations",
        ),
    )


class StudySpec(SpecModel):
    """The whole study: what to optimise, over which space, with which budget.

    One metric (`objective`) or several (`objectives`, a Pareto front): exactly one.
    """

    objective: Objective | None = Field(
        default=None, description="The metric to optimise and its direction."
    )
    objectives: list[Objective] | None = Field(
        default=None,
        min_length=2,
        max_length=MAX_OBJECTIVES,
        description="Several metrics to optimise at once (instead of objective): the study "
        "finds their Pareto front. Trials are not pruned.",
    )
    algorithm: AlgorithmSpec = Field(
        default_factory=AlgorithmSpec, description="The search algorithm."
    )
    parameters: list[Parameter] = Field(
        min_length=1, max_length=64, description="The search space."
    )
    lr_range_test: LrRangeTest | None = Field(
        default=None, description="Run an LR range test first to narrow the learning rate."
    )
    budget: Budget = Field(description="Trial budget and parallelism.")
    early_stopping: EarlyStopping = Field(
        default_factory=EarlyStopping, description="Pruning of bad trials."
    )
    metrics: MetricsSpec = Field(
        default_factory=MetricsSpec, description="How trial metrics are read."
    )
    trial_template: TrialTemplate = Field(description="Pod template of each trial.")
    warm_start: WarmStart | None = Field(
        default=None, description="Configurations to run first and an earlier study to learn from."
    )
    queue: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Kueue LocalQueue of the trial and LR range test Jobs (label "
        "kueue.x-k8s.io/queue-name); they are created suspended and run when Kueue admits "
        "them. Default: the operator's (chart value kueue.defaultQueue).",
    )
    priority_class: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Kueue WorkloadPriorityClass of those Jobs (label "
        "kueue.x-k8s.io/priority-class). Default: the operator's "
        "(chart value kueue.defaultPriorityClass).",
    )

    @property
    def goals(self) -> tuple[Objective, ...]:
        """Every objective, in order: one for `objective`, several for `objectives`."""
        if self.objectives:
            return tuple(self.objectives)
        return (self.objective,) if self.objective is not None else ()

    @property
    def multi_objective(self) -> bool:
        return self.objectives is not None

    @property
    def primary(self) -> Objective:
        """The first objective: what a single-valued view (a progress line) shows."""
        return self.goals[0]

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="has(self.objective) != has(self.objectives)",
            message="give exactly one of objective (one metric) and objectives "
            "(two or more metrics)",
            check=lambda s: (s.objective is None) != (s.objectives is None),
            field=".objective",
        ),
        Rule(
            cel="!has(self.objectives) || self.objectives.all(o, "
            "self.objectives.filter(q, q.metric == o.metric).size() == 1)",
            message="objectives must name different metrics",
            check=lambda s: (
                s.objectives is None or len({o.metric for o in s.objectives}) == len(s.objectives)
            ),
            field=".objectives",
        ),
        Rule(
            cel="!has(self.objectives) || (has(self.earlyStopping) "
            "&& has(self.earlyStopping.pruner) && self.earlyStopping.pruner == 'none')",
            message="Optuna cannot prune trials with several objectives: "
            "set earlyStopping.pruner to none",
            check=lambda s: s.objectives is None or s.early_stopping.pruner == "none",
            field=".earlyStopping.pruner",
        ),
        Rule(
            cel="!has(self.objectives) || !has(self.algorithm) || !has(self.algorithm.name) "
            "|| self.algorithm.name != 'cmaes'",
            message="cmaes optimises one objective; with objectives use nsga2, tpe, "
            "bayesian, random, qmc or grid",
            check=lambda s: s.objectives is None or s.algorithm.name != "cmaes",
            field=".algorithm.name",
        ),
        Rule(
            cel="!has(self.objectives) || !has(self.warmStart) || !has(self.warmStart.fromStudy)",
            message="warmStart.fromStudy seeds one objective's values; a study with "
            "objectives can only warm-start from configurations",
            check=lambda s: (
                s.objectives is None or s.warm_start is None or (s.warm_start.from_study is None)
            ),
            field=".warmStart.fromStudy",
        ),
        Rule(
            cel="self.parameters.all(p, self.parameters.filter(q, "
            "q.name.upperAscii() == p.name.upperAscii()).size() == 1)",
            message="parameter names must differ in more than case: each is passed as "
            "RHEOSTAT_PARAM_<NAME in upper case>",
            check=lambda s: len({p.name.upper() for p in s.parameters}) == len(s.parameters),
            field=".parameters",
        ),
        Rule(
            cel="self.algorithm.name != 'grid' || "
            "self.parameters.all(p, p.type != 'float' || has(p.step))",
            message="grid search needs discrete parameters: give every float parameter a step",
            check=lambda s: (
                s.algorithm.name != "grid"
                or all(p.type != "float" or p.step is not None for p in s.parameters)
            ),
            field=".parameters",
        ),
        Rule(
            cel="!has(self.lrRangeTest) || self.parameters.exists(p, "
            "p.name == self.lrRangeTest.parameter && p.type == 'float')",
            message="lrRangeTest.parameter must name a float parameter of the study",
            check=lambda s: (
                s.lr_range_test is None
                or any(
                    p.name == s.lr_range_test.parameter and p.type == "float" for p in s.parameters
                )
            ),
            field=".lrRangeTest.parameter",
        ),
    )


class Metadata(BaseModel):
    """Object metadata; only the name matters to a local run."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = Field(pattern=DNS_LABEL, max_length=MAX_STUDY_NAME, description="Study name.")
    namespace: str | None = None


class TuningStudy(BaseModel):
    """A TuningStudy object as written in a study file or stored in the cluster."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)
    api_version: Literal["rheostat.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["TuningStudy"]
    metadata: Metadata
    spec: StudySpec


@dataclass(frozen=True)
class SpecProblem:
    """One thing wrong with a study, at a field path such as spec.parameters[1].max."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class InvalidStudyError(ValueError):
    """Raised with every problem found, so a user fixes them all in one go."""

    def __init__(self, problems: Sequence[SpecProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def _format_loc(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


_UNION_TAGS = frozenset({"str", "int", "float", "bool", "none"})


def _is_union_tag(part: int | str) -> bool:
    """Pydantic adds the member type of a union to error locations; users never need it."""
    return isinstance(part, str) and (part in _UNION_TAGS or "[" in part)


def _pydantic_problems(error: ValidationError) -> list[SpecProblem]:
    problems = []
    for item in error.errors():
        # Union members add their type names to the location; they say nothing to a user.
        loc = [p for p in item["loc"] if not _is_union_tag(p)]
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif item["type"] == "missing":
            message = "required field is missing"
        problems.append(SpecProblem(_format_loc(loc), message))
    return _merge_union_problems(problems)


def _article(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _merge_union_problems(problems: list[SpecProblem]) -> list[SpecProblem]:
    """Fold pydantic's one-line-per-union-member complaints into one line per field."""
    prefix = "Input should be a valid "
    merged: list[SpecProblem] = []
    kinds: dict[str, list[str]] = {}
    for problem in problems:
        if problem.message.startswith(prefix):
            if problem.path not in kinds:
                kinds[problem.path] = []
                merged.append(problem)
            kinds[problem.path].append(problem.message.removeprefix(prefix))
        else:
            merged.append(problem)
    return [
        SpecProblem(p.path, "must be " + " or ".join(_article(k) for k in kinds[p.path]))
        if p.path in kinds
        else p
        for p in merged
    ]


def _rule_problems(model: SpecModel, path: str) -> list[SpecProblem]:
    """Apply every model's rules, depth first, so each problem has its full path."""
    problems = [
        SpecProblem(path + rule.field, rule.message)
        for rule in model.rules
        if not rule.check(model)
    ]
    for field_name, info in type(model).model_fields.items():
        value = getattr(model, field_name)
        alias = info.alias or field_name
        if isinstance(value, SpecModel):
            problems += _rule_problems(value, f"{path}.{alias}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, SpecModel):
                    problems += _rule_problems(item, f"{path}.{alias}[{index}]")
    return problems


def _duplicate_names(spec: StudySpec) -> list[SpecProblem]:
    seen: set[str] = set()
    problems = []
    for index, parameter in enumerate(spec.parameters):
        if parameter.name in seen:
            problems.append(
                SpecProblem(
                    f"spec.parameters[{index}].name",
                    f"duplicate parameter name {parameter.name!r}",
                )
            )
        seen.add(parameter.name)
    return problems


def _value_problem(parameter: Parameter, value: Scalar) -> str | None:
    """Why `value` is not a point of `parameter`'s range, or None if it is."""
    if parameter.type == "categorical":
        choices = parameter.values or []
        if any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in choices):
            return None
        return f"{value!r} is not one of {choices!r}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number, not {value!r}"
    if parameter.type == "int" and not float(value).is_integer():
        return f"must be a whole number, not {value!r}"
    if parameter.min is None or parameter.max is None:
        return None  # the parameter itself is reported
    if not parameter.min <= value <= parameter.max:
        return f"{value!r} is outside [{parameter.min:g}, {parameter.max:g}]"
    step = parameter.step
    if step is not None and value != parameter.min and not _divides(step, value - parameter.min):
        return f"{value!r} is not min + a whole number of steps of {parameter.step:g}"
    return None


def _warm_start_problems(spec: StudySpec) -> list[SpecProblem]:
    """Each configuration must be a point of the search space.

    Python only, like a categorical's values: the values are untyped, so the API
    server cannot check them, and the operator refuses such a study when it reads it.
    """
    if spec.warm_start is None:
        return []
    by_name = {p.name: p for p in spec.parameters}
    problems = []
    for index, configuration in enumerate(spec.warm_start.configurations):
        path = f"spec.warmStart.configurations[{index}]"
        if not configuration:
            problems.append(SpecProblem(path, "a configuration needs at least one parameter"))
        missing = [name for name in by_name if name not in configuration]
        if spec.algorithm.name == "grid" and configuration and missing:
            problems.append(
                SpecProblem(path, f"a grid search needs every parameter: missing {missing}")
            )
        for name, value in configuration.items():
            parameter = by_name.get(name)
            message = (
                "not a parameter of the study"
                if parameter is None
                else _value_problem(parameter, value)
            )
            if message is not None:
                problems.append(SpecProblem(f"{path}.{name}", message))
    return problems


_JSON_KINDS: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "object": dict,
    "array": list,
}


def _json_kind_problem(value: Any, kind: str) -> str | None:
    """Why `value` is not of JSON `kind`, as the API server's structural schema says it."""
    if isinstance(value, bool) and kind != "boolean":
        return f"must be of type {kind}"
    if kind == "integer":
        value = _whole_number(value)  # 4.0 is an integer to the API server, 1e30 is not
    return None if isinstance(value, _JSON_KINDS[kind]) else f"must be of type {kind}"


def _pod_spec_problems(spec: StudySpec) -> list[SpecProblem]:
    """The trial template's spec must be a PodSpec: known fields of the right JSON kinds.

    The pod spec passes fields through untouched, so without this a slip such as
    `metadata:` inside it passes here and wedges every trial in the client library.
    Only the top level is checked (nested objects are the API server's, at Job creation);
    the CRD declares the same fields, so admission refuses the same documents.
    """
    path = "spec.trialTemplate.spec"
    problems = []
    for name, value in (spec.trial_template.spec.model_extra or {}).items():
        if name not in POD_SPEC_FIELDS:
            problems.append(SpecProblem(f"{path}.{name}", "unknown field (not a PodSpec field)"))
            continue
        kind, items = POD_SPEC_FIELDS[name]
        message = _json_kind_problem(value, kind)
        if message is None and items is not None:
            wrong = [i for i, item in enumerate(value) if _json_kind_problem(item, items)]
            message = f"items must be of type {items}" if wrong else None
        if message is not None:
            problems.append(SpecProblem(f"{path}.{name}", message))
    return problems


def semantic_problems(study: TuningStudy) -> list[SpecProblem]:
    """Cross-field problems of a structurally valid study."""
    spec = study.spec
    return (
        _rule_problems(spec, "spec")
        + _duplicate_names(spec)
        + _warm_start_problems(spec)
        + _pod_spec_problems(spec)
    )


def _without_nulls(value: Any) -> Any:
    """`value` with every `key: null` removed, as the API server reads it.

    For a structural schema the API server treats an explicit null like an absent
    field (and applies the default), so `log: null` is admitted; local validation
    must not refuse what `kubectl apply` accepts.
    """
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def study_from_mapping(document: Mapping[str, Any]) -> TuningStudy:
    """Validate a decoded study document; raise InvalidStudyError with every problem."""
    try:
        study = TuningStudy.model_validate(_without_nulls(document))
    except ValidationError as error:
        raise InvalidStudyError(_pydantic_problems(error)) from None
    problems = semantic_problems(study)
    if problems:
        raise InvalidStudyError(problems)
    return study


def parse_study(text: str) -> TuningStudy:
    """Parse study YAML (or JSON) text into a validated TuningStudy."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise InvalidStudyError(
            [SpecProblem("<yaml>", f"malformed YAML{where}: {problem}")]
        ) from None
    if not isinstance(document, dict):
        raise InvalidStudyError(
            [SpecProblem("<yaml>", "a study file must be a mapping with apiVersion, kind, spec")]
        )
    return study_from_mapping(document)


def env_name(parameter: str) -> str:
    """The env var a parameter is passed in: RHEOSTAT_PARAM_<NAME>."""
    return "RHEOSTAT_PARAM_" + re.sub(r"[^A-Za-z0-9]", "_", parameter).upper()


def default_value(parameter: Parameter) -> Scalar:
    """The value the LR range test uses: the default, else the middle of the range."""
    if parameter.default is not None:
        return parameter.default
    if parameter.type == "categorical":
        assert parameter.values is not None
        return parameter.values[0]
    assert parameter.min is not None
    assert parameter.max is not None
    if parameter.log:
        middle = math.sqrt(parameter.min * parameter.max)
    else:
        middle = (parameter.min + parameter.max) / 2
    if parameter.type == "int":
        return round(middle)
    return middle
