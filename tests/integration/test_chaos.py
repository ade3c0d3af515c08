"""Chaos on the real control plane: whatever breaks, no trial is lost or run twice.

Each case asserts the same guarantees: exactly the budgeted number of counted trials,
no parameter set counted twice, and one pod per trial number (a retry after an
infrastructure loss is a new trial number with the same parameters).
"""

from __future__ import annotations

import os
import random
import signal
import time
from typing import Any

import pytest
from kubernetes import client

from tests.integration.conftest import ClusterHandle
from tests.integration.operator_support import (
    GROUP,
    VERSION,
    OperatorProcess,
    create_study,
    pods_per_trial,
    synthetic_study,
    trials,
    wait,
    wait_for_phase,
)


def _assert_exactly_once(api: client.ApiClient, namespace: str, study: str, budget: int) -> None:
    found = trials(api, namespace, study)
    counted = [t for t in found if t["status"].get("kind", "counted") == "counted"]
    assert len(counted) == budget, [t["status"] for t in found]
    params = [tuple(sorted(t["spec"]["params"].items())) for t in counted]
    assert len(set(params)) == budget, "a parameter set was counted twice"
    per_trial = pods_per_trial(api, namespace, study)
    assert set(per_trial.values()) <= {1}, f"a trial's pod ran twice: {per_trial}"


def test_the_operator_killed_at_ten_random_moments_loses_nothing(
    admin_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    seed = int(os.environ.get("RHEOSTAT_CHAOS_SEED", time.time_ns() % 1_000_000))
    print(f"chaos seed: {seed} (rerun with RHEOSTAT_CHAOS_SEED={seed})")
    chance = random.Random(seed)
    document = synthetic_study(
        "chaos",
        args=["--steps", "2", "--step-seconds", "0.3"],
        budget={"maxTrials": 50, "parallelism": 4, "maxFailedTrials": 0},
    )
    create_study(admin_api, namespace, document)
    for _ in range(10):
        time.sleep(chance.uniform(0.2, 3.0))
        operator.kill()
        operator.start()
    study = wait_for_phase(
        admin_api, namespace, "chaos", {"Succeeded", "Failed"}, seconds=400, operator=operator
    )
    assert study["status"]["phase"] == "Succeeded", (seed, study["status"])
    assert study["status"]["trials"]["finished"] == 50
    _assert_exactly_once(admin_api, namespace, "chaos", 50)


def test_the_api_server_frozen_for_30_seconds_loses_nothing(
    cluster: Any, admin_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    """The operator cut off from the API server mid-study (SIGSTOP, then SIGCONT)."""
    apiserver = dict(cluster.info.groups)["kube-apiserver"]
    document = synthetic_study(
        "frozen",
        args=["--steps", "4", "--step-seconds", "0.5"],
        budget={"maxTrials": 8, "parallelism": 2, "maxFailedTrials": 0},
    )
    create_study(admin_api, namespace, document)
    wait(lambda: len(trials(admin_api, namespace, "frozen")) >= 2, 60, "two trials")
    os.killpg(apiserver, signal.SIGSTOP)
    try:
        time.sleep(30)
    finally:
        os.killpg(apiserver, signal.SIGCONT)
    study = wait_for_phase(
        admin_api, namespace, "frozen", {"Succeeded", "Failed"}, seconds=240, operator=operator
    )
    assert study["status"]["phase"] == "Succeeded", study["status"]
    _assert_exactly_once(admin_api, namespace, "frozen", 8)


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_a_control_plane_restart_mid_study_loses_nothing(
    component: str,
    cluster: ClusterHandle,
    admin_api: client.ApiClient,
    namespace: str,
    operator: OperatorProcess,
) -> None:
    """The API server (or etcd under it) restarted while trials run: watches break,
    requests fail, the study goes on once it is back, with every guarantee kept."""
    name = f"restart-{component}"
    document = synthetic_study(
        name,
        args=["--steps", "4", "--step-seconds", "0.5"],
        budget={"maxTrials": 8, "parallelism": 2, "maxFailedTrials": 0},
    )
    create_study(admin_api, namespace, document)
    wait(lambda: len(trials(admin_api, namespace, name)) >= 3, 90, "three trials")
    cluster.restart(component)
    study = wait_for_phase(
        admin_api, namespace, name, {"Succeeded", "Failed"}, seconds=240, operator=operator
    )
    assert study["status"]["phase"] == "Succeeded", study["status"]
    _assert_exactly_once(admin_api, namespace, name, 8)
    assert operator.process is not None
    assert operator.process.poll() is None, operator.log_tail()


def test_a_trainer_that_never_reports_nor_exits_is_timed_out_and_stopped(
    admin_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    budget = {"maxTrials": 2, "parallelism": 2, "maxFailedTrials": 5, "trialTimeout": 3}
    create_study(
        admin_api, namespace, synthetic_study("hung", args=["--fault", "hang"], budget=budget)
    )
    study = wait_for_phase(
        admin_api, namespace, "hung", {"Succeeded", "Failed"}, seconds=120, operator=operator
    )
    assert study["status"]["phase"] == "Failed"  # no trial completed
    assert "no trial completed" in study["status"]["reason"]
    for trial in trials(admin_api, namespace, "hung"):
        assert trial["status"]["reason"] == "timed out after 3s"
    batch = client.BatchV1Api(admin_api)

    def no_jobs_left() -> bool:
        return not batch.list_namespaced_job(
            namespace, label_selector="rheostat.dev/study=hung"
        ).items

    wait(no_jobs_left, 60, "the timed-out trials' Jobs deleted")


def test_a_study_deleted_while_its_trials_run_leaves_nothing_behind(
    admin_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    document = synthetic_study(
        "doomed",
        args=["--steps", "20", "--step-seconds", "0.5"],
        budget={"maxTrials": 6, "parallelism": 3},
    )
    create_study(admin_api, namespace, document)
    core = client.CoreV1Api(admin_api)
    selector = "rheostat.dev/study=doomed"

    def running() -> bool:
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
        return sum(1 for p in pods if p.status.phase == "Running") >= 2

    wait(running, 60, "two trials running")
    client.CustomObjectsApi(admin_api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "tuningstudies", "doomed"
    )
    batch = client.BatchV1Api(admin_api)

    def all_gone() -> bool:
        return not (
            trials(admin_api, namespace, "doomed")
            or batch.list_namespaced_job(namespace, label_selector=selector).items
            or core.list_namespaced_pod(namespace, label_selector=selector).items
        )

    wait(all_gone, 120, "trials, Jobs and pods garbage-collected")
    assert operator.process is not None
    assert operator.process.poll() is None, operator.log_tail()
