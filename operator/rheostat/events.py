"""The vocabulary between the engine and its backends: events in, actions out.

A backend (local processes or Kubernetes Jobs) reports what it observed as events
and carries out the actions the engine returns. Both sides import these plain,
frozen dataclasses and nothing else of each other, so a backend never reaches into
the engine's Optuna study and the engine never learns how a trial is run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rheostat.spec import Scalar

Phase = Literal["LrRangeTest", "Running", "Succeeded", "Failed"]
TrialOutcome = Literal["running", "complete", "pruned", "failed"]


# ----- events a backend reports -------------------------------------------------------


@dataclass(frozen=True)
class Started:
    """The trial's trainer is running (its container started), at `at`.

    The trial timeout counts from here: time spent waiting for a node, an image or
    a free GPU is the cluster's, bounded by `unschedulableTimeout`, not the trainer's.
    """

    number: int
    at: float


@dataclass(frozen=True)
class Progress:
    """An intermediate value of the objective, read from the trial's metrics.

    `metrics` holds every metric of the same read: a study with several objectives
    falls back on their last reported values when a trainer writes no final result.
    """

    number: int
    step: int
    value: float
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Finished:
    """A trial's process ended; `metrics` is its termination message, if any."""

    number: int
    exit_code: int
    metrics: Mapping[str, Any] | None = None
    message: str = ""
    # The step of the trainer's last report (its termination message's "step"): how far
    # it ran, which the reads of its metrics may have missed (see rheostat.pruning).
    step: int | None = None


@dataclass(frozen=True)
class Lost:
    """A trial was lost to the infrastructure (eviction, node loss, interruption)."""

    number: int
    reason: str


@dataclass(frozen=True)
class Refused:
    """The trial could not be launched at all: its Job was refused as invalid.

    The template is at fault, not the infrastructure, so it counts as a failure;
    every trial shares the template, so maxFailedTrials ends such a study soon.
    """

    number: int
    reason: str


@dataclass(frozen=True)
class Queued:
    """The trial waits for a queue to admit it (a suspended Job under Kueue).

    Waiting for quota is not running: no timeout counts, and it holds one of the
    study's `queueDepth` places. Seen after the trial started, it was preempted: not
    a failure; its progress and its timeout start over when it is admitted again.
    """

    number: int


@dataclass(frozen=True)
class Admitted:
    """The queue admitted the trial (its Job is no longer suspended)."""

    number: int


@dataclass(frozen=True)
class LrRangeFinished:
    """The LR range test ended: its curve, or why there is none."""

    lrs: Sequence[float] = ()
    losses: Sequence[float] = ()
    error: str | None = None


Event = Started | Progress | Finished | Lost | Refused | LrRangeFinished | Queued | Admitted


# ----- actions the engine asks for ----------------------------------------------------


@dataclass(frozen=True)
class StartLrRangeTest:
    """Run the trainer once in lr-range-test mode with these parameters and sweep."""

    params: dict[str, Scalar]
    parameter: str
    min_lr: float
    max_lr: float
    steps: int


@dataclass(frozen=True)
class StartTrial:
    """Launch trial `number` with `params`."""

    number: int
    params: dict[str, Scalar]
    attempt: int = 1


@dataclass(frozen=True)
class StopTrial:
    """Stop a running trial (pruned, timed out, or the study ended)."""

    number: int
    reason: str


Action = StartLrRangeTest | StartTrial | StopTrial


# ----- what the engine shows ----------------------------------------------------------


@dataclass(frozen=True)
class TrialView:
    """What a user sees of one trial.

    `value` is the (first) objective's value; `values` holds one per objective of
    a study with several (None for one objective, or no result).
    """

    number: int
    state: TrialOutcome
    params: dict[str, Scalar]
    value: float | None
    reason: str | None
    intermediate: dict[int, float]
    duration: float | None
    values: tuple[float, ...] | None = None


@dataclass(frozen=True)
class TrialRecord:
    """Everything needed to rebuild one trial: what a TuningTrial object stores.

    `kind` is "counted" for a trial the budget counts, "retry" for an attempt lost to
    the infrastructure (its parameters ran again), "duplicate" for a skipped proposal.
    """

    number: int
    params: Mapping[str, Scalar]
    state: TrialOutcome
    kind: str = "counted"
    value: float | None = None
    reason: str | None = None
    attempt: int = 1
    intermediate: Mapping[int, float] = field(default_factory=dict)
    started_at: float = 0.0
    values: tuple[float, ...] | None = None  # one per objective, with several objectives
    last_step: int | None = None  # a finished trial's last reported step (Finished.step)


@dataclass
class Counts:
    """Trial counts as shown in status and on the progress bar."""

    running: int = 0
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    queued: int = 0  # of the running ones, those waiting for a queue to admit them

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed
