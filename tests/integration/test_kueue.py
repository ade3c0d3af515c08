"""The operator under real Kueue (v0.17.0, built from its module) on the real control plane.

Kueue runs outside the cluster (tests/cluster/kueue.py); its webhooks see only the
namespaces a test labels. Each test gets a ClusterQueue of 2 `nvidia.com/gpu` (the
process nodes advertise GPUs; Kueue admits by quota, the scheduler by node
capacity), a LocalQueue `gpus` in its namespace, and WorkloadPriorityClasses `low` and
`high` for preemption.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster import BinariesMissingError
from tests.cluster.kueue import FLAVOR, NAMESPACE_LABEL, Kueue, apply_objects, quota_objects
from tests.cluster.polling import wait_for
from tests.integration.conftest import IN_CI, ClusterHandle
from tests.integration.operator_support import (
    OperatorProcess,
    create_study,
    get_study,
    synthetic_study,
    trials,
    wait,
    wait_for_phase,
)
from tests.integration.test_chart import _rules, _template

KUEUE = ("kueue.x-k8s.io", "v1beta2")
GPU = {"limits": {"nvidia.com/gpu": 1}}


@pytest.fixture(scope="module")
def kueue(cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kueue]:
    try:
        manager = Kueue(cluster.kubeconfig, tmp_path_factory.mktemp("kueue"))
    except BinariesMissingError as error:
        if IN_CI:
            pytest.fail(f"Kueue tests cannot run under CI: {error}", pytrace=False)
        pytest.skip(f"Kueue tests skipped: {error}")
    manager.start()
    try:
        _ensure_cluster_objects(cluster.kubeconfig)
        yield manager
    finally:
        manager.stop()


def _ensure_cluster_objects(kubeconfig: Path) -> None:
    version = "/".join(KUEUE)
    priority = [
        {
            "apiVersion": version,
            "kind": "WorkloadPriorityClass",
            "metadata": {"name": n},
            "value": v,
        }
        for n, v in (("low", 10), ("high", 1000))
    ]
    apply_objects(kubeconfig, FLAVOR, *priority)


Queue = Callable[..., str]


@pytest.fixture
def queue(
    kueue: Kueue, cluster: ClusterHandle, admin_api: client.ApiClient, namespace: str
) -> Iterator[Queue]:
    """`make(local_queue="gpus")`: the namespace handed to Kueue, behind 2 GPUs of quota."""
    core = client.CoreV1Api(admin_api)
    core.patch_namespace(namespace, {"metadata": {"labels": {NAMESPACE_LABEL: "true"}}})
    cluster_queue = f"cq-{namespace}"

    def make(local_queue: str = "gpus") -> str:
        lower = {"withinClusterQueue": "LowerPriority"}
        objects = quota_objects(cluster_queue, local_queue, namespace, 2, preemption=lower)
        apply_objects(cluster.kubeconfig, *objects)
        return local_queue

    yield make
    custom = client.CustomObjectsApi(admin_api)
    try:
        custom.delete_cluster_custom_object(*KUEUE, "clusterqueues", cluster_queue)
    except ApiException as error:
        if error.status != 404:
            raise


def gpu_study(name: str, queue: str | None, budget: dict[str, Any], *args: str) -> dict[str, Any]:
    document = synthetic_study(name, budget=budget, resources=GPU, args=list(args))
    if queue is not None:
        document["spec"]["queue"] = queue
        document["spec"]["priorityClass"] = "low"
    return document


def admitted_jobs(api: client.ApiClient, namespace: str, study: str) -> list[str]:
    """Jobs Kueue has let run that have not ended: each holds one GPU of quota."""
    jobs = client.BatchV1Api(api).list_namespaced_job(
        namespace, label_selector=f"rheostat.dev/study={study}"
    )
    return [
        j.metadata.name
        for j in jobs.items
        if not j.spec.suspend
        and not any(
            c.type in {"Complete", "Failed"} and c.status == "True"
            for c in (j.status.conditions or [])
        )
    ]


def conditions(study: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (study.get("status") or {}).get("conditions") or []}


def reasons(api: client.ApiClient, namespace: str, study: str) -> list[str]:
    events = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={study}"
    )
    return [e.reason for e in events.items]


def test_ten_gpu_trials_behind_a_quota_of_two_run_two_at_a_time_with_one_waiting(
    admin_api: client.ApiClient, namespace: str, queue: Queue, operator: OperatorProcess
) -> None:
    name = queue()
    create_study(
        admin_api,
        namespace,
        gpu_study(
            "quota",
            name,
            {"maxTrials": 10, "parallelism": 4},
            "--steps",
            "6",
            "--step-seconds",
            "0.3",
        ),
    )
    seen = {"admitted": 0, "queued": 0, "shown": False, "stuck": False, "trial_queued": False}

    def ended() -> dict[str, Any] | None:
        """One look at the study, recording the most admitted and waiting at once."""
        study = get_study(admin_api, namespace, "quota")
        status = study.get("status") or {}
        seen["admitted"] = max(seen["admitted"], len(admitted_jobs(admin_api, namespace, "quota")))
        queued = (status.get("trials") or {}).get("queued", 0)
        seen["queued"] = max(seen["queued"], queued)
        if queued and not seen["shown"]:
            seen["shown"] = _column(namespace, "quota", "QUEUED") == str(queued)
        seen["stuck"] |= conditions(study).get("TrialsStuck", {}).get("status") == "True"
        states = {
            (t.get("status") or {}).get("state") for t in trials(admin_api, namespace, "quota")
        }
        seen["trial_queued"] |= "Queued" in states
        return study if status.get("phase") in {"Succeeded", "Failed"} else None

    study = wait_for(ended, 300, "the study behind the quota to end")
    status = study["status"]
    assert seen["admitted"] == 2, "Kueue admitted more than the quota (or never 2 at once)"
    assert status["phase"] == "Succeeded", status
    assert status["trials"]["complete"] == 10
    assert len(trials(admin_api, namespace, "quota")) == 10  # exactly 10 counted, none re-run
    assert seen["queued"] == 1  # queueDepth 1: never more than one trial waiting
    assert seen["shown"], "kubectl get tstudy never showed QUEUED with the waiting trial"
    assert not seen["stuck"]
    assert seen["trial_queued"], "no TuningTrial ever showed state Queued"
    assert "TrialsStuck" not in reasons(admin_api, namespace, "quota")
    assert status["queue"]["sampledWhileWaiting"] == 0


def _column(namespace: str, study: str, column: str) -> str:
    """One column of `kubectl get tstudy` (the CRD's printer columns)."""
    table = subprocess.run(
        ["kubectl", "get", "tstudy", study, "-n", namespace],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    header, row = table.splitlines()[:2]
    return row.split()[header.split().index(column)]


def test_a_preempted_trial_resumes_in_place_neither_failed_nor_retried(
    admin_api: client.ApiClient, namespace: str, queue: Queue, operator: OperatorProcess
) -> None:
    name = queue()
    create_study(
        admin_api,
        namespace,
        gpu_study(
            "preempt",
            name,
            {"maxTrials": 2, "parallelism": 2, "queueDepth": 2},
            "--steps",
            "30",
            "--step-seconds",
            "0.3",
        ),
    )
    wait(
        lambda: (
            len(admitted_jobs(admin_api, namespace, "preempt")) == 2
            and _running_pods(admin_api, namespace, "preempt") == 2
        ),
        90,
        "both trials admitted and running",
    )
    # A higher-priority Job that needs both GPUs: Kueue preempts the trials.
    client.BatchV1Api(admin_api).create_namespaced_job(
        namespace,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": "urgent",
                "labels": {
                    "kueue.x-k8s.io/queue-name": name,
                    "kueue.x-k8s.io/priority-class": "high",
                },
            },
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "urgent",
                                "image": "busybox",
                                "command": ["sleep", "2"],
                                "resources": {"limits": {"nvidia.com/gpu": "2"}},
                            }
                        ],
                    }
                },
            },
        },
    )
    wait(
        lambda: "TrialPreempted" in reasons(admin_api, namespace, "preempt"),
        60,
        "a TrialPreempted event",
    )
    study = wait_for_phase(
        admin_api, namespace, "preempt", {"Succeeded", "Failed"}, seconds=180, operator=operator
    )
    status = study["status"]
    assert status["phase"] == "Succeeded", status
    assert status["trials"] == {**status["trials"], "complete": 2, "failed": 0}
    found = trials(admin_api, namespace, "preempt")
    assert [t["spec"]["number"] for t in found] == [0, 1]  # resumed in place, no new trials
    assert all(t["status"]["attempt"] == 1 for t in found)  # no retry spent
    assert status["queue"]["preemptions"] >= 1
    assert "TrialFailed" not in reasons(admin_api, namespace, "preempt")


