"""The study state machine every backend drives: events in, actions out.

A backend (local processes or Kubernetes Jobs) reports what it observed (a trial
progressed, finished, was lost; the LR range test ended) and asks what to do next.
The engine decides: which parameters to try (Optuna ask-and-tell), when to prune or
time a trial out, when to retry, when the study is done. It performs no I/O; the
Optuna study it drives is the state, so a study kept in SQLite (local mode) or
rebuilt from TuningTrial objects (operator) resumes where it stopped.

Budget accounting, in one place:
- a trial *finishes* as complete, pruned or failed; `maxTrials` counts finished trials
  (failed ones included: they spent compute, as in Katib);
- an infrastructure loss (eviction, node loss, an interrupted local run) is not the
  trainer's fault: the same parameters are retried up to `maxRetries` times and only
  then count as a failure;
- the study fails when more than `maxFailedTrials` trials have failed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState

from rheostat import lr_range
from rheostat.sampling import make_pruner, make_sampler
from rheostat.space import LrOverride, SearchSpace, build_space, grid_size
from rheostat.spec import Budget, Scalar, StudySpec, default_value

Phase = Literal["LrRangeTest", "Running", "Succeeded", "Failed"]
TrialOutcome = Literal["running", "complete", "pruned", "failed"]

# Optuna user attributes that carry Rheostat's bookkeeping with each trial.
ATTR_REASON = "rheostat:reason"
ATTR_KIND = "rheostat:kind"  # "counted" (default), "retry" (infra loss), "duplicate"
ATTR_ATTEMPT = "rheostat:attempt"
ATTR_REQUEUED = "rheostat:requeued"  # re-runs of known parameters skip the duplicate check
ATTR_LR_RANGE = "rheostat:lrRangeTest"
ATTR_SPEC = "rheostat:spec"
# How often to re-ask the study's sampler, then plain random sampling, when a
# proposal repeats parameters already tried. Model-based asks are the expensive
# ones (a GP fit each), so they get few tries before the cheap fallback.
SAMPLER_RETRIES = 3
RANDOM_RETRIES = 30


# ----- events a backend reports -------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """An intermediate value of the objective, read from the trial's metrics."""

    number: int
    step: int
    value: float


@dataclass(frozen=True)
class Finished:
    """A trial's process ended; `metrics` is its termination message, if any."""

    number: int
    exit_code: int
    metrics: Mapping[str, Any] | None = None
    message: str = ""


@dataclass(frozen=True)
class Lost:
    """A trial was lost to the infrastructure (eviction, node loss, interruption)."""

    number: int
    reason: str


@dataclass(frozen=True)
class LrRangeFinished:
    """The LR range test ended: its curve, or why there is none."""

    lrs: Sequence[float] = ()
    losses: Sequence[float] = ()
    error: str | None = None


Event = Progress | Finished | Lost | LrRangeFinished


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


@dataclass(frozen=True)
class TrialView:
    """What a user sees of one trial."""

    number: int
    state: TrialOutcome
    params: dict[str, Scalar]
    value: float | None
    reason: str | None
    intermediate: dict[int, float]
    duration: float | None


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


_STATES: dict[TrialOutcome, TrialState] = {
    "running": TrialState.RUNNING,
    "complete": TrialState.COMPLETE,
    "pruned": TrialState.PRUNED,
    "failed": TrialState.FAIL,
}


@dataclass
class _Running:
    trial: optuna.Trial
    started_at: float
    attempt: int
    last_step: int = -1
    last_value: float | None = None


@dataclass
class Counts:
    """Trial counts as shown in status and on the progress bar."""

    running: int = 0
    complete: int = 0
    pruned: int = 0
    failed: int = 0

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed


