"""One reconcile pass at a time, over the in-memory API of `fake_kube`.

Each test drives `Reconciler` as the operator's daemon does (children from the
label-keyed indexes, status written back as a merge patch) on the test's own clock.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import optuna
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rheostat.backends.kubernetes import manifests as build
from rheostat.backends.kubernetes.kube import merge_patch
from rheostat.backends.kubernetes.reconcile import Reconciler, StudyEvent
from rheostat.engine import Progress
from rheostat.spec import StudySpec, study_from_mapping
from tests.studies import synthetic_study, tradeoff_study
from tests.unit.fake_kube import FakeApiServer, apply_merge_patch, controller_uid
from tests.unit.test_engine import _valley_curve

optuna.logging.set_verbosity(optuna.logging.WARNING)

NS = "team"
STUDIES, TRIALS, JOBS = "tuningstudies", "tuningtrials", "jobs"


def spec_of(document: dict[str, Any]) -> StudySpec:
    clean = {k: document[k] for k in ("apiVersion", "kind", "spec")}
    return study_from_mapping({**clean, "metadata": {"name": document["metadata"]["name"]}}).spec


@dataclass
class Operator:
    """The operator's daemon, minus Kopf: passes over studies stored in the fake API."""

    server: FakeApiServer = field(default_factory=FakeApiServer)
    reconciler: Reconciler = field(init=False)
    events: list[StudyEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reconciler = Reconciler(self.server.kube())

    def apply(self, document: dict[str, Any]) -> dict[str, Any]:
        """`kubectl apply` of a new study (a fresh uid, as after a delete)."""
        body = copy.deepcopy(document)
        body["metadata"]["namespace"] = NS
        return self.server.add(STUDIES, body)

    def study(self, name: str = "syn") -> dict[str, Any]:
        stored = self.server.get(STUDIES, NS, name)
        assert stored is not None
        return copy.deepcopy(stored)

    def reconcile(self, name: str = "syn", spec: StudySpec | None = None) -> dict[str, Any]:
        """One pass, and the status write that follows it; returns the stored status."""
        body = self.study(name)
        spec = spec or spec_of(body)
        seeds_of = spec.warm_start.from_study if spec.warm_start else None
        children = self.server.children(body, seeds_of or "")
        status, events = self.reconciler.reconcile(body, spec, children, now=self.server.now)
        self.events += events
        self.reconciler.write_status(body, status)
        return dict(self.study(name).get("status") or {})

    def reasons(self) -> list[str]:
        return [e.reason for e in self.events]

    def trial(self, number: int, name: str = "syn") -> dict[str, Any]:
        trial = self.server.get(TRIALS, NS, build.trial_name(name, number))
        assert trial is not None
        return trial

    def finish(self, number: int, loss: float, name: str = "syn") -> None:
        job = build.trial_name(name, number)
        self.server.run_pod(job, NS)
        self.server.finish_pod(job, NS, {"metrics": {"loss": loss}})

    def job_env(self, number: int, name: str = "syn") -> dict[str, str]:
        job = self.server.get(JOBS, NS, build.trial_name(name, number))
        assert job is not None
        container = job["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value") for e in container["env"]}


def study(**budget: Any) -> dict[str, Any]:
    return synthetic_study("syn", budget={"maxTrials": 2, "parallelism": 2, **budget})


# ----- defect 1: a study's children are the objects its uid owns ---------------------------


