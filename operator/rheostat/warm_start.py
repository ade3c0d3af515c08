"""Warm start: what a study knows before its first trial.

Two sources, both optional (`spec.warmStart`):

- *configurations* are enqueued (Optuna `enqueue_trial`) and run first as ordinary,
  counted trials. Enqueueing is idempotent: a configuration is queued only if no
  trial of the study (waiting, running or finished) already has its values, so a
  study reopened from SQLite or rebuilt from TuningTrials after an operator restart
  never runs one twice.
- an earlier study's finished trials, handed over by a backend as plain
  :class:`TrialRecord`s, are *told* to the sampler (`add_trial`) and never re-run.
  Only single-objective values are told: a study with several objectives can only
  warm-start from configurations, and an earlier study with several seeds nothing.
  They are marked `kind="seeded"`, so the budget and every reader leave them out:
  they cost this study no compute, so they do not count against maxTrials.
  Seeds are told with the distributions the study's own trials will get: after an
  LR range test, the narrowed one (the engine waits for the test), since Optuna's
  samplers model a parameter only over trials that agree on its distribution.

Pure: no I/O. Reading results.json, study.db or TuningTrials is the backends' job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from rheostat.events import TrialRecord
from rheostat.ledger import ATTR_KIND, ATTR_REASON
from rheostat.space import SearchSpace
from rheostat.spec import Scalar, StudySpec

SEEDED = "seeded"
ATTR_WARM = "rheostat:warmStart"  # index of the configuration a trial ran
ATTR_SEEDED_FROM = "rheostat:seededFrom"  # a seed's trial number in the earlier study
ATTR_SEEDED = "rheostat:seeded"  # study attribute: every seed was told

_TOLD = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED}


def enqueue(study: optuna.Study, spec: StudySpec, space: SearchSpace) -> int:
    """Queue every configuration that no trial has yet; returns how many were queued.

    Values of parameters the space holds fixed (an LR range test's `fix`) are left
    out: every trial has those, and they are no part of a trial's sampled values.
    """
    if spec.warm_start is None:
        return 0
    trials = study.get_trials(deepcopy=False)
    queued = 0
    for index, given in enumerate(spec.warm_start.configurations):
        configuration = {k: v for k, v in given.items() if k in space.distributions}
        if not configuration or any(_has_values(_values(t), configuration) for t in trials):
            continue
        study.enqueue_trial(configuration, user_attrs={ATTR_WARM: index})
        queued += 1
    return queued


def seed(
    study: optuna.Study,
    space: SearchSpace,
    records: Sequence[TrialRecord],
    source: str,
    limit: int | None = None,
) -> list[str]:
    """Tell the sampler an earlier study's finished trials; returns a warning per skip.

    Only a study that holds nothing but seeds is seeded (see :func:`needs_seeds`): a
    resumed local study keeps its seeds in SQLite, and the operator rebuilds them from
    this study's own records. Seeding is all or nothing: every trial is checked
    before any is told, and a study whose seeding was cut short (the tuner killed
    halfway) is told the rest on the next open, each trial once, before the mark
    that it is complete is set.
    Failed, running and retried trials carry no value and are ignored silently; a
    trial the current space cannot hold (an unknown or missing parameter, a value
    outside its range or choices or off its step grid) is skipped with a warning.
    At most `limit` trials are told (see :func:`reseed`).
    """
    if not needs_seeds(study):
        return []
    if any(r.values is not None for r in records):
        # Each trial has one value per objective there, and no one value is this
        # study's: telling the first would mislead the sampler, not warm it up. (A study
        # with several objectives cannot name fromStudy at all: see the spec's rules.)
        return [f"{source} has several objectives and this study one: nothing was told"]
    existing = study.get_trials(deepcopy=False)
    already = {_seed_key(t) for t in existing}  # cut short: these were told
    warnings = []
    told: list[FrozenTrial] = []
    for stored in sorted(records, key=lambda r: r.number):
        if limit is not None and len(existing) + len(told) >= limit:
            break
        state = _TOLD.get(stored.state)
        value = stored.value
        if state is TrialState.PRUNED and value is None and stored.intermediate:
            value = stored.intermediate[max(stored.intermediate)]
        if state is None or stored.kind != "counted" or value is None:
            continue
        params = {k: v for k, v in stored.params.items() if k not in space.fixed}
        problem = _outside(space.distributions, params)
        if problem is not None:
            warnings.append(f"skipped trial {stored.number} of {source}: {problem}")
            continue
        trial = optuna.trial.create_trial(
            state=state,
            value=value,
            params=params,
            distributions={k: space.distributions[k] for k in params},
            user_attrs={
                ATTR_KIND: SEEDED,
                ATTR_REASON: f"seeded from {source}",
                ATTR_SEEDED_FROM: stored.number,
            },
            intermediate_values=dict(stored.intermediate),
        )
        if not already & {stored.number, _values_key(trial)}:
            told.append(trial)
    study.add_trials(told)
    if records:
        study.set_user_attr(ATTR_SEEDED, True)
    return warnings


def mismatch(spec: StudySpec, source: str, metric: str | None, direction: str) -> str | None:
    """Why an earlier study that optimised `metric` in `direction` cannot seed this one.

    Its values would be told as this study's objective: another metric's, or the
    same metric optimised the other way, would mislead the sampler, not warm it up
    (losses told as accuracies make the worst trials look best). `metric` None: not
    known (a store written before it was kept); then only the direction is checked.
    """
    goal = spec.primary
    if direction == goal.direction and metric in {goal.metric, None}:
        return None
    theirs = f"{metric!r} ({direction})" if metric is not None else f"its metric ({direction})"
    return (
        f"spec.warmStart.fromStudy: {source} optimised {theirs}, this study "
        f"{goal.metric!r} ({goal.direction}); its values would mislead the sampler"
    )


def needs_seeds(study: optuna.Study) -> bool:
    """Whether the study is still to be seeded: it holds seeds at most, not all told.

    A backend reads the earlier study only then; a study with a trial of its own, or
    whose seeding was complete, keeps the seeds it holds.
    """
    if study.user_attrs.get(ATTR_SEEDED):
        return False
    trials = study.get_trials(deepcopy=False)
    return all(t.user_attrs.get(ATTR_KIND) == SEEDED for t in trials)


def _seed_key(trial: FrozenTrial) -> object:
    """Which trial of the earlier study a seed is: its number there, or, for a seed
    told before the number was kept with it, its values."""
    number = trial.user_attrs.get(ATTR_SEEDED_FROM)
    return _values_key(trial) if number is None else number


def _values_key(trial: FrozenTrial) -> tuple[object, ...]:
    return (tuple(sorted(trial.params.items())), trial.value)


def reseed(
    study: optuna.Study,
    spec: StudySpec,
    space: SearchSpace,
    seeds: Sequence[TrialRecord],
    first_own: int | None,
) -> list[str]:
    """Tell the seeds again to a study rebuilt from its own records (the operator).

    Seeds are not stored as TuningTrials; they took the study's first trial numbers,
    before its own trials, so they are told again from the same source into the
    empty study, at most `first_own` of them (the lowest number of a stored trial).
    Should the earlier study have lost trials since, the numbers left over are
    filled as skipped proposals: the study's own trials keep their numbers.
    `first_own=None` (no stored trial yet) tells them all.
    """
    source = spec.warm_start.from_study if spec.warm_start else None
    if source is None:
        return []
    return seed(study, space, seeds, source, limit=first_own)


def seeded(study: optuna.Study) -> int:
    """How many trials of the study were told from an earlier study."""
    return sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get(ATTR_KIND) == SEEDED)


def _values(trial: FrozenTrial) -> Mapping[str, object]:
    """A trial's values; a queued trial has none yet, only those it was queued with."""
    if trial.state == TrialState.WAITING:
        return dict(trial.system_attrs.get("fixed_params", {}))
    return trial.params


def _has_values(params: Mapping[str, object], configuration: Mapping[str, Scalar]) -> bool:
    return all(
        name in params
        and params[name] == value
        and isinstance(params[name], bool) == isinstance(value, bool)
        for name, value in configuration.items()
    )


def _outside(
    distributions: Mapping[str, BaseDistribution], params: Mapping[str, Scalar]
) -> str | None:
    """Why `params` is no point of the space (None if it is one)."""
    missing = sorted(set(distributions) - set(params))
    if missing:
        return f"it has no value for {', '.join(missing)}"
    for name, value in params.items():
        distribution = distributions.get(name)
        if distribution is None:
            return f"{name} is not a parameter of this study"
        if isinstance(distribution, CategoricalDistribution):
            if value not in distribution.choices:
                return f"{name}={value!r} is not one of {list(distribution.choices)!r}"
            continue
        low, high = getattr(distribution, "low", None), getattr(distribution, "high", None)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{name}={value!r} is not a number"
        if low is not None and high is not None and not low <= value <= high:
            return f"{name}={value!r} is outside [{low:g}, {high:g}]"
        if not distribution._contains(distribution.to_internal_repr(value)):
            # In range, so off the step grid: Optuna would refuse it (a ValueError).
            step = getattr(distribution, "step", None)
            return f"{name}={value!r} is not on the grid of {low:g}..{high:g} step {step:g}"
    return None