@dataclass
class Engine:
    """Drives one study. Create it with :meth:`open`, then feed events and ask for actions."""

    spec: StudySpec
    study: optuna.Study
    space: SearchSpace
    phase: Phase
    running: dict[int, _Running] = field(default_factory=dict)
    lr_result: lr_range.LrRangeResult | None = None
    lr_error: str | None = None
    exhausted: bool = False
    failure_reason: str | None = None
    # Per process on purpose: a test started by a tuner that died is started again.
    _lr_test_started: bool = False

    # ----- construction ----------------------------------------------------------------

    @classmethod
    def open(
        cls, spec: StudySpec, study: optuna.Study, *, adopt: Mapping[int, float] | None = None
    ) -> Engine:
        """Build an engine over an Optuna study, resuming whatever it already holds.

        Trials left RUNNING by a previous process that died are not lost: they are
        closed as interrupted and their parameters queued to run again, unless the
        backend still sees them run (`adopt`: number -> start time), as a Job that
        outlived an operator restart does.
        """
        override, lr_result, lr_error = _stored_lr_outcome(spec, study)
        space = build_space(spec.parameters, override, grid=spec.algorithm.name == "grid")
        study.sampler = make_sampler(spec.algorithm, space)
        study.pruner = make_pruner(spec.early_stopping)
        needs_lr_test = spec.lr_range_test is not None and lr_result is None and lr_error is None
        engine = cls(
            spec=spec,
            study=study,
            space=space,
            phase="LrRangeTest" if needs_lr_test else "Running",
            lr_result=lr_result,
            lr_error=lr_error,
        )
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if adopt is not None and trial.number in adopt:
                engine.running[trial.number] = _Running(
                    optuna.Trial(study, trial._trial_id),
                    started_at=adopt[trial.number],
                    attempt=int(trial.user_attrs.get(ATTR_ATTEMPT, 1)),
                    last_step=max(trial.intermediate_values, default=-1),
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
    ) -> Engine:
        """An engine over an in-memory Optuna study rebuilt from stored trial records.

        This is how the operator survives a restart: the cluster keeps one record per
        trial, and the study is replayed from them. Numbers with no record (skipped
        duplicate proposals) are filled so Optuna's numbers stay the trials' numbers.
        The sampler is re-seeded past the trials so far, so a seeded study does not
        propose its first parameters again.
        """
        study = optuna.create_study(direction=spec.objective.direction)
        if lr_range_test is not None:
            study.set_user_attr(ATTR_LR_RANGE, dict(lr_range_test))
        override, _, _ = _stored_lr_outcome(spec, study)
        space = build_space(spec.parameters, override)
        by_number = {r.number: r for r in records}
        for number in range(max(by_number, default=-1) + 1):
            record = by_number.get(number)
            if record is None:
                study.add_trial(
                    optuna.trial.create_trial(
                        state=TrialState.FAIL, user_attrs={ATTR_KIND: "duplicate"}
                    )
                )
                continue
            study.add_trial(_frozen(record, space))
        if spec.algorithm.seed is not None:
            seed = spec.algorithm.seed + len(by_number)
            spec = spec.model_copy(
                update={"algorithm": spec.algorithm.model_copy(update={"seed": seed})}
            )
        running = {r.number: r.started_at for r in records if r.state == "running"}
        return cls.open(spec, study, adopt=running)

    def record(self, number: int) -> TrialRecord:
        """The stored form of one trial, for a backend to persist after each change."""
        trial = self._storage.get_trial(self._trial_id(number))
        outcome = _outcome(trial)
        if trial.state == TrialState.RUNNING:
            state: TrialOutcome = "running"
        elif outcome is None:
            state = "failed"
        else:
            state = outcome
        running = self.running.get(number)
        return TrialRecord(
            number=number,
            params=self.space.complete(trial.params),
            state=state,
            kind=str(trial.user_attrs.get(ATTR_KIND, "counted")),
            value=trial.value if state in {"complete", "pruned"} else None,
            reason=trial.user_attrs.get(ATTR_REASON),
            attempt=int(trial.user_attrs.get(ATTR_ATTEMPT, 1)),
            intermediate=dict(trial.intermediate_values),
            started_at=running.started_at if running else 0.0,
        )

    # ----- the two entry points --------------------------------------------------------

    def observe(self, event: Event, now: float) -> list[Action]:
        """Record what a backend saw; returns follow-up actions (e.g. stop a pruned trial)."""
        if isinstance(event, LrRangeFinished):
            self._finish_lr_range(event)
            return []
        if event.number not in self.running:
            return []  # already closed (pruned, timed out): a late report changes nothing
        if isinstance(event, Progress):
            return self._progress(event)
        if isinstance(event, Lost):
            self._close_and_retry(event.number, event.reason)
        else:
            self._finished(event, now)
        self._check_end()
        return []

    def next_actions(self, now: float) -> list[Action]:
        """What to start or stop now, given the budget, timeouts and parallelism."""
        if self.phase == "LrRangeTest":
            return [] if self._lr_test_started else [self._start_lr_test()]
        actions: list[Action] = []
        actions += self._timeouts(now)
        if self.phase == "Running":
            while self._may_launch():
                start = self._ask(now)
                if start is None:
                    break
                actions.append(start)
        if self.phase == "Failed":
            actions += self._stop_all("the study failed")
        self._check_end()
        return actions

    def set_budget(self, budget: Budget) -> None:
        """Apply a changed budget: the one change a running (or ended) study accepts.

        More trials reopen a study that had spent its budget; a higher
        maxFailedTrials reopens one that had failed for too many failures.
        """
        self.spec = self.spec.model_copy(update={"budget": budget})
        counts = self.counts()
        more = counts.finished < self.target_trials
        if self.phase == "Succeeded" and not self.exhausted and more:
            self.phase = "Running"
        elif self.phase == "Failed" and counts.failed <= budget.max_failed_trials:
            self.phase = "Running"
            self.failure_reason = None
        self._check_end()

    # ----- queries ---------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.phase in {"Succeeded", "Failed"}

    @property
    def target_trials(self) -> int:
        """maxTrials, capped by the grid's size for a grid search."""
        if self.space.grid is not None:
            return min(
                self.spec.budget.max_trials, math.prod(len(v) for v in self.space.grid.values())
            )
        return self.spec.budget.max_trials

    def counts(self) -> Counts:
        counts = Counts(running=len(self.running))
        for trial in self.study.get_trials(deepcopy=False):
            outcome = _outcome(trial)
            if outcome == "complete":
                counts.complete += 1
            elif outcome == "pruned":
                counts.pruned += 1
            elif outcome == "failed":
                counts.failed += 1
        return counts

    def trials(self) -> list[TrialView]:
        """Every trial a user would count (duplicates and retried attempts left out)."""
        views = []
        for trial in self.study.get_trials(deepcopy=False):
            outcome = _outcome(trial)
            if outcome is None:
                continue
            duration = None
            if trial.datetime_start and trial.datetime_complete:
                duration = (trial.datetime_complete - trial.datetime_start).total_seconds()
            views.append(
                TrialView(
                    number=trial.number,
                    state=outcome,
                    params=self.space.complete(trial.params),
                    value=trial.value if outcome in {"complete", "pruned"} else None,
                    reason=trial.user_attrs.get(ATTR_REASON),
                    intermediate=dict(trial.intermediate_values),
                    duration=duration,
                )
            )
        return views

    def best(self) -> TrialView | None:
        complete = [t for t in self.trials() if t.state == "complete" and t.value is not None]
        if not complete:
            return None
        pick = max if self.spec.objective.direction == "maximize" else min
        return pick(complete, key=lambda t: t.value if t.value is not None else math.nan)

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
        if best is not None:
            status["bestTrial"] = {
                "number": best.number,
                "value": best.value,
                "params": best.params,
            }
        if self.lr_result is not None:
            status["lrRangeTest"] = _lr_summary(self.lr_result, self.spec)
        elif self.lr_error is not None:
            status["lrRangeTest"] = {"error": self.lr_error}
        if self.failure_reason:
            status["reason"] = self.failure_reason
        return status

    # ----- LR range test ---------------------------------------------------------------

    def _start_lr_test(self) -> StartLrRangeTest:
        test = self.spec.lr_range_test
        assert test is not None
        params = {p.name: default_value(p) for p in self.spec.parameters}
        params[test.parameter] = test.min_lr
        self._lr_test_started = True
        return StartLrRangeTest(
            params=params,
            parameter=test.parameter,
            min_lr=test.min_lr,
            max_lr=test.max_lr,
            steps=test.steps,
        )

    def _finish_lr_range(self, event: LrRangeFinished) -> None:
        if self.phase != "LrRangeTest":
            return
        test = self.spec.lr_range_test
        assert test is not None
        if event.error is None:
            try:
                self.lr_result = _analyse(self.spec, event.lrs, event.losses)
            except lr_range.LrRangeError as error:
                self.lr_error = f"the LR range test's curve could not be used: {error}"
        else:
            self.lr_error = event.error
        if self.lr_result is not None:
            self.study.set_user_attr(ATTR_LR_RANGE, self.lr_result.to_dict())
            override = _override(self.spec, self.lr_result)
            self.space = build_space(
                self.spec.parameters, override, grid=self.space.grid is not None
            )
            self.study.sampler = make_sampler(self.spec.algorithm, self.space)
        else:
            # The study still runs over the user's own range; status says why.
            self.study.set_user_attr(ATTR_LR_RANGE, {"error": self.lr_error})
        self.phase = "Running"

    # ----- trials ----------------------------------------------------------------------

    def _may_launch(self) -> bool:
        counts = self.counts()
        return (
            not self.exhausted
            and counts.running < self.spec.budget.parallelism
            and counts.finished + counts.running < self.target_trials
        )

    def _ask(self, now: float) -> StartTrial | None:
        """Ask for parameters not tried yet in this study.

        A model-based sampler can keep proposing one point (a GP's acquisition
        maximum on a discrete space, say), so after a run of duplicates the ask falls
        back to plain random sampling; only when that finds nothing new either is
        the space taken as used up.
        """
        trials = self.study.get_trials(deepcopy=False)
        sampler_tries = SAMPLER_RETRIES
        if self.space.grid is not None:
            # A rebuilt grid forgets which points it visited; each re-ask marks one.
            sampler_tries += sum(1 for t in trials if _outcome(t) is not None)
        rounds = [
            (None, sampler_tries),
            (self._fallback_sampler(len(trials)), RANDOM_RETRIES),
        ]
        for sampler, tries in rounds:
            for _ in range(tries):
                trial = self._ask_with(sampler)
                params = self.space.complete(trial.params)
                attempt = int(trial.user_attrs.get(ATTR_ATTEMPT, 1))
                requeued = bool(trial.user_attrs.get(ATTR_REQUEUED))
                if requeued or not self._already_tried(trial.number, params):
                    trial.set_user_attr(ATTR_ATTEMPT, attempt)
                    self.running[trial.number] = _Running(trial, started_at=now, attempt=attempt)
                    return StartTrial(trial.number, params, attempt)
                trial.set_user_attr(ATTR_KIND, "duplicate")
                self.study.tell(trial, state=TrialState.FAIL)
        # Neither the sampler nor random search found anything new: the space is used up.
        self.exhausted = True
        return None

    def _fallback_sampler(self, trials: int) -> optuna.samplers.BaseSampler:
        seed = None if self.spec.algorithm.seed is None else self.spec.algorithm.seed + trials
        return optuna.samplers.RandomSampler(seed=seed)

    def _ask_with(self, sampler: optuna.samplers.BaseSampler | None) -> optuna.Trial:
        if sampler is None:
            return self.study.ask(self.space.distributions)
        own = self.study.sampler
        self.study.sampler = sampler
        try:
            return self.study.ask(self.space.distributions)
        finally:
            self.study.sampler = own

    def _already_tried(self, number: int, params: Mapping[str, Scalar]) -> bool:
        for other in self.study.get_trials(deepcopy=False):
            if other.number == number or _outcome(other) in {None, "failed"}:
                continue
            if self.space.complete(other.params) == params:
                return True
        return False

    def _progress(self, event: Progress) -> list[Action]:
        running = self.running[event.number]
        if event.step <= running.last_step or not math.isfinite(event.value):
            return []
        running.last_step = event.step
        running.last_value = event.value
        running.trial.report(event.value, event.step)
        if not running.trial.should_prune():
            return []
        del self.running[event.number]
        reason = f"pruned at step {event.step} ({self.spec.objective.metric}={event.value:.6g})"
        running.trial.set_user_attr(ATTR_REASON, reason)
        self.study.tell(running.trial, state=TrialState.PRUNED)
        self._check_end()
        return [StopTrial(event.number, "pruned")]

    def _finished(self, event: Finished, now: float) -> None:
        running = self.running.pop(event.number)
        value, reason = _objective(self.spec.objective.metric, event, running.last_value)
        if value is None:
            running.trial.set_user_attr(ATTR_REASON, reason)
            self.study.tell(running.trial, state=TrialState.FAIL)
            return
        if reason:
            running.trial.set_user_attr(ATTR_REASON, reason)
        self.study.tell(running.trial, value)

    def _timeouts(self, now: float) -> list[Action]:
        timeout = self.spec.budget.trial_timeout
        if timeout is None:
            return []
        actions: list[Action] = []
        for number, running in list(self.running.items()):
            if now - running.started_at > timeout:
                del self.running[number]
                running.trial.set_user_attr(ATTR_REASON, f"timed out after {timeout}s")
                self.study.tell(running.trial, state=TrialState.FAIL)
                actions.append(StopTrial(number, "timeout"))
        return actions

    def _close_and_retry(self, number: int, reason: str, *, infrastructure: bool = True) -> None:
        """Close a trial lost to the infrastructure and queue its parameters again.

        An interruption of the tuner itself is nobody's failure: it is always re-run
        and uses up no attempt. An infrastructure loss uses one of `maxRetries`.
        """
        self.running.pop(number, None)
        frozen = self._storage.get_trial(self._trial_id(number))
        if not set(self.space.distributions) <= set(frozen.params):
            # Interrupted inside `ask`, before all its parameters were drawn: it never
            # launched, so there is nothing to re-run (re-queuing a partial set would
            # let the sampler fill in a parameter set that already ran).
            self._set_attr(number, ATTR_KIND, "duplicate")
            self.study.tell(number, state=TrialState.FAIL)
            return
        attempt = int(frozen.user_attrs.get(ATTR_ATTEMPT, 1))
        retry = not infrastructure or attempt <= self.spec.budget.max_retries
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

    @property
    def _storage(self) -> Any:
        return self.study._storage

    def _trial_id(self, number: int) -> int:
        return int(
            self._storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
        )

    def _set_attr(self, number: int, key: str, value: Any) -> None:
        self._storage.set_trial_user_attr(self._trial_id(number), key, value)

    def _stop_all(self, reason: str) -> list[Action]:
        actions: list[Action] = []
        for number, running in list(self.running.items()):
            del self.running[number]
            running.trial.set_user_attr(ATTR_KIND, "retry")
            running.trial.set_user_attr(ATTR_REASON, f"stopped: {reason}")
            self.study.tell(running.trial, state=TrialState.FAIL)
            actions.append(StopTrial(number, reason))
        return actions

    def _check_end(self) -> None:
        if self.done or self.phase == "LrRangeTest":
            return
        counts = self.counts()
        if counts.failed > self.spec.budget.max_failed_trials:
            self.phase = "Failed"
            self.failure_reason = (
                f"{counts.failed} trials failed, more than maxFailedTrials="
                f"{self.spec.budget.max_failed_trials}"
            )
        elif counts.running == 0 and (counts.finished >= self.target_trials or self.exhausted):
            self.phase = "Succeeded"