def test_a_reapplied_study_ignores_its_predecessors_children_and_runs_its_own() -> None:
    op = Operator()
    old = op.apply(study())
    op.reconcile()
    op.finish(0, 0.001)
    op.finish(1, 0.002)
    op.reconcile()
    assert op.reconcile()["bestTrial"]["value"] == 0.001
    # kubectl delete, then kubectl apply with a narrower range, before the GC ran.
    op.server.delete(STUDIES, NS, "syn")
    document = study(maxTrials=3)
    document["spec"]["parameters"][1].update({"min": 0.5, "max": 0.51})  # momentum
    new = op.apply(document)
    op.events.clear()

    status = op.reconcile()

    assert "Resumed" not in op.reasons()
    assert status["trials"]["finished"] == 0
    assert "bestTrial" not in status
    for number in (0, 1):  # still the old study's, and never written to
        assert controller_uid(op.trial(number)) == old["metadata"]["uid"]
        assert op.trial(number)["status"]["value"] in (0.001, 0.002)

    op.server.collect_garbage()  # the old children go
    op.reconcile()
    for number in (0, 1):
        trial = op.trial(number)
        assert controller_uid(trial) == new["metadata"]["uid"]
        job = op.server.get(JOBS, NS, build.trial_name("syn", number))
        assert job is not None
        assert controller_uid(job) == trial["metadata"]["uid"]
        assert float(op.job_env(number)["RHEOSTAT_PARAM_MOMENTUM"]) >= 0.5
        op.finish(number, 0.5 + number)
    op.reconcile()
    op.finish(2, 0.25)
    op.reconcile()
    final = op.reconcile()
    assert final["phase"] == "Succeeded"
    assert final["trials"]["complete"] == 3
    assert final["bestTrial"]["value"] == 0.25
    assert final["bestTrial"]["number"] == 2


def test_a_predecessors_job_and_its_finished_pod_do_not_speak_for_a_new_trial() -> None:
    op = Operator()
    op.apply(study(maxTrials=1, parallelism=1))
    op.reconcile()
    op.finish(0, 0.001)  # the old trial's pod has finished; nobody has seen it yet
    op.server.delete(STUDIES, NS, "syn")
    op.server.delete(TRIALS, NS, "syn-t0")  # the GC took the trial, not yet the Job
    new = op.apply(study(maxTrials=1, parallelism=1))

    status = op.reconcile()
    op.reconcile()

    assert status["trials"]["complete"] == 0
    assert op.trial(0)["status"]["state"] == "Running"
    assert controller_uid(op.trial(0)) == new["metadata"]["uid"]
    op.server.collect_garbage()  # the old Job and pod go; the new trial's Job follows
    op.reconcile()
    job = op.server.get(JOBS, NS, "syn-t0")
    assert job is not None
    assert controller_uid(job) == op.trial(0)["metadata"]["uid"]


def test_a_predecessors_lr_range_test_is_not_taken_for_the_new_studys() -> None:
    op = Operator()
    lr_study = synthetic_study("syn", lr_test=True, budget={"maxTrials": 2, "parallelism": 2})
    op.apply(lr_study)
    op.reconcile()
    op.server.run_pod(build.lr_test_name("syn"), NS)
    op.server.delete(STUDIES, NS, "syn")
    new = op.apply(lr_study)

    assert op.reconcile()["phase"] == "LrRangeTest"
    op.server.collect_garbage()
    op.server.now += 1
    assert op.reconcile()["phase"] == "LrRangeTest"  # its own test, created now
    job = op.server.get(JOBS, NS, build.lr_test_name("syn"))
    assert job is not None
    assert controller_uid(job) == new["metadata"]["uid"]


def test_an_lr_range_test_name_held_by_a_predecessor_is_given_up_after_the_grace() -> None:
    op = Operator()
    lr_study = synthetic_study("syn", lr_test=True, budget={"maxTrials": 2, "parallelism": 2})
    op.apply(lr_study)
    op.reconcile()
    op.server.delete(STUDIES, NS, "syn")
    op.apply(lr_study)
    op.reconcile()  # the name is held (a finalizer, say): no adoption, no Job
    op.server.now += 3600

    status = op.reconcile()

    assert status["phase"] == "Running"
    assert "held by an object this study does not own" in status["lrRangeTest"]["error"]
    assert op.server.get(JOBS, NS, build.lr_test_name("syn")) is not None  # not ours to delete


# ----- defects 2 and 3: a Job that vanished is never waited for forever ------------------


def test_a_deleted_lr_range_test_job_is_a_lost_test_and_the_study_goes_on() -> None:
    op = Operator()
    op.apply(synthetic_study("syn", lr_test=True, budget={"maxTrials": 2, "parallelism": 2}))
    assert op.reconcile()["phase"] == "LrRangeTest"
    op.server.now += 1
    op.reconcile()  # the Job is seen
    op.server.delete(JOBS, NS, build.lr_test_name("syn"))
    op.server.now += 1

    status = op.reconcile()

    assert status["phase"] == "Running"
    assert "deleted" in status["lrRangeTest"]["error"]
    assert "LrRangeTestFailed" in op.reasons()
    assert op.server.get(JOBS, NS, "syn-t0") is not None  # over the user's own range


