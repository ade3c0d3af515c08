"""`helm install` of the chart with the operator image, and a study run in containers.

What users do: install the chart into a namespace that enforces the ``restricted``
Pod Security Standard, wait for the Deployment, ``kubectl apply`` a study whose
trials run the trainer image. Here the operator is the image built from our
Dockerfile (read-only root filesystem, non-root), the trials are real containers,
their final values come from the kubelet's termination messages and their logs
from the kubelet.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.cluster.polling import wait_for
from tests.containers.chart import (
    GROUP,
    RELEASE,
    RESTRICTED,
    VERSION,
    gp_worker_values,
    helm_apply,
    operator_pods,
    pods_per_trial,
    prometheus,
    run,
    trial_study,
    trials,
    wait_finished,
)
from tests.containers.conftest import TRAINER_IMAGE, RealCluster
from tests.studies import synthetic_study


@pytest.fixture
def release(
    request: pytest.FixtureRequest, real_cluster: RealCluster, namespace: str, tmp_path: Path
) -> Iterator[tuple[str, float]]:
    """The chart installed with the operator image, and the GP worker sidecar when the
    test asks for it (indirect parametrisation); (namespace, seconds `--wait` took)."""
    overrides = {"gpWorker": gp_worker_values()} if getattr(request, "param", False) else {}
    took = helm_apply("install", namespace, tmp_path, **overrides)
    yield namespace, took
    # Studies go while the operator still runs: its finalizer would keep them.
    run("kubectl", "delete", "tuningstudies", "--all", "--namespace", namespace, "--wait")
    run("helm", "uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "120s")


def _study(name: str) -> dict[str, Any]:
    """The shared synthetic study with the LR range test, on the trainer image.

    ``bayesian`` with two random start-up trials, so the GP (torch, in the gp-worker
    sidecar: the operator image has none) proposes the last two.
    """
    document = synthetic_study(
        name,
        algorithm="bayesian",
        lr_test=True,
        budget={"maxTrials": 4, "parallelism": 2},
        seed=3,
        scrape_interval=0.5,
        resources={"limits": {"nvidia.com/gpu": 1, "memory": "512Mi"}},
    )
    document["spec"]["algorithm"]["settings"] = {"n_startup_trials": 2}
    container = document["spec"]["trialTemplate"]["spec"]["containers"][0]
    container["image"] = TRAINER_IMAGE
    container["imagePullPolicy"] = "Never"
    container["securityContext"] = RESTRICTED
    return document


@pytest.mark.parametrize("release", [True], ids=["gp-worker"], indirect=True)
def test_helm_install_helm_test_then_a_bayesian_study_succeeds(
    admin_api: client.ApiClient, real_cluster: RealCluster, release: tuple[str, float]
) -> None:
    namespace, install_seconds = release
    apps = client.AppsV1Api(admin_api)
    deployment = apps.list_namespaced_deployment(namespace).items[0]
    available = [c.status for c in deployment.status.conditions if c.type == "Available"]
    assert available == ["True"], deployment.status
    print(f"helm install --wait took {install_seconds:.1f}s")
    # Prometheus finds the operator through the chart's metrics Service (its
    # EndpointSlice), scrapes it, and stores the operator's own series.
    url = real_cluster.info.prometheus_url
    assert url, "the cluster has no Prometheus"
    service = f"{deployment.metadata.name}-metrics"
    target = f'service="{service}",namespace="{namespace}"'

    def scraped() -> list[dict[str, Any]]:
        up = prometheus(url, "/api/v1/query", query=f"up{{{target}}} == 1")["data"]["result"]
        series = prometheus(
            url, "/api/v1/query", query=f"rheostat_reconcile_duration_seconds_count{{{target}}}"
        )["data"]["result"]
        return series if up else []

    series = wait_for(scraped, 60, f"Prometheus to scrape {service}")
    assert {s["metric"]["job"] for s in series} == {"kubernetes-service-endpoints"}, series
    # Only ready endpoints are targets (a standby replica may not be ready).
    assert {s["metric"]["pod"] for s in series} <= {
        p.metadata.name for p in operator_pods(client.CoreV1Api(admin_api), namespace)
    }, series
    # The chart's own test: its metrics Service, by DNS name, from a curl pod.
    run("helm", "test", RELEASE, "--namespace", namespace, "--timeout", "120s")

    custom = client.CustomObjectsApi(admin_api)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "tuningstudies", _study("ct"))
    started = time.monotonic()

    def finished() -> dict[str, Any] | None:
        study = custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "tuningstudies", "ct"
        )
        phase = (study.get("status") or {}).get("phase")
        return study if phase in ("Succeeded", "Failed") else None

    study = wait_for(finished, 400, "study ct to finish")
    print(f"study Succeeded {time.monotonic() - started:.1f}s after it was created")
    status = study["status"]
    assert status["phase"] == "Succeeded", status
    assert status["lrRangeTest"]["narrowedTo"], status
    found = custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, "tuningtrials", label_selector="rheostat.dev/study=ct"
    )["items"]
    assert len(found) == 4
    assert all(t["status"]["state"] == "Complete" for t in found), found
    assert all(isinstance(t["status"].get("value"), float) for t in found), found
    # The GP's asks went to the gp-worker sidecar and came back: none fell back to
    # random sampling (the operator's own series, scraped by Prometheus).
    pods = operator_pods(client.CoreV1Api(admin_api), namespace)
    assert [[c.name for c in p.spec.init_containers or []] for p in pods] == [["gp-worker"]]

    def gp_asks() -> float | None:
        query = f"sum(rheostat_ask_worker_seconds_count{{{target}}})"
        result = prometheus(url, "/api/v1/query", query=query)["data"]["result"]
        asks = float(result[0]["value"][1]) if result else 0.0
        return asks if asks >= 2 else None

    wait_for(gp_asks, 90, "Prometheus to show the GP worker's asks")
    query = f"sum(rheostat_ask_fallbacks_total{{{target}}}) > 0"
    assert prometheus(url, "/api/v1/query", query=query)["data"]["result"] == []
    # A trial's log through the kubelet (its pod stays until the study is deleted).
    core = client.CoreV1Api(admin_api)
    pods = core.list_namespaced_pod(namespace, label_selector="rheostat.dev/role=trial").items
    assert pods, "no trial pods left to read logs from"
    assert all(p.spec.node_name for p in pods)
    logs = run("kubectl", "logs", "--namespace", namespace, pods[0].metadata.name)
    assert logs.strip()


@pytest.mark.parametrize("release", [False], ids=["slim"], indirect=True)
def test_a_deleted_trial_pod_and_a_deleted_operator_pod_lose_nothing(
    admin_api: client.ApiClient, release: tuple[str, float]
) -> None:
    """Real SIGTERMs with grace periods: a node drain of one trial, a rollout of the operator.

    The trial is retried with the same parameters and not counted as failed; the
    Deployment's new operator pod rebuilds the study and finishes exactly the budget.
    """
    namespace, _ = release
    document = trial_study("drain", max_trials=6, seed=5)
    custom = client.CustomObjectsApi(admin_api)
    core = client.CoreV1Api(admin_api)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "tuningstudies", document)

    def running_trial_pod() -> Any:
        pods = core.list_namespaced_pod(
            namespace, label_selector="rheostat.dev/study=drain,rheostat.dev/trial=0"
        ).items
        return next((p for p in pods if p.status.phase == "Running"), None)

    pod = wait_for(running_trial_pod, 120, "trial 0 running")
    core.delete_namespaced_pod(pod.metadata.name, namespace)

    wait_for(lambda: len(trials(custom, namespace, "drain")) >= 4, 180, "four trials")
    operator = operator_pods(core, namespace)
    assert len(operator) == 1, [p.metadata.name for p in operator]
    core.delete_namespaced_pod(operator[0].metadata.name, namespace)

    study = wait_finished(custom, namespace, "drain")
    found = trials(custom, namespace, "drain")
    why = {k: study["status"].get(k) for k in ("reason", "conditions", "trials")}
    assert study["status"]["phase"] == "Succeeded", (why, [t["status"] for t in found])
    counted = [t for t in found if t["status"].get("kind", "counted") == "counted"]
    assert len(counted) == 6
    assert all(t["status"]["state"] == "Complete" for t in counted)
    assert len({tuple(sorted(t["spec"]["params"].items())) for t in counted}) == 6
    lost = found[0]
    assert lost["status"]["kind"] == "retry", lost["status"]
    retried = next(t for t in found if t["status"].get("attempt") == 2)
    assert retried["spec"]["params"] == lost["spec"]["params"]
    assert set(pods_per_trial(core, namespace, "drain").values()) <= {1}
