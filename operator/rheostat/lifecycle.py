"""A launched trial's life, from its launch to its end: the engine's trials in flight.

The engine decides *when* things happen (budget, parallelism, the study's end);
this module owns *what happens to one trial*: its reports (and whether the pruner
stops it), its final value or values, a timeout, a loss to the infrastructure and
its retry, a stop because the study failed. Each ending is told to Optuna with the
reason in the trial's user attributes, so every reader (:mod:`rheostat.ledger`)
sees the same story. Pure, like the engine: no I/O beyond the Optuna study.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from rheostat import objectives
from rheostat.events import Finished, Progress, Refused, StopTrial
from rheostat.ledger import ATTR_ATTEMPT, ATTR_KIND, ATTR_LAST_STEP, ATTR_REASON, ATTR_REQUEUED
from rheostat.space import SearchSpace
from rheostat.spec import StudySpec


@dataclass
class RunningTrial:
    """What the engine knows of a trial between its launch and its end."""

    trial: optuna.Trial
    asked_at: float
    attempt: int
    # When the trainer started (the backend's Started event); the timeout counts from here.
    started_at: float | None = None
    last_step: int = -1
    last_value: float | None = None
    # Every objective's last reported value, for a trial with several objectives.
    last_metrics: dict[str, float] = field(default_factory=dict)
    # Waiting for a queue to admit it (Kueue): not running, no timeout counting.
    queued: bool = False


class Lifecycle:
    """The running trials of one Optuna study, and every way one of them ends."""

    def __init__(self, study: optuna.Study) -> None:
        self.study = study
        self.running: dict[int, RunningTrial] = {}

    def launch(self, trial: optuna.Trial, now: float, attempt: int, *, queued: bool) -> None:
        self.running[trial.number] = RunningTrial(
            trial, asked_at=now, attempt=attempt, queued=queued
        )

    def adopt(self, trial_id: int, number: int, asked_at: float, attempt: int, step: int) -> None:
        """Take over a trial a previous process launched and the backend still sees run."""
        trial = optuna.Trial(self.study, trial_id)
        self.running[number] = RunningTrial(trial, asked_at, attempt, last_step=step)

    def started(self, number: int, at: float) -> None:
        running = self.running[number]
        running.queued = False
        if running.started_at is None:
            running.started_at = at

    def queued(self, number: int) -> bool:
        """Mark a trial as waiting for quota; True if it had started (a preemption).

        A preempted trial's timeout counts again from its next start; its reports
        count again from the resumed run (a restarted trainer reports steps that
        went to Optuna before are ignored until it passes them; see `progress`).
        """
        running = self.running[number]
        preempted = not running.queued and running.started_at is not None
        running.queued = True
        running.started_at = None
        return preempted

    def admitted(self, number: int) -> None:
        self.running[number].queued = False

    def waiting(self) -> int:
        return sum(1 for r in self.running.values() if r.queued)

    def progress(self, spec: StudySpec, event: Progress) -> StopTrial | None:
        """Record a report; a StopTrial when the pruner ends the trial on it."""
        running = self.running[event.number]
        if event.step <= running.last_step:
            return None
        if spec.multi_objective:
            # Optuna neither stores nor prunes on intermediate values of several
            # objectives; they are kept only as the fallback final values.
            running.last_step = event.step
            running.last_metrics.update(
                (k, v) for k, v in event.metrics.items() if math.isfinite(v)
            )
            return None
        if not math.isfinite(event.value):
            return None
        running.last_step = event.step
        running.last_value = event.value
        running.trial.report(event.value, event.step)
        if not running.trial.should_prune():
            return None
        del self.running[event.number]
        reason = f"pruned at step {event.step} ({spec.primary.metric}={event.value:.6g})"
        running.trial.set_user_attr(ATTR_REASON, reason)
        self.study.tell(running.trial, state=TrialState.PRUNED)
        return StopTrial(event.number, "pruned")

    def finish(self, spec: StudySpec, event: Finished) -> None:
        """The trainer ended: its value (or values), or a failure naming what is missing."""
        running = self.running[event.number]
        result: float | list[float] | None
        if spec.multi_objective:
            result, reason = objectives.final_values(spec.goals, event, running.last_metrics)
        else:
            result, reason = objectives.final_value(spec.primary.metric, event, running.last_value)
        del self.running[event.number]  # only once it has a value or a reason: never lost
        if event.step is not None and event.step >= max(running.last_step, 0):
            # How far it ran, though its last steps may not have been read (pruning).
            running.trial.set_user_attr(ATTR_LAST_STEP, event.step)
        if reason:
            running.trial.set_user_attr(ATTR_REASON, reason)
        if result is None:
            self.study.tell(running.trial, state=TrialState.FAIL)
        else:
            self.study.tell(running.trial, result)

    def refuse(self, event: Refused) -> None:
        """The trial could not launch at all: a counted failure."""
        running = self.running.pop(event.number)
        running.trial.set_user_attr(ATTR_REASON, event.reason)
        self.study.tell(running.trial, state=TrialState.FAIL)

    def timeouts(self, timeout: int | None, now: float) -> list[StopTrial]:
        """Trials whose trainer has run longer than `timeout` (pending time excluded)."""
        if timeout is None:
            return []
        stops = []
        for number, running in list(self.running.items()):
            if running.started_at is not None and now - running.started_at > timeout:
                del self.running[number]
                running.trial.set_user_attr(ATTR_REASON, f"timed out after {timeout}s")
                self.study.tell(running.trial, state=TrialState.FAIL)
                stops.append(StopTrial(number, "timeout"))
        return stops

    def close_and_retry(
        self,
        number: int,
        reason: str,
        space: SearchSpace,
        max_retries: int,
        *,
        infrastructure: bool = True,
    ) -> None:
        """Close a trial lost to the infrastructure and queue its parameters again.

        An interruption of the tuner itself is nobody's failure: it is always re-run
        and uses up no attempt. An infrastructure loss uses one of `max_retries`.
        """
        self.running.pop(number, None)
        frozen = self.study._storage.get_trial(self.trial_id(number))
        if not set(space.distributions) <= set(frozen.params):
            # Interrupted inside `ask`, before all its parameters were drawn: it never
            # launched, so there is nothing to re-run (re-queuing a partial set would
            # let the sampler fill in a parameter set that already ran).
            self._set_attr(number, ATTR_KIND, "duplicate")
            self.study.tell(number, state=TrialState.FAIL)
            return
        attempt = int(frozen.user_attrs.get(ATTR_ATTEMPT, 1))
        retry = not infrastructure or attempt <= max_retries
        next_attempt = attempt + 1 if infrastructure else attempt
        suffix = "; retrying" if retry else f"; gave up after {attempt} attempts"
        # Attributes first: Optuna refuses to change a trial once it is finished.
        self._set_attr(number, ATTR_KIND, "retry" if retry else "counted")
        self._set_attr(number, ATTR_REASON, reason + suffix)
        self.study.tell(number, state=TrialState.FAIL)
        if retry:
            self.study.enqueue_trial(
                dict(frozen.params), user_attrs={ATTR_ATTEMPT: next_attempt, ATTR_REQUEUED: True}
            )

    def stop_all(self, reason: str) -> list[StopTrial]:
        """Stop every running trial; they are the study's loss, not counted failures."""
        stops = []
        for number, running in list(self.running.items()):
            del self.running[number]
            running.trial.set_user_attr(ATTR_KIND, "retry")
            running.trial.set_user_attr(ATTR_REASON, f"stopped: {reason}")
            self.study.tell(running.trial, state=TrialState.FAIL)
            stops.append(StopTrial(number, reason))
        return stops

    def trial_id(self, number: int) -> int:
        storage = self.study._storage
        return int(storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number))

    def _set_attr(self, number: int, key: str, value: Any) -> None:
        self.study._storage.set_trial_user_attr(self.trial_id(number), key, value)