# ----- helpers ------------------------------------------------------------------------


def _frozen(record: TrialRecord, space: SearchSpace) -> FrozenTrial:
    params = {k: v for k, v in record.params.items() if k in space.distributions}
    value = record.value
    if record.state == "pruned" and value is None and record.intermediate:
        value = record.intermediate[max(record.intermediate)]
    attrs: dict[str, Any] = {ATTR_KIND: record.kind, ATTR_ATTEMPT: record.attempt}
    if record.reason:
        attrs[ATTR_REASON] = record.reason
    return optuna.trial.create_trial(
        state=_STATES[record.state],
        value=value if record.state in {"complete", "pruned"} else None,
        params=params,
        distributions={k: space.distributions[k] for k in params},
        user_attrs=attrs,
        intermediate_values=dict(record.intermediate),
    )


def _outcome(trial: FrozenTrial) -> TrialOutcome | None:
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


def _objective(
    metric: str, event: Finished, last_reported: float | None
) -> tuple[float | None, str | None]:
    """The trial's final value, or None and the reason it has none."""
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
        return None, f"the objective metric {metric!r} is not a number: {raw!r}"
    if not math.isfinite(value):
        return None, f"the objective metric {metric!r} is {value}"
    return value, reason


def _lr_bounds(spec: StudySpec) -> tuple[float, float]:
    test = spec.lr_range_test
    assert test is not None
    parameter = next(p for p in spec.parameters if p.name == test.parameter)
    assert parameter.min is not None
    assert parameter.max is not None
    return parameter.min, parameter.max


