"""The operator on a real control plane: studies run as Jobs, end to end."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from kubernetes import client

from tests.integration.operator_support import (
    OperatorProcess,
    create_study,
    pods_per_trial,
    require_prometheus,
    synthetic_study,
    trials,
    wait,
    wait_for_phase,
)

ALGORITHMS = ["grid", "random", "tpe", "bayesian", "cmaes", "qmc"]


def test_a_study_with_the_lr_range_test_runs_to_the_end(
    admin_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    create_study(
        admin_api,
        namespace,
        synthetic_study("lrsyn", lr_test=True, budget={"maxTrials": 4, "parallelism": 2}),
    )
    study = wait_for_phase(
        admin_api, namespace, "lrsyn", {"Succeeded", "Failed"}, seconds=180, operator=operator
    )
    status = study["status"]
    assert status["phase"] == "Succeeded", status
    assert status["trials"]["complete"] == 4
    lr = status["lrRangeTest"]
    low, high = lr["narrowedTo"]
    assert 1e-5 <= low < lr["suggestedLr"] < high <= 1.0
    found = trials(admin_api, namespace, "lrsyn")
    assert [t["status"]["state"] for t in found] == ["Complete"] * 4
    assert all(low <= t["spec"]["params"]["lr"] <= high for t in found)
    best = status["bestTrial"]
    assert best["value"] == min(t["status"]["value"] for t in found)
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Complete"] == "True"
    assert conditions["LrRangeTestDone"] == "True"
    # Parameters reach the pod as env vars; the user's command is untouched.
    job = client.BatchV1Api(admin_api).read_namespaced_job("lrsyn-t0", namespace)
    container = job.spec.template.spec.containers[0]
    assert container.command == ["python", "-m", "rheostat_trainer.examples.synthetic"]
    env = {e.name: e.value for e in container.env}
    assert env["RHEOSTAT_PARAM_LR"] == str(found[0]["spec"]["params"]["lr"])
    assert len(job.spec.template.spec.containers) == 1  # no sidecar
    # kubectl tells the story.
    table = subprocess.run(
        ["kubectl", "get", "tstudy,ttrial", "-n", namespace],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    print(table)
    assert "Succeeded" in table
    assert "lrsyn-t3" in table
    events = client.CoreV1Api(admin_api).list_namespaced_event(
        namespace, field_selector="involvedObject.name=lrsyn"
    )
    reasons = {e.reason for e in events.items}
    assert {
        "LrRangeTestStarted",
        "LrRangeTestFinished",
        "TrialStarted",
        "TrialCompleted",
    } <= reasons


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_on_the_cluster(
    algorithm: str, admin_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    name = f"alg-{algorithm}"
    create_study(
        admin_api, namespace, synthetic_study(name, algorithm=algorithm, args=["--steps", "2"])
    )
    study = wait_for_phase(
        admin_api, namespace, name, {"Succeeded", "Failed"}, seconds=180, operator=operator
    )
    assert study["status"]["phase"] == "Succeeded", study["status"]
    found = trials(admin_api, namespace, name)
    assert len(found) == 3
    assert len({tuple(sorted(t["spec"]["params"].items())) for t in found}) == 3
    assert set(pods_per_trial(admin_api, namespace, name).values()) == {1}


def test_a_failing_trainer_fails_the_trial_and_then_the_study(
    admin_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    budget = {"maxTrials": 3, "parallelism": 1, "maxFailedTrials": 0}
    create_study(
        admin_api,
        namespace,
        synthetic_study("crash", args=["--fault", "crash", "--fault-on-trial", "1"], budget=budget),
    )
    study = wait_for_phase(
        admin_api, namespace, "crash", {"Succeeded", "Failed"}, seconds=180, operator=operator
    )
    assert study["status"]["phase"] == "Failed"
    failed = trials(admin_api, namespace, "crash")[1]
    assert failed["status"]["state"] == "Failed"
    assert "exited with code 1" in failed["status"]["reason"]
    conditions = {c["type"]: c for c in study["status"]["conditions"]}
    assert conditions["Failed"]["status"] == "True"
    assert "maxFailedTrials=0" in conditions["Failed"]["message"]


def test_pruned_trials_lose_their_jobs(
    admin_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    document = synthetic_study(
        "prune",
        algorithm="random",
        args=["--steps", "8", "--step-seconds", "0.6"],
        budget={"maxTrials": 6, "parallelism": 2},
        pruner="successive-halving",
    )
    create_study(admin_api, namespace, document)
    wait_for_phase(
        admin_api, namespace, "prune", {"Succeeded", "Failed"}, seconds=240, operator=operator
    )
    found = trials(admin_api, namespace, "prune")
    pruned = [t for t in found if t["status"]["state"] == "Pruned"]
    assert pruned, [t["status"] for t in found]
    jobs = {
        j.metadata.name for j in client.BatchV1Api(admin_api).list_namespaced_job(namespace).items
    }
    for trial in pruned:
        assert trial["metadata"]["name"] not in jobs
        assert "pruned at step" in trial["status"]["reason"]


def test_a_gpu_request_no_node_can_meet_is_reported_not_silent(
    admin_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    budget = {
        "maxTrials": 2,
        "parallelism": 1,
        "maxRetries": 0,
        "maxFailedTrials": 0,
        "trialTimeout": 2,  # waiting for a node is not running: it must not time out
        "unschedulableTimeout": 6,
    }
    document = synthetic_study("gpus", budget=budget, resources={"limits": {"nvidia.com/gpu": 64}})
    create_study(admin_api, namespace, document)

    def unschedulable_condition() -> Any:
        status = (
            client.CustomObjectsApi(admin_api)
            .get_namespaced_custom_object(
                "rheostat.dev", "v1alpha1", namespace, "tuningstudies", "gpus"
            )
            .get("status")
            or {}
        )
        return next(
            (
                c
                for c in status.get("conditions", [])
                if c["type"] == "TrialsStuck" and c["status"] == "True"
            ),
            None,
        )

    condition = wait(unschedulable_condition, 60, "a TrialsStuck condition")
    assert condition["reason"] == "Unschedulable"
    assert "nvidia.com/gpu" in condition["message"]
    study = wait_for_phase(admin_api, namespace, "gpus", {"Failed"}, seconds=120, operator=operator)
    trial = trials(admin_api, namespace, "gpus")[0]
    assert trial["status"]["state"] == "Failed"
    assert "unschedulable for more than 6s" in trial["status"]["reason"]
    assert study["status"]["trials"]["running"] == 0


def test_operator_killed_mid_study_loses_nothing_and_repeats_nothing(
    admin_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    document = synthetic_study(
        "restart",
        algorithm="tpe",
        args=["--steps", "3", "--step-seconds", "0.5"],
        budget={"maxTrials": 8, "parallelism": 2},
    )
    create_study(admin_api, namespace, document)
    wait(lambda: len(trials(admin_api, namespace, "restart")) >= 3, 120, "three trials")
    operator.kill()
    operator.start()
    study = wait_for_phase(
        admin_api, namespace, "restart", {"Succeeded", "Failed"}, seconds=240, operator=operator
    )
    assert study["status"]["phase"] == "Succeeded", study["status"]
    found = trials(admin_api, namespace, "restart")
    counted = [t for t in found if t["status"].get("kind", "counted") == "counted"]
    assert len(counted) == 8
    assert all(t["status"]["state"] == "Complete" for t in counted)
    assert len({tuple(sorted(t["spec"]["params"].items())) for t in counted}) == 8
    assert set(pods_per_trial(admin_api, namespace, "restart").values()) == {1}, "a trial ran twice"


@pytest.mark.slow
def test_digits_with_the_lr_range_test_on_the_cluster(
    admin_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    import copy
    from pathlib import Path

    import yaml

    document = yaml.safe_load((Path(__file__).parents[2] / "examples" / "digits.yaml").read_text())
    document = copy.deepcopy(document)
    document["spec"]["budget"] = {"maxTrials": 2, "parallelism": 2}
    document["spec"]["lrRangeTest"]["apply"] = "fix"  # every trial uses the suggestion
    create_study(admin_api, namespace, document)
    study = wait_for_phase(
        admin_api, namespace, "digits", {"Succeeded", "Failed"}, seconds=300, operator=operator
    )
    status = study["status"]
    assert status["phase"] == "Succeeded", status
    assert 1e-6 < status["lrRangeTest"]["suggestedLr"] < 3.0
    assert len(status["lrRangeTest"]["curve"]["losses"]) > 10
    assert status["bestTrial"]["value"] > 0.3  # real training: far above chance (0.1)
    assert all(
        t["spec"]["params"]["lr"] == status["lrRangeTest"]["suggestedLr"]
        for t in trials(admin_api, namespace, "digits")
    )
    # The operator's own metrics tell the same story.
    import urllib.request

    with urllib.request.urlopen(
        f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5
    ) as r:
        text = r.read().decode()
    assert 'rheostat_trials_total{state="complete"}' in text
    assert f'rheostat_study_best_value{{namespace="{namespace}",study="digits"}}' in text
    assert "rheostat_lr_range_test_suggestion" in text
    assert "rheostat_reconcile_duration_seconds_count" in text


def test_a_lost_pod_is_retried_with_the_same_parameters(
    admin_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    document = synthetic_study(
        "evict",
        args=["--steps", "10", "--step-seconds", "0.5"],
        budget={"maxTrials": 2, "parallelism": 1, "maxFailedTrials": 0},
    )
    create_study(admin_api, namespace, document)
    core = client.CoreV1Api(admin_api)

    def running_pod() -> Any:
        pods = core.list_namespaced_pod(
            namespace, label_selector="rheostat.dev/study=evict,rheostat.dev/trial=0"
        ).items
        return next((p for p in pods if p.status.phase == "Running"), None)

    pod = wait(running_pod, 60, "trial 0's pod running")
    core.delete_namespaced_pod(pod.metadata.name, namespace)  # what a node drain does
    study = wait_for_phase(
        admin_api, namespace, "evict", {"Succeeded", "Failed"}, seconds=180, operator=operator
    )
    assert study["status"]["phase"] == "Succeeded", study["status"]
    found = trials(admin_api, namespace, "evict")
    lost = found[0]
    assert lost["status"]["kind"] == "retry"
    assert "retrying" in lost["status"]["reason"]
    retried = next(t for t in found if t["status"].get("attempt") == 2)
    assert retried["spec"]["params"] == lost["spec"]["params"]
    assert retried["status"]["state"] == "Complete"
    assert [t["status"]["state"] for t in found if t["status"]["kind"] == "counted"] == [
        "Complete",
        "Complete",
    ]


def test_intermediate_values_can_come_from_prometheus(
    cluster: Any, admin_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    prometheus = require_prometheus(cluster.prometheus_url)
    document = synthetic_study(
        "promql",
        # Long enough for Prometheus to discover the pods and scrape them a few times.
        args=["--steps", "15", "--step-seconds", "1"],
        budget={"maxTrials": 2, "parallelism": 2},
    )
    document["spec"]["metrics"]["prometheusUrl"] = prometheus
    create_study(admin_api, namespace, document)
    wait_for_phase(
        admin_api, namespace, "promql", {"Succeeded", "Failed"}, seconds=180, operator=operator
    )
    for trial in trials(admin_api, namespace, "promql"):
        assert trial["status"]["state"] == "Complete"
        # Prometheus scraped the pod; the operator read the values back with PromQL.
        assert len(trial["status"]["intermediate"]) >= 2, trial["status"]


def test_a_bigger_budget_takes_effect_on_a_finished_study(
    admin_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    create_study(
        admin_api,
        namespace,
        synthetic_study("grow", args=["--steps", "1"], budget={"maxTrials": 2, "parallelism": 1}),
    )
    wait_for_phase(admin_api, namespace, "grow", {"Succeeded"}, seconds=120, operator=operator)
    client.CustomObjectsApi(admin_api).patch_namespaced_custom_object(
        "rheostat.dev",
        "v1alpha1",
        namespace,
        "tuningstudies",
        "grow",
        {"spec": {"budget": {"maxTrials": 4, "parallelism": 1}}},
    )
    wait(
        lambda: (
            len(trials(admin_api, namespace, "grow")) == 4
            and all(
                t["status"]["state"] == "Complete" for t in trials(admin_api, namespace, "grow")
            )
        ),
        120,
        "two more trials",
    )
    study = wait_for_phase(
        admin_api, namespace, "grow", {"Succeeded"}, seconds=60, operator=operator
    )
    assert study["status"]["trials"]["complete"] == 4