def _running_pods(api: client.ApiClient, namespace: str, study: str) -> int:
    pods = client.CoreV1Api(api).list_namespaced_pod(
        namespace, label_selector=f"rheostat.dev/study={study}"
    )
    return sum(1 for p in pods.items if p.status.phase == "Running")


def test_a_default_local_queue_takes_unlabelled_jobs_and_the_study_still_succeeds(
    admin_api: client.ApiClient, namespace: str, queue: Queue, operator: OperatorProcess
) -> None:
    queue("default")  # LocalQueueDefaulting: Kueue labels every Job of the namespace
    create_study(
        admin_api,
        namespace,
        gpu_study(
            "plain",
            None,
            {"maxTrials": 4, "parallelism": 4},
            "--steps",
            "4",
            "--step-seconds",
            "0.3",
        ),
    )
    study = wait_for_phase(
        admin_api, namespace, "plain", {"Succeeded", "Failed"}, seconds=180, operator=operator
    )
    status = study["status"]
    assert status["phase"] == "Succeeded", status
    assert (status["trials"]["complete"], status["trials"]["failed"]) == (4, 0)
    assert len(trials(admin_api, namespace, "plain")) == 4
    job = client.BatchV1Api(admin_api).read_namespaced_job("plain-t0", namespace)
    assert job.metadata.labels["kueue.x-k8s.io/queue-name"] == "default"  # Kueue took it
    assert "TrialsStuck" not in reasons(admin_api, namespace, "plain")