def test_an_lr_range_test_job_gone_before_any_pass_saw_it_is_lost_after_the_grace() -> None:
    op = Operator()
    op.apply(synthetic_study("syn", lr_test=True, budget={"maxTrials": 2, "parallelism": 2}))
    op.reconcile()
    op.server.delete(JOBS, NS, build.lr_test_name("syn"))
    op.server.now += 1
    assert op.reconcile()["phase"] == "LrRangeTest"  # maybe the watch is only late
    op.server.now += 3600

    status = op.reconcile()

    assert status["phase"] == "Running"
    assert "never seen" in status["lrRangeTest"]["error"]


def test_a_trial_job_gone_before_any_pass_saw_it_is_retried_once_after_the_grace() -> None:
    op = Operator()
    op.apply(study(maxTrials=1, parallelism=1))
    op.reconcile()
    params = op.trial(0)["spec"]["params"]
    op.server.delete(JOBS, NS, "syn-t0")
    op.server.now += 1
    op.reconcile()
    assert op.server.get(JOBS, NS, "syn-t0") is None  # no second create for a late watch
    op.server.now += 3600

    status = op.reconcile()

    assert op.trial(0)["status"]["state"] == "Failed"
    assert op.trial(0)["status"]["kind"] == "retry"
    assert "never seen" in op.trial(0)["status"]["reason"]
    assert op.trial(1)["spec"]["params"] == params  # the same parameters, run once more
    assert op.server.get(JOBS, NS, "syn-t1") is not None
    assert status["trials"]["running"] == 1
    # A Job that exists but that no watch event brought must not run beside its retry.
    assert ("DELETE", JOBS) in op.server.requests


# ----- defect 6: a status write removes what it no longer holds ---------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner),
    max_leaves=12,
)
_status = st.dictionaries(st.text(max_size=2), _json, max_size=5)


def _no_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _no_nulls(v) for k, v in value.items() if v is not None}
    return value


@given(before=_status, after=_status)
def test_merge_patch_turns_the_stored_status_into_the_new_one(
    before: dict[str, Any], after: dict[str, Any]
) -> None:
    stored = _no_nulls(before)  # what a server holds after merge patches: no null keys
    assert apply_merge_patch(stored, merge_patch(stored, after)) == _no_nulls(after)


def test_a_reopened_study_loses_the_reason_it_had_failed() -> None:
    op = Operator()
    op.apply(study(maxTrials=1, parallelism=1, maxFailedTrials=0))
    op.reconcile()
    op.server.run_pod("syn-t0", NS)
    pod = op.server.get("pods", NS, "syn-t0-pod")
    assert pod is not None
    pod["status"]["containerStatuses"][0]["state"] = {"terminated": {"exitCode": 1}}
    failed = op.reconcile()
    assert failed["phase"] == "Failed"
    assert "maxFailedTrials=0" in failed["reason"]
    stored = op.server.get(STUDIES, NS, "syn")
    assert stored is not None
    stored["spec"]["budget"].update({"maxTrials": 2, "maxFailedTrials": 1})
    stored["metadata"]["generation"] = 2

    op.reconcile()
    op.finish(1, 0.3)
    status = op.reconcile()

    assert status["phase"] == "Succeeded"
    assert "reason" not in status


def test_a_trial_keeps_only_its_last_200_intermediate_steps() -> None:
    op = Operator()
    op.apply(study(maxTrials=1, parallelism=1))
    op.reconcile()
    op.server.run_pod("syn-t0", NS)
    op.reconcile()
    engine = op.reconciler.runtimes[op.study()["metadata"]["uid"]].engine
    for step in range(150):
        engine.observe(Progress(0, step, 1.0 / (step + 1)), op.server.now)
    op.reconcile()
    for step in range(150, 450):
        engine.observe(Progress(0, step, 1.0 / (step + 1)), op.server.now)

    op.reconcile()

    steps = sorted(int(k) for k in op.trial(0)["status"]["intermediate"])
    assert steps == list(range(250, 450))


