"""One idempotent, level-based reconcile of a TuningStudy.

Each call is handed the study's children as the operator's watches last saw them
(TuningTrials, Jobs, pods: `Children`, read from memory, never LISTed, and narrowed
to what the study's uid owns: a re-applied study never adopts its predecessor's), turns what
they show into engine events, carries out the engine's actions (create a TuningTrial
and its Job, delete a pruned trial's Job), persists every trial's record on its
TuningTrial and returns the study's status. A view that lags one event behind is
harmless: creating what exists is success and the next event brings another pass.
Nothing lives only in memory: the engine is a cache, rebuilt from the TuningTrials
after a restart, so a killed operator loses no trial and launches none twice.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rheostat import lr_phase, objectives, warm_start
from rheostat.backends.kubernetes import distributed, queueing
from rheostat.backends.kubernetes import manifests as build
from rheostat.backends.kubernetes.ask_worker import AskBackend
from rheostat.backends.kubernetes.children import Children
from rheostat.backends.kubernetes.gp_worker import ask_backend
from rheostat.backends.kubernetes.kube import (
    Kube,
    NameTakenError,
    RefusedError,
    json_safe,
    merge_patch,
)
from rheostat.backends.kubernetes.observe import (
    InfrastructureLost,
    Missing,
    Pending,
    Queued,
    Running,
    Succeeded,
    TrainingFailed,
    job_state,
    timestamp,
)
from rheostat.backends.kubernetes.observe_ranks import trial_state
from rheostat.contract import LR_RANGE_TEST_NUMBER, last_step, lr_curve, parse_termination_message
from rheostat.engine import (
    Action,
    Admitted,
    Engine,
    Event,
    Finished,
    Lost,
    LrRangeFinished,
    Progress,
    Started,
    StartLrRangeTest,
    StartTrial,
    StopTrial,
    TrialRecord,
)
from rheostat.engine import (
    Queued as TrialQueued,
)
from rheostat.engine import (
    Refused as TrialRefused,
)
from rheostat.eta import duration_text, eta_seconds
from rheostat.metrics.operator import TRIAL_STATES, OperatorMetrics
from rheostat.metrics.promql import query_trial
from rheostat.metrics.scrape import TrialSample, scrape
from rheostat.spec import StudySpec
from rheostat.waiting import join_stuck

TERMINAL_PHASES = {"Succeeded", "Failed"}
# How long a Job this operator created may go unseen by the watches before it counts
# as gone (created and deleted before any pass saw it, or its name held by another
# owner). A watch shows a new Job within a second; a minute covers a busy API server.
# Capped by the study's unschedulableTimeout, the bound on a trial that cannot start.
UNSEEN_JOB_GRACE_SECONDS = 60.0
# What building a Job from a malformed template raises (the builder indexes plain dicts).
MALFORMED_TEMPLATE = (KeyError, TypeError, ValueError, AttributeError, IndexError)
# Deleted studies remembered, so that a pass still running at the deletion does not
# bring the study back into memory or the metrics (uids are never reused).
FORGOTTEN_KEPT = 1024


@dataclass(frozen=True)
class StudyEvent:
    """A Kubernetes Event to post on the study."""

    type: str  # "Normal" or "Warning"
    reason: str
    message: str


@dataclass(frozen=True)
class _Stuck:
    """A trial pod that is not getting going, as the condition reports it."""

    reason: str
    message: str


@dataclass
class _Runtime:
    engine: Engine
    persisted: dict[int, dict[str, Any]] = field(default_factory=dict)
    lr_curve: dict[str, Any] | None = None
    stuck: dict[int, _Stuck] = field(default_factory=dict)
    # Trials (and the LR range test, LR_RANGE_TEST_NUMBER) waiting for a queue, and
    # why; and those failed because Kueue could not admit them within queueTimeout.
    queued: dict[int, queueing.Wait] = field(default_factory=dict)
    queue_timeouts: dict[int, str] = field(default_factory=dict)
    # Why a Job's pods are refused (its Warning event), looked up once per trial.
    refusals: dict[int, str] = field(default_factory=dict)
    written_status: dict[str, Any] | None = None
    # Jobs this process created, and those the watches have shown: a Job created but
    # not yet seen is on its way, not missing (no second create for a lagging view),
    # for at most the grace from when it was first tried (`launching`, the pass's clock).
    jobs_created: set[int] = field(default_factory=set)
    jobs_seen: set[int] = field(default_factory=set)
    launching: dict[int, float] = field(default_factory=dict)
    # TuningTrials this process created (by number), whose watch event may lag.
    trial_uids: dict[int, str] = field(default_factory=dict)
    # The LR range test's Job: what to create (again, while its name is taken), when
    # it was first tried, whether it was created, and whether a watch has shown it.
    lr_start: StartLrRangeTest | None = None
    lr_launched_at: float | None = None
    lr_created: bool = False
    lr_seen: bool = False


@dataclass
class Reconciler:
    """Holds the engines of the studies this operator drives (a cache, not state)."""

    kube: Kube
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    runtimes: dict[str, _Runtime] = field(default_factory=dict)
    locks: dict[str, threading.Lock] = field(default_factory=dict)
    phases: dict[str, str] = field(default_factory=dict)
    asks: AskBackend = field(init=False)  # where GP asks run, off this process
    # Deleted studies (bounded), and the lock that orders a deletion against the
    # gauges a pass publishes: the event loop deletes while a pass thread publishes.
    forgotten: OrderedDict[str, None] = field(default_factory=OrderedDict)
    gauges: threading.Lock = field(default_factory=threading.Lock)
    # Ended studies: the generation they ended at and their final status (small),
    # instead of their runtime; a pass before the watch shows that status repeats it.
    ended: dict[str, tuple[Any, dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.asks = ask_backend(self.metrics.registry)
        self.kube.on_request = lambda verb, resource: self.metrics.api_requests.labels(
            verb, resource
        ).inc()

    def forget(self, uid: str, namespace: str, name: str) -> None:
        """Drop a deleted study: its cache, its phase and its per-study series.

        A pass still running for it finds it forgotten when it ends and publishes
        nothing (see `reconcile`).
        """
        with self.gauges:
            self.forgotten[uid] = None
            while len(self.forgotten) > FORGOTTEN_KEPT:
                self.forgotten.popitem(last=False)
            self.runtimes.pop(uid, None)
            self.locks.pop(uid, None)
            self.phases.pop(uid, None)
            self.ended.pop(uid, None)
            self.metrics.forget_study(namespace, name)
            self._count_phases()

    def _count_phases(self) -> None:
        for phase in ("LrRangeTest", "Running", "Succeeded", "Failed"):
            count = sum(1 for p in self.phases.values() if p == phase)
            self.metrics.studies.labels(phase).set(count)

    def reconcile(
        self,
        body: Mapping[str, Any],
        spec: StudySpec,
        children: Children,
        now: float | None = None,
    ) -> tuple[dict[str, Any], list[StudyEvent]]:
        """Drive one study a step; returns its new status and the events to post."""
        uid = body["metadata"]["uid"]
        lock = self.locks.setdefault(uid, threading.Lock())
        when = time.time() if now is None else now
        if uid in self.forgotten:  # deleted: nothing more to do for it
            return dict(body.get("status") or {}), []
        generation = body["metadata"].get("generation")
        ended = self.ended.get(uid)
        if ended is not None and ended[0] == generation:
            return dict(ended[1]), []  # not rebuilt from its TuningTrials to say it again
        with lock, self.metrics.reconcile.time():
            status, events = _Pass(self, body, spec, children, when).run()
        with self.gauges:
            if uid in self.forgotten:  # deleted while the pass ran
                self.runtimes.pop(uid, None)
                return status, events
            if status["phase"] in TERMINAL_PHASES:
                # Nothing runs any more; a reopened study is rebuilt from its TuningTrials.
                self.runtimes.pop(uid, None)
                self.ended[uid] = (generation, dict(status))
            else:
                self.ended.pop(uid, None)
            self.phases[uid] = status["phase"]
            self._count_phases()
            self._publish(body["metadata"]["namespace"], body["metadata"]["name"], status)
        return status, events

    def _publish(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """The study's own series, from the status just computed."""
        metrics = self.metrics
        best = status.get("bestTrial")
        if best is not None:
            metrics.best_value.labels(namespace, name).set(best["value"])
        for state in TRIAL_STATES:
            count = status["trials"].get(state, 0)  # "queued" only once a queue is in play
            metrics.finished_trials.labels(namespace, name, state).set(count)
        front = status.get("paretoFront")
        if front is not None:
            metrics.set_front(namespace, name, front["size"], front.get("best") or {})
        suggested = (status.get("lrRangeTest") or {}).get("suggestedLr")
        if suggested is not None:
            metrics.lr_suggestion.labels(namespace, name).set(suggested)

    def busy(self, uid: str) -> bool:
        """Whether the study has trials (or an LR range test) in flight, to be polled.

        Exits and deletions arrive as watch events, but a trial's intermediate
        metrics are pulled: while anything runs, the study is passed over at its
        scrape interval, which also checks timeouts and stuck pods.
        """
        runtime = self.runtimes.get(uid)
        if runtime is None:
            return False
        engine = runtime.engine
        return bool(engine.running) or engine.phase == "LrRangeTest"

    def write_status(self, body: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
        """Make the study's status `status` if it is not already (True if a write was sent).

        The whole status is compared, so a stale key (a failure reason of a study since
        reopened) is a change. The write is a merge patch with a null for every key
        the stored status (`body`'s) or this process's last write holds and `status`
        lacks: the watch may not have brought that last write yet.
        """
        uid, meta = body["metadata"]["uid"], body["metadata"]
        current = dict(body.get("status") or {})
        runtime = self.runtimes.get(uid)
        written = runtime.written_status if runtime is not None else None
        if _without_nulls(json_safe(dict(status))) == current or written == status:
            return False
        wanted = merge_patch(written or {}, status)  # holds nulls: merge_patch keeps them
        self.kube.patch_study_status(meta["namespace"], meta["name"], wanted, before=current)
        if runtime is not None:
            runtime.written_status = dict(status)
        return True


class _Pass:
    """One reconcile pass over one study."""

    def __init__(
        self,
        owner: Reconciler,
        body: Mapping[str, Any],
        spec: StudySpec,
        children: Children,
        now: float,
    ) -> None:
        self.owner = owner
        self.kube = owner.kube
        self.body = body
        self.spec = spec
        self.uid: str = body["metadata"]["uid"]
        # Narrowed to its own TuningTrials now, to its Jobs and pods once the runtime
        # knows the trials it created itself (their watch events may lag).
        self.children = children.owned_trials(self.uid)
        self.now = now
        self.name: str = body["metadata"]["name"]
        self.namespace: str = body["metadata"]["namespace"]
        self.events: list[StudyEvent] = []
        self.trial_objects: dict[int, Mapping[str, Any]] = {
            int(t["spec"]["number"]): t for t in self.children.trials
        }

    # ----- the pass ---------------------------------------------------------------

    def run(self) -> tuple[dict[str, Any], list[StudyEvent]]:
        runtime = self._runtime()
        self.children = self.children.owned_by(self.uid, runtime.trial_uids.values())
        engine = runtime.engine
        if engine.spec.budget != self.spec.budget:  # the one change allowed mid-study
            engine.set_budget(self.spec.budget)
            self._event(
                "Normal", "BudgetChanged", f"budget is now {self.spec.budget.max_trials} trials"
            )
        engine.queued_on_launch = queueing.queue_name(self.spec) is not None
        jobs = self.children.jobs
        pods = self.children.pods_by_owner()
        actions: list[Action] = []
        if engine.phase == "LrRangeTest":
            self._observe_lr_test(runtime, jobs, pods)
        for number in list(engine.running):
            actions += self._observe_trial(runtime, number, jobs, pods)
        self.owner.asks.offload(engine.study, self.spec.algorithm, engine.space)
        deciding = time.perf_counter()
        decided = engine.next_actions(self.now)
        if any(isinstance(action, StartTrial) for action in decided):
            # Only passes that sampled: the histogram is the sampler's cost, not idle passes.
            self.owner.metrics.sampler.observe(time.perf_counter() - deciding)
        actions += decided
        for action in actions:
            self._carry_out(runtime, action, jobs)
        self._persist(runtime)
        return self._status(runtime), self.events

    def _runtime(self) -> _Runtime:
        uid = self.uid
        runtime = self.owner.runtimes.get(uid)
        if runtime is not None:
            return runtime
        trials = self.children.trials
        records = [build.record_from_trial(t) for t in trials]
        stored_lr = ((self.body.get("status") or {}).get("lrRangeTest") or {}).get("curve")
        seeds = [build.record_from_trial(t) for t in self.children.seeds]
        refused = self._seeds_refused() if seeds else None
        if refused:
            self._event("Warning", "WarmStartRefused", refused)
            seeds = []
        engine = Engine.rebuild(self.spec, records, stored_lr, seeds)
        runtime = _Runtime(engine=engine, lr_curve=stored_lr)
        for trial in trials:
            runtime.persisted[int(trial["spec"]["number"])] = dict(trial.get("status") or {})
        self.owner.runtimes[uid] = runtime
        if records:
            self._event("Normal", "Resumed", f"rebuilt the study from {len(records)} TuningTrials")
        self._warm_start_events(engine)
        return runtime

    def _seeds_refused(self) -> str | None:
        """Why the source study's trials may not seed this one (another metric or direction).

        The twin of a local run's refusal; the study then runs unseeded, with a Warning
        naming spec.warmStart.fromStudy. A source study that is gone (its TuningTrials
        left) cannot be checked: its trials are told as they are.
        """
        objective = self.children.seed_objective
        source = self.spec.warm_start.from_study if self.spec.warm_start else None
        if objective is None or source is None:
            return None
        metric, direction = objective.get("metric"), str(objective.get("direction", ""))
        return warm_start.mismatch(self.spec, f"study {source}", metric, direction)

    def _warm_start_events(self, engine: Engine) -> None:
        """Say what the seeds told; not before an LR range test ends, when they are told."""
        source = self.spec.warm_start.from_study if self.spec.warm_start else None
        if source is None or engine.phase == "LrRangeTest":
            return
        for warning in engine.drain_warnings():
            self._event("Warning", "WarmStartSkipped", warning)
        told = warm_start.seeded(engine.study)
        self._event("Normal", "WarmStarted", f"told the sampler {told} trials of study {source}")

    # ----- observing ----------------------------------------------------------------

    def _observe_lr_test(
        self,
        runtime: _Runtime,
        jobs: Mapping[str, Any],
        pods: Mapping[str, list[Mapping[str, Any]]],
    ) -> None:
        name = build.lr_test_name(self.name)
        event: LrRangeFinished | None = None
        if name not in jobs:
            event = self._lr_job_missing(runtime)
            if event is not None:
                self._finish_lr_test(runtime, event)
            return
        runtime.lr_seen = True
        timeout = float(self.spec.budget.unschedulable_timeout)
        state = job_state(jobs[name], pods.get(build.ROLE_LR_RANGE_TEST, []), self.now, timeout)
        runtime.queued.pop(LR_RANGE_TEST_NUMBER, None)
        if isinstance(state, Queued):
            why = self._queue_wait(runtime, LR_RANGE_TEST_NUMBER, jobs[name])
            if why is not None:
                self.kube.delete_job(self.namespace, name)
                event = LrRangeFinished(error=f"the LR range test was not run: {why}")
        elif isinstance(state, Succeeded):
            event = _lr_event(state.termination_message)
        elif isinstance(state, Running):
            deadline = self.spec.budget.trial_timeout
            if deadline is not None and self.now - state.started_at > deadline:
                self.kube.delete_job(self.namespace, name)
                event = LrRangeFinished(error=f"the LR range test timed out after {deadline}s")
        elif isinstance(state, TrainingFailed):
            event = LrRangeFinished(
                error=f"the LR range test failed: exit {state.exit_code}: {state.message}"
            )
        elif isinstance(state, InfrastructureLost):
            event = LrRangeFinished(error=f"the LR range test was lost: {state.reason}")
        if event is not None:
            self._finish_lr_test(runtime, event)

    def _lr_job_missing(self, runtime: _Runtime) -> LrRangeFinished | None:
        """The LR range test with no Job in view: on its way, lost, or still to create.

        A Job seen and then gone was deleted by someone (a user stopping the test, or
        the cluster): the test is lost and the study goes on over the user's own range,
        as for any failed test. Recreating it would undo a user's `kubectl delete` and
        run the sweep again; status and a Warning Event say what happened instead.
        """
        if runtime.lr_seen:
            return LrRangeFinished(error="the LR range test's Job was deleted before it finished")
        launched = runtime.lr_launched_at
        if launched is not None and self.now - launched > self._unseen_grace():
            if runtime.lr_created:
                self.kube.delete_job(self.namespace, build.lr_test_name(self.name))
            why = (
                "deleted before the operator saw it"
                if runtime.lr_created
                else "its name is held by an object this study does not own"
            )
            return LrRangeFinished(
                error=f"the LR range test's Job was never seen within "
                f"{self._unseen_grace():.0f}s of its creation ({why})"
            )
        if not runtime.lr_created and runtime.lr_start is not None:
            self._start_lr_test(runtime, runtime.lr_start)  # its name was taken last time
        return None

    def _finish_lr_test(self, runtime: _Runtime, event: LrRangeFinished) -> None:
        runtime.engine.observe(event, self.now)
        self._warm_start_events(runtime.engine)  # the seeds are told over the final space
        if runtime.engine.lr_result is not None:
            result = runtime.engine.lr_result
            runtime.lr_curve = lr_phase.stored(result)
            self._event(
                "Normal",
                "LrRangeTestFinished",
                f"{result.rule} suggests lr={result.suggested_lr:.3g}",
            )
            warning = lr_phase.disagreement(self.spec, result)
            if warning is not None:
                self._event("Warning", "LrRangeTestDisagrees", warning)
        else:
            runtime.lr_curve = {"error": runtime.engine.lr_error}
            self._event("Warning", "LrRangeTestFailed", str(runtime.engine.lr_error))

    def _observe_trial(
        self,
        runtime: _Runtime,
        number: int,
        jobs: Mapping[str, Any],
        pods: Mapping[str, list[Mapping[str, Any]]],
    ) -> list[Action]:
        job_name = build.trial_name(self.name, number)
        timeout = float(self.spec.budget.unschedulable_timeout)
        state = trial_state(jobs.get(job_name), pods.get(f"t{number}", []), self.now, timeout)
        runtime.stuck.pop(number, None)
        event: Event | None = None
        if isinstance(state, Missing):
            return self._job_missing(runtime, number)
        runtime.jobs_seen.add(number)
        runtime.launching.pop(number, None)
        runtime.queued.pop(number, None)
        if isinstance(state, Queued):
            return self._trial_queued(runtime, number, jobs[job_name])
        if isinstance(state, Pending | Running):
            runtime.engine.observe(Admitted(number), self.now)
        if isinstance(state, Pending) and state.reason:
            runtime.stuck[number] = _Stuck(state.reason, self._why_stuck(runtime, number, state))
        elif isinstance(state, Running):
            actions = runtime.engine.observe(Started(number, state.started_at), self.now)
            sample = self._sample(number, state.pod_ip)
            goals = [g.metric for g in self.spec.goals]
            if sample is not None and sample.step is not None and goals[0] in sample.metrics:
                seen = {m: sample.metrics[m] for m in goals if m in sample.metrics}
                event = Progress(number, sample.step, sample.metrics[goals[0]], seen)
            return actions + (runtime.engine.observe(event, self.now) if event else [])
        elif isinstance(state, Succeeded):
            message = parse_termination_message(state.termination_message) or {}
            event = Finished(number, 0, message.get("metrics"), step=last_step(message))
        elif isinstance(state, TrainingFailed):
            event = Finished(number, state.exit_code, None, state.message)
        elif isinstance(state, InfrastructureLost):
            event = Lost(number, state.reason)
            self.kube.delete_job(self.namespace, job_name)
            runtime.refusals.pop(number, None)
        if event is None:
            return []
        return runtime.engine.observe(event, self.now)

    def _trial_queued(self, runtime: _Runtime, number: int, job: Mapping[str, Any]) -> list[Action]:
        """A trial waiting for a queue: not stuck; preempted if it had started.

        A preempted trial's Job is left for Kueue to resume in place: no retry is
        spent and it is counted once. One that Kueue cannot admit (no such queue,
        deactivated) fails after budget.queueTimeout with Kueue's message.
        """
        engine = runtime.engine
        before = engine.preemptions
        engine.observe(TrialQueued(number), self.now)
        if engine.preemptions > before:
            self._event(
                "Normal",
                "TrialPreempted",
                f"trial {number}: suspended by the queue; it resumes when admitted again",
            )
        why = self._queue_wait(runtime, number, job)
        if why is None:
            return []
        runtime.queued.pop(number, None)
        runtime.queue_timeouts[number] = why
        self.kube.delete_job(self.namespace, build.trial_name(self.name, number))
        return engine.observe(TrialRefused(number, why), self.now)

    def _queue_wait(self, runtime: _Runtime, key: int, job: Mapping[str, Any]) -> str | None:
        """Record why a Job waits (its Workload's word); why it must stop waiting, if so."""
        uid = str(job["metadata"].get("uid", ""))
        wait = queueing.wait_of(self.kube.workload_of_job(self.namespace, uid), timestamp)
        runtime.queued[key] = wait
        limit = self.spec.budget.queue_timeout
        since = wait.since or timestamp(job["metadata"].get("creationTimestamp")) or self.now
        if wait.hopeless and self.now - since > limit:
            return (
                f"Kueue did not admit it within queueTimeout={limit}s "
                f"({wait.reason}: {wait.message})"
            )
        return None

    def _job_missing(self, runtime: _Runtime, number: int) -> list[Action]:
        """A running trial with no Job in view: on its way, to create, or lost.

        A Job created but not yet seen is waited for, but only for the grace from its
        first try: one created and deleted before any pass saw it (by a user, or the
        garbage collector) would otherwise be waited for forever. After the grace the
        attempt counts as lost to the cluster (retried with the same parameters under
        a new name, up to maxRetries), and a Job of ours that may exist unseen is
        deleted first, so that it never runs beside its retry.
        """
        since = runtime.launching.get(number)
        if number not in runtime.jobs_seen and since is not None:
            if self.now - since > self._unseen_grace():
                if number in runtime.jobs_created:
                    self.kube.delete_job(self.namespace, build.trial_name(self.name, number))
                why = (
                    "deleted before the operator saw it"
                    if number in runtime.jobs_created
                    else "its name is held by an object this study does not own"
                )
                runtime.launching.pop(number, None)
                runtime.jobs_created.discard(number)
                reason = (
                    f"its Job was never seen within {self._unseen_grace():.0f}s "
                    f"of its creation ({why})"
                )
                return runtime.engine.observe(Lost(number, reason), self.now)
            if number in runtime.jobs_created:
                return []  # created a moment ago; the watch has not brought it yet
        return self._ensure_job(runtime, number)

    def _unseen_grace(self) -> float:
        return min(UNSEEN_JOB_GRACE_SECONDS, float(self.spec.budget.unschedulable_timeout))

    def _why_stuck(self, runtime: _Runtime, number: int, state: Pending) -> str:
        """The pending state's message; for a Job with no pod, the API's refusal."""
        if state.reason != "FailedCreate":
            return state.message
        if number not in runtime.refusals:
            job = build.trial_name(self.name, number)
            runtime.refusals[number] = self.kube.job_warning(self.namespace, job) or state.message
        return runtime.refusals[number]

    def _sample(self, number: int, pod_ip: str | None) -> TrialSample | None:
        url = self.spec.metrics.prometheus_url
        if url:
            return query_trial(url, self.namespace, self.name, number)
        if not pod_ip:
            return None
        host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip  # an IPv6 pod IP needs brackets
        return scrape(f"http://{host}:{self.spec.metrics.port}/metrics", timeout=1.0)

    # ----- acting -------------------------------------------------------------------

    def _carry_out(self, runtime: _Runtime, action: Action, jobs: Mapping[str, Any]) -> None:
        if isinstance(action, StartLrRangeTest):
            self._start_lr_test(runtime, action)
        elif isinstance(action, StartTrial):
            self._ensure_job(runtime, action.number)
        elif isinstance(action, StopTrial):
            self.kube.delete_job(self.namespace, build.trial_name(self.name, action.number))

    def _start_lr_test(self, runtime: _Runtime, action: StartLrRangeTest) -> None:
        """Create the LR range test's Job; one that can never be made ends the test."""
        runtime.lr_start = action
        if runtime.lr_launched_at is None:
            runtime.lr_launched_at = self.now
        sweep = (action.parameter, action.min_lr, action.max_lr, action.steps)
        try:
            job = distributed.lr_test_job(self.body, self.spec, action.params, sweep)
            created = self.kube.create_job(job)
        except NameTakenError:
            return  # a deleted study's test, until the garbage collector removes it
        except RefusedError as refusal:
            error = f"{refusal.by} refused the LR range test's Job: {refusal}"
            self._finish_lr_test(runtime, LrRangeFinished(error=error))
            return
        except MALFORMED_TEMPLATE as error:
            problem = (
                f"the LR range test's Job could not be built from spec.trialTemplate: {error!r}"
            )
            self._finish_lr_test(runtime, LrRangeFinished(error=problem))
            return
        runtime.lr_created = True
        if created:
            self._event(
                "Normal",
                "LrRangeTestStarted",
                f"sweeping {action.min_lr:g} … {action.max_lr:g}",
            )

    def _ensure_job(self, runtime: _Runtime, number: int) -> list[Action]:
        """Create the trial's TuningTrial and Job if absent (a restart may sit between).

        The Job is built from the TuningTrial's own spec.params, never from anything
        else. A name held by another owner's object (a deleted study's child the
        garbage collector has not removed yet) is tried again on the next pass, until
        the grace runs out. A Job that cannot be built from the template, or that the
        client or the API server refuses as invalid, fails the trial with the reason,
        instead of failing every pass.
        """
        runtime.launching.setdefault(number, self.now)
        record = runtime.engine.record(number)
        trial = self.trial_objects.get(number)
        try:
            if trial is None:
                trial = self.kube.create_trial(build.trial_object(self.body, record))
                self.trial_objects[number] = trial
                runtime.trial_uids[number] = str(trial["metadata"]["uid"])
                self._write_record(runtime, record)
            params = trial["spec"]["params"]
            schedule = lr_phase.trial_schedule(self.spec, runtime.engine.lr_result, params)
            job, service = distributed.trial_children(self.body, self.spec, trial, params, schedule)
            if service is not None:  # first, so rank 0's name resolves when pods start
                self.kube.create_service(service)
            created = self.kube.create_job(job)
        except NameTakenError:
            return []
        except RefusedError as refusal:
            reason = f"{refusal.by} refused the trial's Job: {refusal}"
            return runtime.engine.observe(TrialRefused(number, reason), self.now)
        except MALFORMED_TEMPLATE as error:
            reason = f"the trial's Job could not be built from spec.trialTemplate: {error!r}"
            return runtime.engine.observe(TrialRefused(number, reason), self.now)
        runtime.jobs_created.add(number)
        runtime.jobs_seen.discard(number)
        if created:
            self._event("Normal", "TrialStarted", f"trial {number}: {_params(record)}")
        return []

    def _persist(self, runtime: _Runtime) -> None:
        """Write each trial's record where it changed: the cluster is the database.

        Only launched trials have a record (a skipped proposal has none), and a record
        stored as finished never changes again, so a pass looks at the running ones:
        not every trial of a 1,000-trial study, every pass.
        """
        engine = runtime.engine
        for number, stored in list(runtime.persisted.items()):
            before = stored.get("state")
            if before not in {None, "Running", "Queued"}:
                continue
            record = engine.record(number)
            if record.kind == "duplicate":
                continue
            started = stored.get("startedAt")
            if (
                self._write_record(runtime, record)
                and before in {"Running", "Queued"}
                and record.state != "running"
            ):
                self._trial_finished(record, started)

    def _write_record(self, runtime: _Runtime, record: TrialRecord) -> bool:
        status = build.trial_status(record)
        waiting = runtime.engine.running.get(record.number)
        if waiting is not None and waiting.queued:  # `kubectl get ttrial` shows it; read
            status["state"] = "Queued"  # back as running (record_from_trial)
        before = runtime.persisted.get(record.number, {})
        if not record.started_at:  # finished trials keep the start time they were given
            status["startedAt"] = before.get("startedAt", self.now)
        if record.state != "running":  # when the operator saw it finish
            status["finishedAt"] = before.get("finishedAt", self.now)
        if before == status:
            return False
        name = build.trial_name(self.name, record.number)
        self.kube.patch_trial_status(self.namespace, name, status, before=before)
        runtime.persisted[record.number] = status
        return True

    def _trial_finished(self, record: TrialRecord, started: float | None) -> None:
        metrics = self.owner.metrics
        state = record.state if record.kind == "counted" else "retried"
        metrics.trials.labels(state).inc()
        if started:
            metrics.trial_duration.observe(max(0.0, self.now - float(started)))
        if record.state == "complete":
            self._event(
                "Normal",
                "TrialCompleted",
                f"trial {record.number}: {_values_text(self.spec, record)}",
            )
        elif record.state == "pruned":
            self._event("Normal", "TrialPruned", f"trial {record.number}: {record.reason}")
        else:
            self._event("Warning", "TrialFailed", f"trial {record.number}: {record.reason}")

    # ----- status -------------------------------------------------------------------

    def _status(self, runtime: _Runtime) -> dict[str, Any]:
        engine = runtime.engine
        status = engine.status()
        if runtime.lr_curve is not None and "lrRangeTest" in status:
            status["lrRangeTest"]["curve"] = runtime.lr_curve
        status["observedGeneration"] = self.body["metadata"].get("generation")
        status["conditions"] = self._conditions(runtime, status)
        if status["phase"] == "Running":
            counts = status["trials"]
            left = counts["target"] - counts["finished"]
            estimate = eta_seconds(_durations(runtime), left, self.spec.budget.parallelism)
            if estimate is not None:
                status["etaSeconds"] = estimate
        status["display"] = _display(status)
        return status

    def _conditions(self, runtime: _Runtime, status: Mapping[str, Any]) -> list[dict[str, Any]]:
        previous = {c["type"]: c for c in (self.body.get("status") or {}).get("conditions") or []}
        phase = status["phase"]
        wanted = [
            (
                "Complete",
                phase == "Succeeded",
                "BudgetSpent" if phase == "Succeeded" else "Running",
                f"{status['trials']['finished']} of {status['trials']['target']} trials finished",
            ),
            (
                "Failed",
                phase == "Failed",
                "TooManyFailedTrials" if phase == "Failed" else "Healthy",
                str(status.get("reason", "no more failures than maxFailedTrials")),
            ),
            (
                "TrialsStuck",
                bool(runtime.stuck),
                next(iter(runtime.stuck.values())).reason if runtime.stuck else "NoneStuck",
                join_stuck({n: f"{s.reason}: {s.message}" for n, s in runtime.stuck.items()})
                or "no trial pod is stuck",
            ),
        ]
        wanted.append(_queued_condition(runtime))
        if self.spec.lr_range_test is not None:
            done = "lrRangeTest" in status
            wanted.append(
                (
                    "LrRangeTestDone",
                    done,
                    "Analysed" if done else "Running",
                    "see status.lrRangeTest" if done else "the LR range test is running",
                )
            )
        conditions = []
        for kind, truth, reason, message in wanted:
            value = "True" if truth else "False"
            before = previous.get(kind)
            changed = before is None or before.get("status") != value
            conditions.append(
                {
                    "type": kind,
                    "status": value,
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": _rfc3339(self.now)
                    if changed
                    else (before or {}).get("lastTransitionTime"),
                    "observedGeneration": self.body["metadata"].get("generation"),
                }
            )
        if runtime.stuck and previous.get("TrialsStuck", {}).get("status") != "True":
            self._event("Warning", "TrialsStuck", conditions[2]["message"])
        return conditions

    def _event(self, kind: str, reason: str, message: str) -> None:
        self.events.append(StudyEvent(kind, reason, message))


def _queued_condition(runtime: _Runtime) -> tuple[str, bool, str, str]:
    """TrialsQueued: who waits for a queue and Kueue's reason; or who gave up waiting."""

    def who(key: int) -> str:
        return "the LR range test" if key == LR_RANGE_TEST_NUMBER else f"trial {key}"

    if runtime.queued:
        hopeless = [w for w in runtime.queued.values() if w.hopeless]
        reason = hopeless[0].reason if hopeless else "WaitingForQuota"
        message = "; ".join(f"{who(k)}: {w.message}" for k, w in sorted(runtime.queued.items()))
        return ("TrialsQueued", True, reason, message)
    if runtime.queue_timeouts:
        message = "; ".join(
            f"{who(k)} failed: {why}" for k, why in sorted(runtime.queue_timeouts.items())
        )
        return ("TrialsQueued", False, "QueueTimeout", message)
    return ("TrialsQueued", False, "NoneQueued", "no trial waits for a queue")


def _without_nulls(value: Any) -> Any:
    """`value` as the API server stores it after a merge patch: null keys removed."""
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


def _lr_event(termination_message: str) -> LrRangeFinished:
    """The LR range test's outcome from its termination message; never raises."""
    try:
        curve = lr_curve(parse_termination_message(termination_message))
    except ValueError as error:
        return LrRangeFinished(error=f"the LR range test's curve is malformed: {error}")
    if curve is None:
        return LrRangeFinished(error="the LR range test wrote no curve to its termination message")
    return LrRangeFinished(lrs=curve[0], losses=curve[1])


def _display(status: Mapping[str, Any]) -> dict[str, str]:
    """Rounded strings for `kubectl get`'s columns, which print a float in full (17
    digits); the exact values stay in `bestTrial.value` and `lrRangeTest.suggestedLr`."""
    shown: dict[str, str] = {}
    if status.get("bestTrial") is not None:
        shown["best"] = f"{status['bestTrial']['value']:.4g}"
    elif status.get("paretoFront") is not None:
        shown["best"] = objectives.describe_front(status["paretoFront"])
    if "suggestedLr" in (status.get("lrRangeTest") or {}):
        shown["lr"] = f"{status['lrRangeTest']['suggestedLr']:.3g}"
    if "etaSeconds" in status:
        shown["eta"] = duration_text(status["etaSeconds"])
    return shown


def _durations(runtime: _Runtime) -> list[float]:
    """Launch-to-end wall time of each finished, counted trial, from its TuningTrial.

    From the stored records rather than Optuna's clock, so the figure survives an
    operator restart (a rebuilt Optuna trial has no meaningful start time) and uses
    the pass clock tests drive. Pending time is included: it is part of what a
    trial slot costs. Retried attempts are left out, as the budget leaves them out.
    """
    found = []
    for stored in runtime.persisted.values():
        started, finished = stored.get("startedAt"), stored.get("finishedAt")
        if stored.get("kind", "counted") == "counted" and started and finished:
            found.append(float(finished) - float(started))
    return found


def _values_text(spec: StudySpec, record: TrialRecord) -> str:
    """metric=value for each objective of a finished trial."""
    values = record.values if record.values is not None else (record.value,)
    return ", ".join(
        f"{g.metric}={v:.6g}" for g, v in zip(spec.goals, values, strict=False) if v is not None
    )


def _params(record: TrialRecord) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.params.items()
    )


def _rfc3339(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