def test_a_study_naming_a_missing_local_queue_says_so_then_fails_its_trials(
    admin_api: client.ApiClient, namespace: str, queue: Queue, operator: OperatorProcess
) -> None:
    queue()
    create_study(
        admin_api,
        namespace,
        gpu_study("lost", "nope", {"maxTrials": 1, "maxFailedTrials": 0, "queueTimeout": 5}),
    )

    def inadmissible() -> dict[str, Any] | None:
        found = conditions(get_study(admin_api, namespace, "lost")).get("TrialsQueued")
        return found if found and found["reason"] == "Inadmissible" else None

    condition = wait(inadmissible, 60, "TrialsQueued=Inadmissible")
    assert condition["status"] == "True"
    assert "LocalQueue nope doesn't exist" in condition["message"]
    study = wait_for_phase(
        admin_api, namespace, "lost", {"Succeeded", "Failed"}, seconds=90, operator=operator
    )
    assert study["status"]["phase"] == "Failed"
    found = trials(admin_api, namespace, "lost")
    assert [t["status"]["state"] for t in found] == ["Failed"]
    assert "LocalQueue nope doesn't exist" in found[0]["status"]["reason"]
    assert "queueTimeout=5s" in found[0]["status"]["reason"]
    assert conditions(study)["TrialsQueued"]["reason"] == "QueueTimeout"


def test_the_chart_grants_read_only_workloads_and_default_queue_only_when_asked(
    cluster: ClusterHandle,
) -> None:
    """Rendered by the real helm: no Kueue rule by default; with kueue.enabled, get/list."""

    def rendered(*args: str) -> tuple[set[tuple[str, str, str]], dict[str, Any]]:
        docs = _template("rheo", "rheostat", *args)
        role = next(
            d
            for d in docs
            if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "rheo-rheostat"
        )
        deployment = next(d for d in docs if d["kind"] == "Deployment")
        env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        return _rules(role), {e["name"]: e.get("value") for e in env}

    rules, env = rendered()
    assert not {r for r in rules if r[0] == "kueue.x-k8s.io"}
    assert "RHEOSTAT_DEFAULT_QUEUE" not in env
    rules, env = rendered(
        "--set", "kueue.enabled=true", "--set", "kueue.defaultQueue=gpus",
        "--set", "kueue.defaultPriorityClass=low",
    )  # fmt: skip
    assert {r for r in rules if r[0] == "kueue.x-k8s.io"} == {
        ("kueue.x-k8s.io", "workloads", "get"),
        ("kueue.x-k8s.io", "workloads", "list"),
    }
    assert (env["RHEOSTAT_DEFAULT_QUEUE"], env["RHEOSTAT_DEFAULT_PRIORITY_CLASS"]) == (
        "gpus",
        "low",
    )


def test_a_multi_pod_trial_is_one_workload_admitted_whole(
    admin_api: client.ApiClient, namespace: str, queue: Queue, operator: OperatorProcess
) -> None:
    """Issue 20 under Kueue: two one-GPU pods per trial behind 2 GPUs of quota. Each
    trial's Indexed Job is one Workload of 2 pods, so one trial runs at a time, whole."""
    name = queue()
    document = gpu_study(
        "mpq", name, {"maxTrials": 2, "parallelism": 2}, "--steps", "6", "--step-seconds", "0.3"
    )
    document["spec"]["trialTemplate"]["replicas"] = 2
    create_study(admin_api, namespace, document)
    most = {"admitted": 0}

    def ended() -> dict[str, Any] | None:
        most["admitted"] = max(most["admitted"], len(admitted_jobs(admin_api, namespace, "mpq")))
        study = get_study(admin_api, namespace, "mpq")
        return (
            study if (study.get("status") or {}).get("phase") in {"Succeeded", "Failed"} else None
        )

    study = wait_for(ended, 300, "the two-pod study behind the quota to end")
    assert study["status"]["phase"] == "Succeeded", study["status"]
    assert most["admitted"] == 1, "two 2-GPU trials were admitted at once on 2 GPUs"
    batch = client.BatchV1Api(admin_api)
    custom = client.CustomObjectsApi(admin_api)
    for number in (0, 1):
        uid = batch.read_namespaced_job(f"mpq-t{number}", namespace).metadata.uid
        workloads = custom.list_namespaced_custom_object(
            *KUEUE, namespace, "workloads", label_selector=f"kueue.x-k8s.io/job-uid={uid}"
        )["items"]
        assert len(workloads) == 1, workloads
        assert [s["count"] for s in workloads[0]["spec"]["podSets"]] == [2]