def test_a_status_that_differs_only_by_a_stale_key_is_written() -> None:
    """A key an earlier operator left behind heals at the next pass, and only once."""
    op = Operator()
    op.apply(study())
    status = op.reconcile()
    stored = op.server.get(STUDIES, NS, "syn")
    assert stored is not None
    stored["status"]["reason"] = "a stale reason"
    op.reconciler = Reconciler(op.server.kube())  # a restarted operator
    writes = op.server.requests.count(("PATCH", f"{STUDIES}/status"))

    assert op.reconcile() == status
    assert op.server.requests.count(("PATCH", f"{STUDIES}/status")) == writes + 1
    op.reconcile()
    assert op.server.requests.count(("PATCH", f"{STUDIES}/status")) == writes + 1


# ----- defects 9 and 10: nothing of a study outlives it in memory ---------------------------


def _series(op: Operator, study_name: str) -> list[str]:
    return [
        sample.name
        for metric in op.reconciler.metrics.registry.collect()
        for sample in metric.samples
        if sample.labels.get("study") == study_name
    ]


def test_a_deleted_studys_series_go_with_it() -> None:
    op = Operator()
    body = op.apply(study())
    op.reconcile()
    op.finish(0, 0.1)
    op.finish(1, 0.2)
    op.reconcile()
    assert "rheostat_study_best_value" in _series(op, "syn")

    op.reconciler.forget(body["metadata"]["uid"], NS, "syn")

    assert _series(op, "syn") == []
    assert op.reconciler.metrics.registry.get_sample_value(
        "rheostat_studies", {"phase": "Running"}
    ) in (None, 0)


def test_a_pass_running_when_the_study_is_deleted_does_not_bring_it_back() -> None:
    op = Operator()
    body = op.apply(study())
    uid = body["metadata"]["uid"]
    op.reconcile()
    op.server.on_request.append(
        lambda method, plural: op.reconciler.forget(uid, NS, "syn") if plural == TRIALS else None
    )
    op.finish(0, 0.1)
    op.server.now += 1
    body = op.study()
    op.reconciler.reconcile(body, spec_of(body), op.server.children(body), now=op.server.now)

    assert _series(op, "syn") == []
    for phase in ("LrRangeTest", "Running", "Succeeded", "Failed"):
        gauge = op.reconciler.metrics.registry.get_sample_value(
            "rheostat_studies", {"phase": phase}
        )
        assert gauge in (None, 0)
    assert uid not in op.reconciler.runtimes


def test_a_finished_study_is_dropped_from_memory_and_rebuilt_if_reopened() -> None:
    op = Operator()
    body = op.apply(study())
    uid = body["metadata"]["uid"]
    op.reconcile()
    op.finish(0, 0.1)
    op.finish(1, 0.2)
    assert op.reconcile()["phase"] == "Succeeded"
    assert uid not in op.reconciler.runtimes
    stored = op.server.get(STUDIES, NS, "syn")
    assert stored is not None
    stored["status"]["phase"] = "Running"  # a watch that has not brought the write yet
    assert op.reconcile()["phase"] == "Succeeded"
    assert "Resumed" not in op.reasons()  # not rebuilt to say the same thing again
    assert uid not in op.reconciler.runtimes
    stored = op.server.get(STUDIES, NS, "syn")
    assert stored is not None
    stored["spec"]["budget"]["maxTrials"] = 3
    stored["metadata"]["generation"] = 2

    status = op.reconcile()

    assert status["phase"] == "Running"
    assert status["trials"]["complete"] == 2
    assert op.trial(2)["status"]["state"] == "Running"
    assert op.server.get(JOBS, NS, "syn-t0") is not None  # not launched again
    assert sum(1 for m, p in op.server.requests if (m, p) == ("POST", JOBS)) == 3


# ----- defect 11: a Job that cannot be built or sent fails its trial, loudly ----------------


@pytest.mark.parametrize(
    ("slip", "named"),
    [
        (lambda pod: pod.update(metadata={}), "spec.template.spec.metadata"),
        (lambda pod: pod.update(containers=[{"name": "x"}, "no container"]), "could not be built"),
    ],
    ids=["client-refuses-a-field", "builder-cannot-read-template"],
)
def test_a_job_that_cannot_be_built_or_sent_fails_its_trial_with_the_reason(
    slip: Any, named: str
) -> None:
    op = Operator()
    document = study(maxTrials=2, parallelism=1, maxFailedTrials=0)
    spec = spec_of(document)  # the spec as admission saw it; the body carries the slip
    slip(document["spec"]["trialTemplate"]["spec"])
    op.apply(document)

    status = op.reconcile(spec=spec)

    assert op.server.get(JOBS, NS, "syn-t0") is None
    assert op.trial(0)["status"]["state"] == "Failed"
    assert named in op.trial(0)["status"]["reason"]
    assert "TrialFailed" in op.reasons()
    assert status["phase"] == "Failed"
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True"


