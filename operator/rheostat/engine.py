"""The study state machine every backend drives: events in, actions out.

A backend (local processes or Kubernetes Jobs) reports what it observed (a trial
started, progressed, finished, was lost; the LR range test ended) and asks what to
do next. The engine decides: when to prune or time a trial out, when to retry, when
the study is done. It performs no I/O; the Optuna study it drives is the state, so
a study kept in SQLite (local mode) or rebuilt from TuningTrial objects (operator)
resumes where it stopped. Its collaborators each own one seam: `proposals` (new,
untried parameters), `lifecycle` (a launched trial's reports and its end),
`ledger` (how trials count and what readers see), `objectives` (one value or
several, and the Pareto front) and `lr_phase` (what the LR range test's outcome
does to the study). The budget rules (what counts, when a study ends) are in
`budget` (imported as `rules`); the engine applies them after every change.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from rheostat import budget as rules
from rheostat import ledger, lr_phase, lr_range, objectives, warm_start
from rheostat.events import (
    Action,
    Admitted,
    Counts,
    Event,
    Finished,
    Lost,
    LrRangeFinished,
    Phase,
    Progress,
    Queued,
    Refused,
    Started,
    StartLrRangeTest,
    StartTrial,
    StopTrial,
    TrialOutcome,
    TrialRecord,
    TrialView,
)
from rheostat.ledger import ATTR_ATTEMPT, ATTR_LR_RANGE
from rheostat.lifecycle import Lifecycle, RunningTrial
from rheostat.proposals import Proposer
from rheostat.sampling import make_pruner, make_sampler
from rheostat.space import SearchSpace, build_space, grid_size
from rheostat.spec import Budget, StudySpec

__all__ = [
    "ATTR_SPEC",
    "Action",
    "Admitted",
    "Counts",
    "Engine",
    "Event",
    "Finished",
    "Lost",
    "LrRangeFinished",
    "Phase",
    "Progress",
    "Queued",
    "Refused",
    "StartLrRangeTest",
    "StartTrial",
    "Started",
    "StopTrial",
    "TrialOutcome",
    "TrialRecord",
    "TrialView",
]
ATTR_SPEC = ledger.ATTR_SPEC


@dataclass
class Engine:
    """Drives one study. Create it with :meth:`open`, then feed events and ask for actions."""

    spec: StudySpec
    study: optuna.Study
    space: SearchSpace
    phase: Phase
    lr_result: lr_range.LrRangeResult | None = None
    lr_error: str | None = None
    exhausted: bool = False
    failure_reason: str | None = None
    warnings: list[str] = field(default_factory=list)  # for the backend to log or emit
    # Per process on purpose: a test started by a tuner that died is started again.
    _lr_test_started: bool = False
    # The earlier study's trials, told when the space is final (after an LR range test).
    _pending_seeds: list[TrialRecord] = field(default_factory=list)
    lifecycle: Lifecycle = field(init=False)
    # Whether the backend creates trials suspended, waiting for a queue (Kueue): a
    # launched trial then holds a queueDepth place until it is admitted.
    queued_on_launch: bool = False
    # Samples taken while another trial of the study waited for quota (this process).
    sampled_while_waiting: int = 0
    preemptions: int = 0
    _queueing: bool = False  # a trial has waited for a queue: status shows the counts

    def __post_init__(self) -> None:
        self.lifecycle = Lifecycle(self.study)

    @property
    def running(self) -> dict[int, RunningTrial]:
        """The trials in flight, by number."""
        return self.lifecycle.running

    # ----- construction ----------------------------------------------------------------

    @classmethod
    def open(
        cls,
        spec: StudySpec,
        study: optuna.Study,
        *,
        adopt: Mapping[int, float] | None = None,
        seeds: Sequence[TrialRecord] = (),
    ) -> Engine:
        """Build an engine over an Optuna study, resuming whatever it already holds.

        Trials left RUNNING by a previous process that died are not lost: they are
        closed as interrupted and their parameters queued to run again, unless the
        backend still sees them run (`adopt`: number -> launch time), as a Job that
        outlived an operator restart does. An adopted trial's timeout restarts with
        the backend's next Started event. A fresh study is first told `seeds`, the
        finished trials of `spec.warmStart.fromStudy`, and its configurations are
        queued (see :mod:`rheostat.warm_start`); with an LR range test still to run,
        both wait for its end, so the seeds are told over the space the trials use.
        """
        outcome = lr_phase.restore(spec, study.user_attrs.get(ATTR_LR_RANGE))
        result = outcome.result if outcome else None
        override = lr_phase.override(spec, result) if result else None
        space = build_space(spec.parameters, override, grid=spec.algorithm.name == "grid")
        study.sampler = make_sampler(spec.algorithm, space)
        study.pruner = make_pruner(spec.early_stopping)
        engine = cls(
            spec=spec,
            study=study,
            space=space,
            phase="LrRangeTest" if spec.lr_range_test is not None and not outcome else "Running",
            lr_result=result,
            lr_error=outcome.error if outcome else None,
        )
        engine._pending_seeds = list(seeds)
        if engine.phase != "LrRangeTest":
            engine._warm_up()  # else once the test has set the space (_finish_lr_range)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if adopt is not None and trial.number in adopt:
                engine.lifecycle.adopt(
                    trial._trial_id,
                    trial.number,
                    asked_at=adopt[trial.number],
                    attempt=int(trial.user_attrs.get(ATTR_ATTEMPT, 1)),
                    step=max(trial.intermediate_values, default=-1),
                )
                continue
            engine._close_and_retry(
                trial.number, "interrupted: the tuner stopped while it ran", infrastructure=False
            )
        engine._check_end()
        return engine

    @classmethod
    def rebuild(
        cls,
        spec: StudySpec,
        records: Sequence[TrialRecord],
        lr_range_test: Mapping[str, Any] | None = None,
        seeds: Sequence[TrialRecord] = (),
    ) -> Engine:
        """An engine over an in-memory Optuna study rebuilt from stored trial records.

        This is how the operator survives a restart: the cluster keeps one record per
        trial, and the study is replayed from them. Numbers with no record (skipped
        duplicate proposals) are filled so Optuna's numbers stay the trials' numbers.
        The sampler is re-seeded past the trials so far, so a seeded study does not
        propose its first parameters again. `seeds` are the trials of
        `spec.warmStart.fromStudy`, told first (see :func:`warm_start.reseed`).
        """
        study = optuna.create_study(directions=objectives.directions(spec))
        if lr_range_test is not None:
            study.set_user_attr(ATTR_LR_RANGE, dict(lr_range_test))
        outcome = lr_phase.restore(spec, lr_range_test)
        result = outcome.result if outcome else None
        space = build_space(spec.parameters, lr_phase.override(spec, result) if result else None)
        by_number = {r.number: r for r in records}
        told = warm_start.reseed(study, spec, space, seeds, min(by_number)) if records else []
        for number in range(len(study.trials), max(by_number, default=-1) + 1):
            stored = by_number.get(number)
            trial = ledger.placeholder() if stored is None else ledger.frozen(stored, space)
            study.add_trial(trial)
        if spec.algorithm.seed is not None:
            seed = spec.algorithm.seed + len(by_number)
            spec = spec.model_copy(
                update={"algorithm": spec.algorithm.model_copy(update={"seed": seed})}
            )
        running = {r.number: r.started_at for r in records if r.state == "running"}
        engine = cls.open(spec, study, adopt=running, seeds=seeds)
        engine.warnings += told
        return engine

    # ----- the two entry points --------------------------------------------------------

    def observe(self, event: Event, now: float) -> list[Action]:
        """Record what a backend saw; returns follow-up actions (e.g. stop a pruned trial)."""
        if isinstance(event, LrRangeFinished):
            self._finish_lr_range(event)
            return []
        if event.number not in self.running:
            return []  # already closed (pruned, timed out): a late report changes nothing
        if isinstance(event, Started):
            self.lifecycle.started(event.number, event.at)
            return []
        if isinstance(event, Queued):
            self._queueing = True
            self.preemptions += self.lifecycle.queued(event.number)
            return []
        if isinstance(event, Admitted):
            self.lifecycle.admitted(event.number)
            return []
        if isinstance(event, Progress):
            stop = self.lifecycle.progress(self.spec, event)
            if stop is None:
                return []
            self._check_end()  # a pruned trial is finished: the budget may be spent
            return [stop]
        if isinstance(event, Lost):
            self._close_and_retry(event.number, event.reason)
        elif isinstance(event, Refused):
            self.lifecycle.refuse(event)
        else:
            self.lifecycle.finish(self.spec, event)
        self._check_end()
        return []  # a failed study's running trials are stopped by next_actions

    def next_actions(self, now: float) -> list[Action]:
        """What to start or stop now, given the budget, timeouts and parallelism.

        Timeouts are settled and the end checked before anything launches: a timeout
        that fails the study must not be followed by new trials in the same breath.
        """
        if self.phase == "LrRangeTest":
            return [] if self._lr_test_started else [self._start_lr_test()]
        actions: list[Action] = []
        actions += self.lifecycle.timeouts(self.spec.budget.trial_timeout, now)
        self._check_end()
        while self.phase == "Running" and self._may_launch():
            start = self._launch(now)
            if start is None:
                break
            actions.append(start)
        self._check_end()
        if self.phase == "Failed":
            actions += self.lifecycle.stop_all("the study failed")
        return actions

    def set_budget(self, budget: Budget) -> None:
        """Apply a changed budget: the one change a running (or ended) study accepts.

        More trials reopen a study that had spent its budget; a higher
        maxFailedTrials reopens one that had failed for too many failures.
        """
        self.spec = self.spec.model_copy(update={"budget": budget})
        if self.done and self.counts().failed <= budget.max_failed_trials:
            self.phase, self.failure_reason = "Running", None  # reopened; decided again below
        self._check_end()

    def drain_warnings(self) -> list[str]:
        """The warnings not yet handed out (a skipped seed may come after the LR test)."""
        warnings, self.warnings = self.warnings, []
        return warnings

    # ----- queries ---------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.phase in {"Succeeded", "Failed"}

    @property
    def target_trials(self) -> int:
        """maxTrials, capped by the number of points a discrete space holds."""
        capacity = self._proposer().capacity()
        if self.space.grid is not None:
            capacity = math.prod(len(v) for v in self.space.grid.values())
        return rules.target(self.spec.budget.max_trials, capacity)

    def counts(self) -> Counts:
        counts = ledger.counts(self.study, running=len(self.running))
        counts.queued = self.lifecycle.waiting()
        return counts

    def trials(self) -> list[TrialView]:
        """Every trial a user would count (duplicates and retried attempts left out)."""
        return ledger.views(self.study, self.space)

    def best(self) -> TrialView | None:
        """The best trial of a single-objective study; None with several objectives."""
        if self.spec.multi_objective:
            return None
        return ledger.best(self.trials(), self.spec.primary.direction)

    def front(self) -> list[TrialView]:
        """The Pareto front of a study with several objectives (empty with one)."""
        if not self.spec.multi_objective:
            return []
        return objectives.pareto_front(self.trials(), self.spec.goals)

    def record(self, number: int) -> TrialRecord:
        """The stored form of one trial, for a backend to persist after each change."""
        trial = self.study._storage.get_trial(self.lifecycle.trial_id(number))
        running = self.running.get(number)
        return ledger.record(trial, self.space, running.asked_at if running else 0.0)

    def status(self) -> dict[str, Any]:
        """A small, bounded summary for a study's status or a results file."""
        counts = self.counts()
        best = self.best()
        status: dict[str, Any] = {
            "phase": self.phase,
            "trials": {
                "running": counts.running,
                "complete": counts.complete,
                "pruned": counts.pruned,
                "failed": counts.failed,
                "finished": counts.finished,
                "target": self.target_trials,
            },
        }
        if self.queued_on_launch or self._queueing:
            status["trials"]["queued"] = counts.queued
            status["queue"] = {
                "sampledWhileWaiting": self.sampled_while_waiting,
                "preemptions": self.preemptions,
            }
        if best is not None:
            status["bestTrial"] = {
                "number": best.number,
                "value": best.value,
                "params": best.params,
            }
        if self.spec.multi_objective and (
            front := objectives.front_status(self.trials(), self.spec.goals)
        ):
            status["paretoFront"] = front
        if self.lr_result is not None:
            status["lrRangeTest"] = lr_phase.summary(self.spec, self.lr_result)
        elif self.lr_error is not None:
            status["lrRangeTest"] = {"error": self.lr_error}
        if self.failure_reason:
            status["reason"] = self.failure_reason
        if told := warm_start.seeded(self.study):
            status["warmStart"] = {"seeded": told}  # told the sampler, not counted above
        return status

    # ----- LR range test ---------------------------------------------------------------

    def _start_lr_test(self) -> StartLrRangeTest:
        test = self.spec.lr_range_test
        assert test is not None
        self._lr_test_started = True
        return StartLrRangeTest(
            params=lr_phase.start_params(self.spec),
            parameter=test.parameter,
            min_lr=test.min_lr,
            max_lr=test.max_lr,
            steps=test.steps,
        )

    def _finish_lr_range(self, event: LrRangeFinished) -> None:
        if self.phase != "LrRangeTest":
            return
        outcome = (
            lr_phase.analyse(self.spec, event.lrs, event.losses)
            if event.error is None
            else lr_phase.LrOutcome(error=event.error)
        )
        self.lr_result, self.lr_error = outcome.result, outcome.error
        if self.lr_result is not None:
            self.study.set_user_attr(ATTR_LR_RANGE, self.lr_result.to_dict())
            override = lr_phase.override(self.spec, self.lr_result)
            self.space = build_space(
                self.spec.parameters, override, grid=self.space.grid is not None
            )
            self.study.sampler = make_sampler(self.spec.algorithm, self.space)
        else:
            # The study still runs over the user's own range; status says why.
            self.study.set_user_attr(ATTR_LR_RANGE, {"error": self.lr_error})
        self.phase = "Running"
        self._warm_up()

    def _warm_up(self) -> None:
        """Tell the earlier study's trials and queue the configurations, over the
        space the study's own trials will use."""
        source = self.spec.warm_start.from_study if self.spec.warm_start else None
        seeds, self._pending_seeds = self._pending_seeds, []
        self.warnings += warm_start.seed(self.study, self.space, seeds, source or "")
        warm_start.enqueue(self.study, self.spec, self.space)

    # ----- trials ----------------------------------------------------------------------

    def _proposer(self) -> Proposer:
        return Proposer(self.study, self.space, self.spec.algorithm.seed)

    def _may_launch(self) -> bool:
        return rules.may_launch(self.counts(), self.spec.budget, self.target_trials, self.exhausted)

    def _launch(self, now: float) -> StartTrial | None:
        proposal = self._proposer().propose()
        if proposal is None:
            self.exhausted = True  # nothing untried is left: the space is used up
            return None
        trial = proposal.trial
        if self.lifecycle.waiting():
            self.sampled_while_waiting += 1
        self.lifecycle.launch(trial, now, proposal.attempt, queued=self.queued_on_launch)
        return StartTrial(trial.number, self.space.complete(trial.params), proposal.attempt)

    def _close_and_retry(self, number: int, reason: str, *, infrastructure: bool = True) -> None:
        self.lifecycle.close_and_retry(
            number, reason, self.space, self.spec.budget.max_retries, infrastructure=infrastructure
        )

    def _check_end(self) -> None:
        if self.done or self.phase == "LrRangeTest":
            return
        ended = rules.verdict(self.counts(), self.spec.budget, self.target_trials, self.exhausted)
        if ended is not None:
            self.phase, self.failure_reason = ended


# ----- helpers ------------------------------------------------------------------------


def grid_points(spec: StudySpec) -> int:
    """Size of a grid study's full grid (for validation and display)."""
    return grid_size(spec.parameters)
