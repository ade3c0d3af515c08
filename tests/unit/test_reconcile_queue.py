"""Kueue, pass by pass: queued is a state, preempted is not failed, sample at admission.

The fake API server plays Kueue's part on the objects: `admit` unsuspends a Job (the
Job controller then resets its startTime), `preempt` suspends it again and marks its
pod deleted, and a Workload labelled with the Job's uid says why it waits.
"""

from __future__ import annotations

from typing import Any

import pytest

from rheostat.backends.kubernetes import manifests as build
from rheostat.backends.kubernetes import queueing
from rheostat.backends.kubernetes.observe import timestamp
from tests.unit.fake_kube import _rfc3339
from tests.unit.test_reconcile import JOBS, NS, Operator, study

PODS = "pods"
QUOTA_MESSAGE = (
    "couldn't assign flavors to pod set main: insufficient unused quota for "
    "nvidia.com/gpu in flavor default-flavor, 1 more needed"
)


def queued_study(queue: str | None = "gpus", **budget: Any) -> dict[str, Any]:
    document = study(**{"maxTrials": 4, "parallelism": 4, **budget})
    if queue is not None:
        document["spec"]["queue"] = queue
        document["spec"]["priorityClass"] = "low"
    return document


def job(op: Operator, number: int) -> dict[str, Any]:
    found = op.server.get(JOBS, NS, build.trial_name("syn", number))
    assert found is not None
    return found


def admit(op: Operator, number: int) -> None:
    """Kueue unsuspends the Job; the Job controller sets its startTime."""
    admitted = job(op, number)
    admitted["spec"]["suspend"] = False
    admitted.setdefault("status", {})["startTime"] = _rfc3339(op.server.now)


def preempt(op: Operator, number: int) -> None:
    """Kueue suspends the Job; the Job controller deletes its pod (SIGTERM, exit 0)."""
    job(op, number)["spec"]["suspend"] = True
    pod = op.server.get(PODS, NS, f"{build.trial_name('syn', number)}-pod")
    assert pod is not None
    pod["metadata"]["deletionTimestamp"] = _rfc3339(op.server.now)
    pod["status"]["containerStatuses"][0]["state"] = {
        "terminated": {"exitCode": 0, "finishedAt": _rfc3339(op.server.now), "message": "{}"}
    }


def workload(op: Operator, number: int, reason: str, message: str) -> None:
    uid = job(op, number)["metadata"]["uid"]
    op.server.add(
        "workloads",
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "Workload",
            "metadata": {
                "name": f"job-syn-t{number}-abcde",
                "namespace": NS,
                "labels": {queueing.LABEL_JOB_UID: uid},
            },
            "spec": {"active": True, "queueName": "gpus"},
            "status": {
                "conditions": [
                    {
                        "type": "QuotaReserved",
                        "status": "False",
                        "reason": reason,
                        "message": message,
                        "lastTransitionTime": _rfc3339(op.server.now),
                    }
                ]
            },
        },
    )


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def test_a_study_queue_labels_its_jobs_and_creates_them_suspended() -> None:
    op = Operator()
    document = queued_study()
    document["spec"]["lrRangeTest"] = synthetic_lr_test()
    op.apply(document)
    op.reconcile()
    lr_job = op.server.get(JOBS, NS, build.lr_test_name("syn"))
    assert lr_job is not None
    assert lr_job["spec"]["suspend"] is True
    assert lr_job["metadata"]["labels"][queueing.LABEL_QUEUE] == "gpus"
    assert lr_job["metadata"]["labels"][queueing.LABEL_PRIORITY] == "low"


def test_the_operators_default_queue_applies_when_the_study_names_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(queueing.ENV_DEFAULT_QUEUE, "team-queue")
    monkeypatch.setenv(queueing.ENV_DEFAULT_PRIORITY, "batch")
    op = Operator()
    op.apply(queued_study(queue=None))
    op.reconcile()
    labels = job(op, 0)["metadata"]["labels"]
    assert labels[queueing.LABEL_QUEUE] == "team-queue"
    assert labels[queueing.LABEL_PRIORITY] == "batch"
    assert job(op, 0)["spec"]["suspend"] is True


def test_without_a_queue_jobs_are_neither_labelled_nor_suspended() -> None:
    op = Operator()
    op.apply(queued_study(queue=None))
    op.reconcile()
    assert "suspend" not in job(op, 0)["spec"]
    assert queueing.LABEL_QUEUE not in job(op, 0)["metadata"]["labels"]