# ----- issue 22.2 on the operator: how far a finished trial ran survives a rebuild ---------


def test_a_finished_trials_last_step_is_kept_on_its_tuningtrial_and_read_back() -> None:
    op = Operator()
    op.apply(study())
    op.reconcile()
    job = build.trial_name("syn", 0)
    op.server.run_pod(job, NS)
    # Reads of its metrics saw nothing; its termination message says it reached step 7.
    op.server.finish_pod(job, NS, {"metrics": {"loss": 0.5}, "step": 7})
    op.reconcile()

    trial = op.trial(0)
    assert trial["status"]["lastStep"] == 7
    assert build.record_from_trial(trial).last_step == 7


# ----- issue 22.4 on the operator: seeds are told (and said) after the LR range test -------


def test_warm_start_events_come_once_the_lr_range_test_has_told_the_seeds() -> None:
    op = Operator()
    op.apply(study(maxTrials=3, parallelism=3) | {"metadata": {"name": "earlier"}})
    op.reconcile("earlier")
    for number in range(3):
        op.finish(number, 0.1 * (number + 1), name="earlier")
    assert op.reconcile("earlier")["phase"] == "Succeeded"
    document = synthetic_study("syn", lr_test=True, budget={"maxTrials": 2, "parallelism": 1})
    document["spec"]["lrRangeTest"]["apply"] = "narrow"
    document["spec"]["warmStart"] = {"fromStudy": "earlier"}
    op.apply(document)
    op.events.clear()

    assert op.reconcile()["phase"] == "LrRangeTest"
    assert "WarmStarted" not in op.reasons()  # nothing told yet: the range may still narrow
    job = build.lr_test_name("syn")
    op.server.run_pod(job, NS)
    lrs, losses = _valley_curve()
    op.server.finish_pod(job, NS, {"lrRangeTest": {"lrs": lrs, "losses": losses}})
    status = op.reconcile()

    assert status["phase"] == "Running"
    [said] = [e.message for e in op.events if e.reason == "WarmStarted"]
    told = status.get("warmStart", {}).get("seeded", 0)
    assert said == f"told the sampler {told} trials of study earlier"
    skipped = [e for e in op.events if e.reason == "WarmStartSkipped"]
    assert len(skipped) == 3 - told  # every seed is told or said to be skipped


# ----- issue 22.3 on the operator: a source study that optimised otherwise seeds nothing ---


def _finished_source(op: Operator) -> None:
    op.apply(study(maxTrials=3, parallelism=3) | {"metadata": {"name": "earlier"}})
    op.reconcile("earlier")
    for number in range(3):
        op.finish(number, 0.1 * (number + 1), name="earlier")
    assert op.reconcile("earlier")["phase"] == "Succeeded"


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_a_source_study_that_optimised_otherwise_seeds_nothing(direction: str) -> None:
    op = Operator()
    _finished_source(op)  # minimised loss
    document = study(maxTrials=2, parallelism=2)
    document["spec"]["objective"] = {"metric": "loss", "direction": direction}
    document["spec"]["warmStart"] = {"fromStudy": "earlier"}
    op.apply(document)
    op.events.clear()

    status = op.reconcile()

    refused = [e.message for e in op.events if e.reason == "WarmStartRefused"]
    told = status.get("warmStart", {}).get("seeded", 0)
    if direction == "minimize":
        assert (refused, told) == ([], 3)
    else:
        assert told == 0
        assert refused == [
            "spec.warmStart.fromStudy: study earlier optimised 'loss' (minimize), this study "
            "'loss' (maximize); its values would mislead the sampler"
        ]
        assert op.server.get(JOBS, NS, "syn-t0") is not None  # the study runs, unseeded


# ----- issue 19: the ETA of a running study lives in its status -----------------------------


