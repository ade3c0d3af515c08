"""Trials that span several pods, on the real node: torchrun over an Indexed Job.

`examples/distributed.yaml` as committed (its image swapped for the one built here,
its budget smaller): every trial is 2 pods that find each other through the trial's
headless Service (CoreDNS answers `<job>-0.<service>`), train the digits CNN with
DDP over gloo, and rank 0 reports. Then one rank is killed mid-trial, and the study's
deletion must leave no pod, Job or Service behind.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.cluster.polling import wait_for
from tests.containers.chart import (
    GROUP,
    RELEASE,
    RESTRICTED,
    VERSION,
    helm_apply,
    run,
    trials,
    wait_finished,
)
from tests.containers.conftest import TRAINER_IMAGE

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "distributed.yaml"
# The trainer's own process in a pod (torchrun is PID 1 there; this is its worker).
KILL_WORKER = (
    "import os\n"
    "for p in filter(str.isdigit, os.listdir('/proc')):\n"
    "    cmd = open(f'/proc/{p}/cmdline', 'rb').read()\n"
    "    if int(p) not in (1, os.getpid()) and b'rheostat_trainer.examples.digits' in cmd:\n"
    "        os.kill(int(p), 9)\n"
)


@pytest.fixture
def release(namespace: str, tmp_path: Path) -> Iterator[str]:
    helm_apply("install", namespace, tmp_path)
    yield namespace
    run("kubectl", "delete", "tuningstudies", "--all", "--namespace", namespace, "--wait")
    run("helm", "uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "120s")


def _study(name: str, *, epochs: int, budget: dict[str, Any], lr_test: bool) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    document["metadata"]["name"] = name
    spec = document["spec"]
    spec["budget"] = budget
    spec["metrics"]["scrapeInterval"] = 0.5
    if lr_test:
        spec["lrRangeTest"]["steps"] = 30
    else:
        del spec["lrRangeTest"]
    container = spec["trialTemplate"]["spec"]["containers"][0]
    container["image"] = TRAINER_IMAGE
    container["imagePullPolicy"] = "Never"
    container["securityContext"] = RESTRICTED
    container["args"][container["args"].index("--epochs") + 1] = str(epochs)
    # Two cores here, shared with the operator: no CPU request per rank. The image's
    # torch is PyPI's CUDA build: torchrun's agent and its worker reach ~1.4 GB of RSS
    # together (measured), so 1 Gi failed a trial in one run of four.
    container["resources"] = {"requests": {"cpu": "50m"}, "limits": {"memory": "3Gi"}}
    return document


def _left(admin_api: client.ApiClient, namespace: str, study: str) -> dict[str, list[str]]:
    selector = f"rheostat.dev/study={study}"
    core, batch = client.CoreV1Api(admin_api), client.BatchV1Api(admin_api)
    return {
        "pods": [
            p.metadata.name
            for p in core.list_namespaced_pod(namespace, label_selector=selector).items
        ],
        "jobs": [
            j.metadata.name
            for j in batch.list_namespaced_job(namespace, label_selector=selector).items
        ],
        "services": [
            s.metadata.name
            for s in core.list_namespaced_service(namespace, label_selector=selector).items
        ],
    }


def _delete_and_wait_empty(
    custom: client.CustomObjectsApi, admin_api: client.ApiClient, namespace: str, study: str
) -> None:
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "tuningstudies", study)
    empty = {"pods": [], "jobs": [], "services": []}
    wait_for(
        lambda: _left(admin_api, namespace, study) == empty,
        120,
        f"study {study}'s pods, Jobs and Services to go",
    )


def test_a_study_of_two_pod_ddp_trials_succeeds_and_leaves_nothing(
    admin_api: client.ApiClient, release: str
) -> None:
    namespace = release
    custom = client.CustomObjectsApi(admin_api)
    core = client.CoreV1Api(admin_api)
    budget = {"maxTrials": 3, "parallelism": 1, "maxFailedTrials": 0, "trialTimeout": 300}
    document = _study("ddp", epochs=6, budget=budget, lr_test=True)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "tuningstudies", document)

    study = wait_finished(custom, namespace, "ddp", timeout=600)
    found = trials(custom, namespace, "ddp")
    outcomes = [(t["status"]["state"], t["status"].get("reason")) for t in found]
    if study["status"]["phase"] != "Succeeded":
        print(run("kubectl", "get", "pods", "-o", "wide", "--namespace", namespace))
        for pod in core.list_namespaced_pod(
            namespace, label_selector="rheostat.dev/study=ddp"
        ).items:
            print(pod.metadata.name, pod.status.container_statuses)
            print(core.read_namespaced_pod_log(pod.metadata.name, namespace)[-3000:])
    assert study["status"]["phase"] == "Succeeded", outcomes
    assert len(found) == 3
    assert all(t["status"]["state"] == "Complete" for t in found), [t["status"] for t in found]
    # Real training: a low learning rate may stay at chance in 6 epochs, the best not.
    assert all(0.0 <= t["status"]["value"] <= 1.0 for t in found), outcomes
    assert study["status"]["bestTrial"]["value"] > 0.5, study["status"]["bestTrial"]
    # The LR range test ran the same torchrun command as one pod in a world of one
    # (whether its short curve gives advice is the LR rules' business, not this test's).
    lr_job = client.BatchV1Api(admin_api).read_namespaced_job("ddp-lr-range-test", namespace)
    assert lr_job.spec.completion_mode != "Indexed"
    assert lr_job.status.succeeded == 1, lr_job.status
    assert "curve" in study["status"]["lrRangeTest"], study["status"]["lrRangeTest"]
    # Every trial's rank 0 trained in a world of two: init_process_group returns only
    # once both pods have met at MASTER_ADDR (pod 0's name in the trial's Service).
    # Rank 1's pod may be gone: still running when rank 0's success met the Job's
    # successPolicy, the Job controller deleted it.
    pods = core.list_namespaced_pod(
        namespace, label_selector="rheostat.dev/study=ddp,rheostat.dev/role=trial"
    ).items
    rank0 = {
        p.metadata.labels["rheostat.dev/trial"]: p
        for p in pods
        if p.metadata.annotations["batch.kubernetes.io/job-completion-index"] == "0"
    }
    assert sorted(rank0) == ["0", "1", "2"], sorted(rank0)
    for pod in rank0.values():
        assert pod.spec.subdomain == pod.metadata.labels["batch.kubernetes.io/job-name"]
        log = core.read_namespaced_pod_log(pod.metadata.name, namespace)
        assert "rank 0 of 2" in log, log
    services = _left(admin_api, namespace, "ddp")["services"]
    assert sorted(services) == ["ddp-t0", "ddp-t1", "ddp-t2"]

    _delete_and_wait_empty(custom, admin_api, namespace, "ddp")


def test_killing_rank_one_mid_trial_fails_the_trial_by_rank_ones_exit(
    admin_api: client.ApiClient, release: str
) -> None:
    """Rank 0 then dies of a gloo error and the Job controller's SIGTERM: neither counts."""
    namespace = release
    custom = client.CustomObjectsApi(admin_api)
    core = client.CoreV1Api(admin_api)
    budget = {"maxTrials": 1, "parallelism": 1, "maxFailedTrials": 1, "maxRetries": 0}
    document = _study("ddpkill", epochs=100_000, budget=budget, lr_test=False)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "tuningstudies", document)

    def training() -> Any:
        trial = next(iter(trials(custom, namespace, "ddpkill")), None)
        if trial is None or not (trial.get("status") or {}).get("intermediate"):
            return None  # rank 0 has not reported an epoch yet
        pods = core.list_namespaced_pod(
            namespace, label_selector="rheostat.dev/study=ddpkill,rheostat.dev/trial=0"
        ).items
        return next(
            (
                p
                for p in pods
                if p.metadata.annotations["batch.kubernetes.io/job-completion-index"] == "1"
                and p.status.phase == "Running"
            ),
            None,
        )

    rank1 = wait_for(training, 240, "trial 0 training on two pods")
    run(
        "kubectl", "exec", "--namespace", namespace, rank1.metadata.name, "--",
        "python", "-c", KILL_WORKER,
    )  # fmt: skip

    wait_finished(custom, namespace, "ddpkill", timeout=180)
    status = trials(custom, namespace, "ddpkill")[0]["status"]
    assert status["state"] == "Failed", status
    assert status["kind"] == "counted", status  # the trainer's failure, not the cluster's
    assert "rank 1:" in status["reason"], status
    snapshot = copy.deepcopy(status)
    _delete_and_wait_empty(custom, admin_api, namespace, "ddpkill")
    print(f"trial 0 after rank 1 was killed: {snapshot['reason']}")
