"""Pruning on metrics read now and then: compare every trial at the same step.

The tuner does not see every report of a trial: it reads a trial's endpoint every
`metrics.scrapeInterval` (or queries Prometheus), so each trial's recorded curve has
values at whichever steps happened to be current at a read, and no two trials need
share a step. Optuna's median pruner, asked about step k, takes the median over the
completed trials that hold a value at exactly k; with such curves that is one or two
trials, whichever were read at k, and a trial better than the true median is pruned.

Here the median pruner sees each completed trial that reached step k (was read at
k or later, or ended at k or later by its termination message's "step") at its
value from its latest read at or before k: every such
trial takes part, each at the most recent value known for that step. A completed
trial that reached k but was first read after it has no value known there; then no
verdict is given at k (the trial is judged at its next step read), rather than one
over the others alone. Completed trials are left as recorded; only the view the
pruner reads is aligned. The trial being judged is compared at the steps it was
read at, as before. Pure: no I/O beyond the Optuna study.
"""

from __future__ import annotations

import bisect
import copy
from collections.abc import Container

import optuna
from optuna.trial import FrozenTrial, TrialState

from rheostat.ledger import ATTR_LAST_STEP


def reached(trial: FrozenTrial) -> int | None:
    """The last step the trial ran to: its last read, or further when its termination
    message said so (the reads may have missed its last steps)."""
    steps = trial.intermediate_values.keys()
    told = trial.user_attrs.get(ATTR_LAST_STEP)
    last = max(steps, default=None)
    if isinstance(told, int) and (last is None or told > last):
        return told
    return last


def value_at(trial: FrozenTrial, step: int) -> float | None:
    """The trial's value at `step`: from its latest read at or before it.

    None when the trial was never read at or before `step`, or never reached it
    (it ended earlier: the trial says nothing about later steps).
    """
    values = trial.intermediate_values
    if step in values:
        return values[step]
    last = reached(trial)
    if last is None or last < step:
        return None
    steps = sorted(values)
    index = bisect.bisect_right(steps, step)
    return values[steps[index - 1]] if index else None


def _aligned(trial: FrozenTrial, step: int) -> FrozenTrial:
    """A completed trial as a pruner at `step` should see it (a copy, when it differs)."""
    if trial.state != TrialState.COMPLETE or step in trial.intermediate_values:
        return trial
    value = value_at(trial, step)
    if value is None:
        return trial
    view = copy.copy(trial)
    view.intermediate_values = {**trial.intermediate_values, step: value}
    return view


class _StepAlignedStudy(optuna.Study):
    """The study as the pruner reads it at one step; everything else is the study's own.

    Optuna's Hyperband pruner hands its brackets a Study subclass the same way.
    """

    def __init__(self, study: optuna.Study, step: int) -> None:  # shares the study's state
        self.__dict__.update(study.__dict__)
        self._aligned_step = step

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        trials = super().get_trials(deepcopy=deepcopy, states=states)
        return [_aligned(t, self._aligned_step) for t in trials]


def _unknown_at(trial: FrozenTrial, step: int) -> bool:
    """Whether the trial reached `step` but was first read after it. (A trial never
    read at all takes no part: it has no curve to compare with.)"""
    steps = trial.intermediate_values.keys()
    return bool(steps) and min(steps) > step


class AlignedMedianPruner(optuna.pruners.MedianPruner):
    """Optuna's median pruner over every completed trial that reached the step."""

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return super().prune(study, trial)
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if any(_unknown_at(t, step) for t in completed):
            return False
        return super().prune(_StepAlignedStudy(study, step), trial)
