"""The study's books: how each Optuna trial counts, and what a user or a store sees.

The Optuna study is the state; Rheostat's bookkeeping rides along in user
attributes. A trial lost to the infrastructure and re-run, or a proposal skipped as
a duplicate, is an Optuna trial too, but it is not one the budget counts. Every
reader (status, results files, plots, the operator's TuningTrials) goes through
these functions, so they all count the same way.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from rheostat.events import Counts, TrialOutcome, TrialRecord, TrialView
from rheostat.space import SearchSpace

# Optuna user attributes that carry Rheostat's bookkeeping with each trial.
ATTR_REASON = "rheostat:reason"
ATTR_KIND = "rheostat:kind"  # "counted" (default), "retry" (infra loss), "duplicate"
ATTR_ATTEMPT = "rheostat:attempt"
ATTR_REQUEUED = "rheostat:requeued"  # re-runs of known parameters skip the duplicate check
ATTR_LR_RANGE = "rheostat:lrRangeTest"
ATTR_SPEC = "rheostat:spec"
ATTR_LAST_STEP = "rheostat:lastStep"  # a finished trial's last reported step (pruning)
# Study attribute: [{metric, direction}, ...], what the study optimises, for a reader
# (a warm start) that has only its store.
ATTR_GOALS = "rheostat:goals"

_STATES: dict[TrialOutcome, TrialState] = {
    "running": TrialState.RUNNING,
    "complete": TrialState.COMPLETE,
    "pruned": TrialState.PRUNED,
    "failed": TrialState.FAIL,
}


def outcome(trial: FrozenTrial) -> TrialOutcome | None:
    """A trial as a user counts it; None for retried attempts and skipped duplicates."""
    kind = trial.user_attrs.get(ATTR_KIND, "counted")
    if trial.state == TrialState.RUNNING:
        return "running"
    if trial.state == TrialState.WAITING or kind != "counted":
        return None
    if trial.state == TrialState.COMPLETE:
        return "complete"
    if trial.state == TrialState.PRUNED:
        return "pruned"
    return "failed"


def counts(study: optuna.Study, running: int) -> Counts:
    """Finished trials by outcome, plus the `running` ones the engine holds."""
    tally = Counts(running=running)
    for trial in study.get_trials(deepcopy=False):
        match outcome(trial):
            case "complete":
                tally.complete += 1
            case "pruned":
                tally.pruned += 1
            case "failed":
                tally.failed += 1
            case _:
                pass
    return tally


def results(trial: FrozenTrial) -> tuple[float | None, tuple[float, ...] | None]:
    """(value, values) of a finished trial: the first objective's and, with several, all.

    Optuna's `trial.value` raises for a multi-objective trial; `values` never does.
    Only complete and pruned trials have a result.
    """
    if trial.state not in {TrialState.COMPLETE, TrialState.PRUNED} or trial.values is None:
        return None, None
    values = tuple(float(v) for v in trial.values)
    return values[0], values if len(values) > 1 else None


def views(study: optuna.Study, space: SearchSpace) -> list[TrialView]:
    """Every trial a user would count (duplicates and retried attempts left out)."""
    result = []
    for trial in study.get_trials(deepcopy=False):
        state = outcome(trial)
        if state is None:
            continue
        duration = None
        if trial.datetime_start and trial.datetime_complete:
            duration = (trial.datetime_complete - trial.datetime_start).total_seconds()
        value, values = results(trial)
        result.append(
            TrialView(
                number=trial.number,
                state=state,
                params=space.complete(trial.params),
                value=value,
                reason=trial.user_attrs.get(ATTR_REASON),
                intermediate=dict(trial.intermediate_values),
                duration=duration,
                values=values,
            )
        )
    return result


def best(trials: list[TrialView], direction: str) -> TrialView | None:
    """The best complete trial; pruned trials never win (their value is partial)."""
    complete = [t for t in trials if t.state == "complete" and t.value is not None]
    if not complete:
        return None
    pick = max if direction == "maximize" else min
    return pick(complete, key=lambda t: t.value if t.value is not None else math.nan)


def best_counted(study: optuna.Study) -> FrozenTrial | None:
    """The best of a single-objective study's own complete trials, as :func:`best` picks
    it from the views; for a reader with only the store (`rheostat status`). Optuna's
    `best_trial` would also consider the trials told from an earlier study."""
    complete = [t for t in study.get_trials(deepcopy=False) if outcome(t) == "complete"]
    if not complete or len(study.directions) > 1:
        return None
    pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    return pick(complete, key=lambda t: t.value if t.value is not None else math.nan)


def record(trial: FrozenTrial, space: SearchSpace, started_at: float) -> TrialRecord:
    """The stored form of one trial, for a backend to persist after each change."""
    # The Optuna state, whatever the kind: a seeded trial is stored complete or pruned.
    state: TrialOutcome = next((k for k, st in _STATES.items() if st == trial.state), "failed")
    value, values = results(trial)
    return TrialRecord(
        number=trial.number,
        params=space.complete(trial.params),
        state=state,
        kind=str(trial.user_attrs.get(ATTR_KIND, "counted")),
        value=value,
        values=values,
        reason=trial.user_attrs.get(ATTR_REASON),
        attempt=int(trial.user_attrs.get(ATTR_ATTEMPT, 1)),
        intermediate=dict(trial.intermediate_values),
        started_at=started_at,
        last_step=trial.user_attrs.get(ATTR_LAST_STEP),
    )


def frozen(stored: TrialRecord, space: SearchSpace) -> FrozenTrial:
    """A stored record as an Optuna trial, to replay a study after a restart."""
    params = {k: v for k, v in stored.params.items() if k in space.distributions}
    value = stored.value
    if stored.state == "pruned" and value is None and stored.intermediate:
        value = stored.intermediate[max(stored.intermediate)]
    attrs: dict[str, Any] = {ATTR_KIND: stored.kind, ATTR_ATTEMPT: stored.attempt}
    if stored.reason:
        attrs[ATTR_REASON] = stored.reason
    if stored.last_step is not None:
        attrs[ATTR_LAST_STEP] = stored.last_step
    finished = stored.state in {"complete", "pruned"}
    if stored.values is not None:
        # Several objectives: a complete trial has all of them; a pruned one none.
        several = list(stored.values) if stored.state == "complete" else None
        return optuna.trial.create_trial(
            state=_STATES[stored.state],
            values=several,
            params=params,
            distributions={k: space.distributions[k] for k in params},
            user_attrs=attrs,
        )
    return optuna.trial.create_trial(
        state=_STATES[stored.state],
        value=value if finished else None,
        params=params,
        distributions={k: space.distributions[k] for k in params},
        user_attrs=attrs,
        intermediate_values=dict(stored.intermediate),
    )


def placeholder() -> FrozenTrial:
    """Fills a trial number that has no record (a skipped duplicate proposal)."""
    return optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={ATTR_KIND: "duplicate"})
