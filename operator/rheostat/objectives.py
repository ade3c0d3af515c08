"""What a trial is judged by: one objective or several, and the Pareto front of several.

A study names one `objective` or several `objectives` (:attr:`StudySpec.goals`).
With one, a finished trial has one value and the best trial is the best value; with
several it has one value per objective and there is no single best: the result is
the Pareto front, the trials no other trial beats on every objective at once (what
Optuna's `study.best_trials` returns). Everything here is pure and works on the
plain :class:`TrialView` every reader has, so the engine's status, a local run's
results files and plots, and a cluster study read back by `rheostat get` compute
the same front.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from optuna.study._multi_objective import _is_pareto_front

from rheostat.events import Finished, TrialView
from rheostat.spec import Objective, StudySpec

# Entries of the front kept in a study's status: the object must stay small (an
# etcd object is at most 1.5 MiB, and `kubectl get -o yaml` should stay readable).
# The full front is in results.json and on the TuningTrials.
MAX_FRONT_IN_STATUS = 20


def directions(spec: StudySpec) -> list[Literal["minimize", "maximize"]]:
    """Optuna's directions, one per objective, in order."""
    return [goal.direction for goal in spec.goals]


def final_value(
    metric: str, event: Finished, last_reported: float | None
) -> tuple[float | None, str | None]:
    """One objective's final value of a finished trial, or None and the reason it has none.

    The termination message (`finish()`) wins; failing that, the last scraped report.
    Never raises: whatever the trainer wrote, the trial gets a value or a reason.
    """
    if event.exit_code != 0:
        detail = f": {event.message.strip()[-300:]}" if event.message.strip() else ""
        return None, f"trainer exited with code {event.exit_code}{detail}"
    raw = (event.metrics or {}).get(metric)
    reason = None
    if raw is None:
        if last_reported is None:
            return None, f"the objective metric {metric!r} was never reported"
        raw = last_reported
        reason = f"no final {metric!r} in the termination message; used the last report"
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None, f"the objective metric {metric!r} is not a number: {_brief(raw)}"
    except OverflowError:  # JSON integers have no bound: 1e400 written as digits
        return None, f"the objective metric {metric!r} is too large for a float: {_brief(raw)}"
    if not math.isfinite(value):
        return None, f"the objective metric {metric!r} is {value}"
    return value, reason


def _brief(raw: object) -> str:
    """The repr of a trainer's value, shortened (a huge integer has hundreds of digits)."""
    text = repr(raw)
    return text if len(text) <= 60 else f"{text[:57]}... ({len(text)} characters)"


def final_values(
    goals: Sequence[Objective], event: Finished, last_reported: Mapping[str, float]
) -> tuple[list[float] | None, str | None]:
    """Every objective's final value, or None and the reason naming the first one missing.

    A trial that lacks one objective has no place on the front: it fails, and the
    reason names the metric so the trainer can be fixed.
    """
    values: list[float] = []
    notes: list[str] = []
    for goal in goals:
        value, reason = final_value(goal.metric, event, last_reported.get(goal.metric))
        if value is None:
            return None, reason
        values.append(value)
        if reason:
            notes.append(reason)
    return values, "; ".join(notes) or None


def pareto_front(trials: Sequence[TrialView], goals: Sequence[Objective]) -> list[TrialView]:
    """The complete trials that no other complete trial dominates, by trial number.

    Pruned trials never enter (their values are partial), as for a single best.
    Trials with the same values are all on the front, as in Optuna.
    """
    scored = [
        t
        for t in trials
        if t.state == "complete" and t.values is not None and len(t.values) == len(goals)
    ]
    if not scored:
        return []
    signs = np.array([-1.0 if g.direction == "maximize" else 1.0 for g in goals])
    losses = np.array([t.values for t in scored], dtype=float) * signs
    on_front = _is_pareto_front(losses, assume_unique_lexsorted=False)
    return sorted((t for t, keep in zip(scored, on_front, strict=True) if keep), key=_number)


def _number(trial: TrialView) -> int:
    return trial.number


def thin(front: Sequence[TrialView], limit: int = MAX_FRONT_IN_STATUS) -> list[TrialView]:
    """At most `limit` trials of the front, spread along its first objective.

    Sorted by the first objective and taken at even spacing, so both ends of the
    trade-off (the best of each extreme) always stay.
    """
    if len(front) <= limit:
        return list(front)
    ordered = sorted(front, key=lambda t: (t.values or (0.0,))[0])
    picks = sorted({round(i * (len(ordered) - 1) / (limit - 1)) for i in range(limit)})
    return sorted((ordered[i] for i in picks), key=_number)


def named_values(trial: TrialView, goals: Sequence[Objective]) -> dict[str, float]:
    """A trial's values keyed by metric name (empty if it has none)."""
    if trial.values is None:
        return {}
    return {g.metric: v for g, v in zip(goals, trial.values, strict=False)}


def best_of_each(front: Sequence[TrialView], goals: Sequence[Objective]) -> dict[str, float]:
    """Each objective's best value, by metric name: the front's extreme on that axis.

    The best value of one objective over all complete trials is always on the front
    (a trial that beats it elsewhere ties it here), so the front is enough; the full
    front, not the thinned one, since with three objectives thinning may drop an end.
    """
    best: dict[str, float] = {}
    for index, goal in enumerate(goals):
        values = [t.values[index] for t in front if t.values is not None]
        if values:
            best[goal.metric] = max(values) if goal.direction == "maximize" else min(values)
    return best


def front_status(trials: Sequence[TrialView], goals: Sequence[Objective]) -> dict[str, Any] | None:
    """The front for a study's status: its size, each objective's best value, and at
    most MAX_FRONT_IN_STATUS entries."""
    front = pareto_front(trials, goals)
    if not front:
        return None
    return {
        "size": len(front),
        "best": best_of_each(front, goals),
        "trials": [
            {"number": t.number, "values": named_values(t, goals), "params": dict(t.params)}
            for t in thin(front)
        ],
    }


def describe_front(status: Mapping[str, Any]) -> str:
    """A short text for a printer column: how many trials are on the front."""
    size = int(status.get("size", 0))
    return f"front of {size}"