def _status_writes(op: Operator) -> int:
    return op.server.requests.count(("PATCH", f"{STUDIES}/status"))


def _run_two_trials(op: Operator, first: float, second: float) -> dict[str, Any]:
    """Trials 0 and 1 launch together and end `first` and `second` seconds later."""
    op.reconcile()
    op.server.now += first
    op.finish(0, 0.5)
    op.reconcile()
    op.server.now += second - first
    op.finish(1, 0.4)
    return op.reconcile()


def test_a_running_study_has_an_eta_from_its_median_trial_time() -> None:
    op = Operator()
    op.apply(study(maxTrials=6, parallelism=2))

    assert "etaSeconds" not in op.reconcile()  # nothing finished: no median yet
    op.server.now += 100
    op.finish(0, 0.5)
    status = op.reconcile()
    assert status["etaSeconds"] == 5 * 100 // 2  # 5 left, median 100 s, 2 at a time
    op.server.now += 200
    op.finish(1, 0.4)

    status = op.reconcile()

    # Trials 0 and 1 took 100 s and 300 s: the median is 200 s; 4 trials are left.
    assert status["trials"]["finished"] == 2
    assert status["etaSeconds"] == 4 * 200 // 2
    assert status["display"]["eta"] == "6m40s"


def test_the_eta_costs_no_status_write_of_its_own() -> None:
    op = Operator()
    op.apply(study(maxTrials=6, parallelism=2))
    eta = _run_two_trials(op, 100, 300)["etaSeconds"]
    for number in (2, 3):  # the next two run (a Job with no pod would soon be stuck)
        op.server.run_pod(build.trial_name("syn", number), NS)
    op.reconcile()
    writes = _status_writes(op)

    for _ in range(3):  # time passes, nothing ends: the same estimate, no write
        op.server.now += 30
        assert op.reconcile()["etaSeconds"] == eta

    assert _status_writes(op) == writes


def test_the_last_trials_eta_is_a_whole_trial_time_not_a_share_of_one() -> None:
    op = Operator()
    op.apply(study(maxTrials=3, parallelism=2))

    status = _run_two_trials(op, 100, 300)

    assert status["etaSeconds"] == 200  # one left: parallelism does not divide it


def test_the_eta_survives_an_operator_restart_and_goes_when_the_study_ends() -> None:
    op = Operator()
    op.apply(study(maxTrials=3, parallelism=2))
    eta = _run_two_trials(op, 100, 300)["etaSeconds"]
    op.reconciler = Reconciler(op.server.kube())  # rebuilt from the TuningTrials

    assert op.reconcile()["etaSeconds"] == eta
    op.finish(2, 0.3)
    final = op.reconcile()
    assert final["phase"] == "Succeeded"
    assert "etaSeconds" not in final
    assert "eta" not in final["display"]


# ----- issue 19: a multi-objective study exports its front for the Grafana panels ------------


def test_a_multi_objective_study_exports_its_front_size_and_each_objectives_best() -> None:
    op = Operator()
    document = tradeoff_study("mo", lr_test=False, budget={"maxTrials": 4, "parallelism": 3})
    body = op.apply(document)
    op.reconcile("mo")
    for number, (loss, cost) in enumerate([(0.5, 3.0), (0.2, 5.0), (0.6, 4.0)]):
        job = build.trial_name("mo", number)
        op.server.run_pod(job, NS)
        op.server.finish_pod(job, NS, {"metrics": {"loss": loss, "cost": cost}})

    status = op.reconcile("mo")

    assert status["paretoFront"]["size"] == 2  # trial 2 is dominated by trial 0
    assert status["paretoFront"]["best"] == {"loss": 0.2, "cost": 3.0}
    registry = op.reconciler.metrics.registry
    labels = {"namespace": NS, "study": "mo"}
    assert registry.get_sample_value("rheostat_study_pareto_front_size", labels) == 2
    for objective, best in (("loss", 0.2), ("cost", 3.0)):
        sample = registry.get_sample_value(
            "rheostat_study_objective_best", {**labels, "objective": objective}
        )
        assert sample == best
    assert "rheostat_study_best_value" not in _series(op, "mo")  # no single best

    op.reconciler.forget(body["metadata"]["uid"], NS, "mo")

    assert _series(op, "mo") == []