def test_a_queued_trial_is_never_stuck_and_the_condition_carries_kueues_message() -> None:
    op = Operator()
    op.apply(queued_study())
    status = op.reconcile()
    assert op.server.get(JOBS, NS, build.trial_name("syn", 1)) is None  # queueDepth 1
    workload(op, 0, "Pending", QUOTA_MESSAGE)
    op.server.now += 3600  # an hour waiting for a GPU: far past every stuck timer
    status = op.reconcile()
    assert status["trials"]["queued"] == 1
    assert status["trials"]["running"] == 1
    assert condition(status, "TrialsStuck")["status"] == "False"
    queued = condition(status, "TrialsQueued")
    assert (queued["status"], queued["reason"]) == ("True", "WaitingForQuota")
    assert QUOTA_MESSAGE in queued["message"]
    assert op.server.get(JOBS, NS, build.trial_name("syn", 0)) is not None
    assert op.server.get(JOBS, NS, build.trial_name("syn", 1)) is None


def test_the_next_trial_is_sampled_only_when_the_waiting_one_is_admitted() -> None:
    """parallelism 4 behind a quota of 2: 2 admitted and 1 waiting, not 4 stale samples."""
    op = Operator()
    op.apply(queued_study(maxTrials=6))
    op.reconcile()
    admit(op, 0)
    op.reconcile()  # t0 admitted: t1 sampled, waits
    admit(op, 1)
    op.reconcile()  # t1 admitted: t2 sampled, waits (the quota of 2 is full)
    op.server.now += 60
    status = op.reconcile()
    assert [n for n in range(6) if op.server.get(JOBS, NS, build.trial_name("syn", n))] == [
        0,
        1,
        2,
    ]
    assert (status["trials"]["running"], status["trials"]["queued"]) == (3, 1)
    assert status["queue"]["sampledWhileWaiting"] == 0


def test_samples_taken_while_another_trial_waited_are_reported() -> None:
    op = Operator()
    op.apply(queued_study(queueDepth=2))
    status = op.reconcile()  # t0 and t1 launched together: t1 sampled while t0 waited
    assert status["queue"]["sampledWhileWaiting"] == 1
    assert status["trials"]["queued"] == 2


def test_a_preempted_trial_is_kept_resumed_in_place_and_counted_once() -> None:
    op = Operator()
    op.apply(queued_study(maxTrials=1, trialTimeout=100))
    op.reconcile()
    admit(op, 0)
    op.server.run_pod(build.trial_name("syn", 0), NS)
    op.reconcile()
    op.server.now += 90
    preempt(op, 0)
    op.events.clear()
    status = op.reconcile()
    assert op.server.get(JOBS, NS, build.trial_name("syn", 0)) is not None  # not deleted
    assert "TrialPreempted" in op.reasons()
    assert status["trials"]["queued"] == 1
    assert status["queue"]["preemptions"] == 1
    assert op.trial(0)["status"]["state"] == "Queued"
    # Kueue re-admits it an hour later: the old pod is gone, a new one runs.
    op.server.now += 3600
    op.server.delete(PODS, NS, f"{build.trial_name('syn', 0)}-pod")
    admit(op, 0)
    op.server.run_pod(build.trial_name("syn", 0), NS)
    op.server.now += 60  # 150 s since the first start, 60 s since the latest
    status = op.reconcile()
    assert op.trial(0)["status"]["state"] == "Running"  # trialTimeout counts from the resume
    op.server.finish_pod(build.trial_name("syn", 0), NS, {"metrics": {"loss": 0.5}})
    status = op.reconcile()
    assert status["phase"] == "Succeeded"
    assert status["trials"]["finished"] == 1
    assert op.trial(0)["status"]["attempt"] == 1
    assert op.trial(0)["status"]["state"] == "Complete"
    assert op.server.get("tuningtrials", NS, build.trial_name("syn", 1)) is None  # no retry


def test_a_job_kueue_took_without_opting_in_is_queued_not_failed() -> None:
    """A namespace LocalQueue `default`: the webhook labels and suspends our Job."""
    op = Operator()
    op.apply(queued_study(queue=None, maxTrials=2, parallelism=2))
    op.reconcile()
    for number in (0, 1):
        job(op, number)["spec"]["suspend"] = True
    op.server.now += 700  # past unschedulableTimeout (600 s)
    status = op.reconcile()
    assert status["trials"]["queued"] == 2
    assert condition(status, "TrialsStuck")["status"] == "False"
    for number in (0, 1):
        admit(op, number)
        op.finish(number, 0.1 * (number + 1))
    status = op.reconcile()
    assert status["phase"] == "Succeeded"
    assert status["trials"]["failed"] == 0