def _analyse(
    spec: StudySpec, lrs: Sequence[float], losses: Sequence[float]
) -> lr_range.LrRangeResult:
    test = spec.lr_range_test
    assert test is not None
    return lr_range.analyse(lrs, losses, rule=test.suggestion, bounds=_lr_bounds(spec))


def _override(spec: StudySpec, result: lr_range.LrRangeResult) -> LrOverride:
    test = spec.lr_range_test
    assert test is not None
    return LrOverride(test.parameter, test.apply, result.suggested_lr, result.lower, result.upper)


def _lr_summary(result: lr_range.LrRangeResult, spec: StudySpec) -> dict[str, Any]:
    override = _override(spec, result)
    summary: dict[str, Any] = {
        "rule": result.rule,
        "suggestedLr": result.suggested_lr,
        "suggestions": dict(result.suggestions),
        "policy": override.policy,
        "steps": len(result.lrs),
    }
    if override.policy == "narrow":
        summary["narrowedTo"] = [override.lower, override.upper]
    return summary


def _stored_lr_outcome(
    spec: StudySpec, study: optuna.Study
) -> tuple[LrOverride | None, lr_range.LrRangeResult | None, str | None]:
    stored = study.user_attrs.get(ATTR_LR_RANGE)
    if spec.lr_range_test is None or stored is None:
        return None, None, None
    if "error" in stored:
        return None, None, str(stored["error"])
    result = _analyse(spec, stored["lrs"], stored["losses"])
    return _override(spec, result), result, None


def grid_points(spec: StudySpec) -> int:
    """Size of a grid study's full grid (for validation and display)."""
    return grid_size(spec.parameters)