def test_a_trial_kueue_cannot_admit_fails_after_queue_timeout_with_kueues_message() -> None:
    op = Operator()
    op.apply(queued_study(queue="nope", maxTrials=1, queueTimeout=30))
    op.reconcile()
    workload(op, 0, "Inadmissible", "LocalQueue nope doesn't exist")
    op.server.now += 10
    status = op.reconcile()
    queued = condition(status, "TrialsQueued")
    assert (queued["status"], queued["reason"]) == ("True", "Inadmissible")
    assert "LocalQueue nope doesn't exist" in queued["message"]
    op.server.now += 30
    status = op.reconcile()
    assert op.trial(0)["status"]["state"] == "Failed"
    assert "LocalQueue nope doesn't exist" in op.trial(0)["status"]["reason"]
    assert "queueTimeout=30s" in op.trial(0)["status"]["reason"]
    assert op.server.get(JOBS, NS, build.trial_name("syn", 0)) is None
    queued = condition(status, "TrialsQueued")
    assert (queued["status"], queued["reason"]) == ("False", "QueueTimeout")
    assert "trial 0 failed" in queued["message"]


def test_a_plain_wait_for_quota_has_no_queue_timeout() -> None:
    op = Operator()
    op.apply(queued_study(maxTrials=1, queueTimeout=30))
    op.reconcile()
    workload(op, 0, "Pending", QUOTA_MESSAGE)
    op.server.now += 3600
    op.reconcile()
    assert op.trial(0)["status"]["state"] == "Queued"


def test_without_the_workload_crd_a_queued_trial_still_waits() -> None:
    """No Workload found (no CRD, no RBAC): the wait is shown without Kueue's reason."""
    op = Operator()
    op.apply(queued_study(maxTrials=1))
    op.reconcile()
    op.server.now += 3600
    status = op.reconcile()
    assert condition(status, "TrialsQueued")["status"] == "True"
    assert op.trial(0)["status"]["state"] == "Queued"


def test_a_preempted_lr_range_test_resumes_and_its_old_pod_never_speaks() -> None:
    op = Operator()
    document = queued_study()
    document["spec"]["lrRangeTest"] = synthetic_lr_test()
    op.apply(document)
    op.reconcile()
    name = build.lr_test_name("syn")
    lr_job = op.server.get(JOBS, NS, name)
    assert lr_job is not None
    lr_job["spec"]["suspend"] = False
    lr_job["status"] = {"startTime": _rfc3339(op.server.now)}
    op.server.run_pod(name, NS)
    op.reconcile()
    op.server.now += 30
    lr_job["spec"]["suspend"] = True  # preempted: the pod is deleted, exit 0, no curve
    pod = op.server.get(PODS, NS, f"{name}-pod")
    assert pod is not None
    pod["metadata"]["deletionTimestamp"] = _rfc3339(op.server.now)
    pod["status"]["containerStatuses"][0]["state"] = {
        "terminated": {"exitCode": 0, "finishedAt": _rfc3339(op.server.now), "message": "{}"}
    }
    status = op.reconcile()
    assert status["phase"] == "LrRangeTest"
    assert condition(status, "TrialsQueued")["message"].startswith("the LR range test")
    op.server.now += 60
    lr_job["spec"]["suspend"] = False
    lr_job["status"] = {"startTime": _rfc3339(op.server.now)}
    status = op.reconcile()  # resumed, the old pod (still terminating) is not its result
    assert status["phase"] == "LrRangeTest"
    assert timestamp(lr_job["status"]["startTime"]) == op.server.now


def synthetic_lr_test() -> dict[str, Any]:
    return {"parameter": "lr", "minLr": 1e-5, "maxLr": 1.0, "steps": 20}


def test_a_restarted_operator_finds_its_queued_trial_waiting_and_samples_no_more() -> None:
    op = Operator()
    op.apply(queued_study())
    op.reconcile()
    assert op.trial(0)["status"]["state"] == "Queued"
    restarted = Operator(server=op.server)  # a new process: the engine rebuilt from objects
    status = restarted.reconcile()
    assert "Resumed" in restarted.reasons()
    assert status["trials"]["queued"] == 1
    assert op.server.get(JOBS, NS, build.trial_name("syn", 1)) is None
    admit(op, 0)
    restarted.reconcile()
    assert op.trial(0)["status"]["state"] == "Running"
    assert op.server.get(JOBS, NS, build.trial_name("syn", 1)) is not None
