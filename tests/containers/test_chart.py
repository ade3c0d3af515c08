"""`helm install` of the chart with the operator image, and a study run in containers.

What users do: install the chart into a namespace that enforces the ``restricted``
Pod Security Standard, wait for the Deployment, ``kubectl apply`` a study whose
trials run the trainer image. Here the operator is the image built from our
Dockerfile (read-only root filesystem, non-root), the trials are real containers,
their final values come from the kubelet's termination messages and their logs
from the kubelet.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.cluster.polling import wait_for
from tests.containers.conftest import CURL_IMAGE, OPERATOR_IMAGE, TRAINER_IMAGE, RealCluster
from tests.studies import synthetic_study

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "rheostat"
GROUP, VERSION = "rheostat.dev", "v1alpha1"
RELEASE = "rheo"
RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _run(*command: str, timeout: float = 240) -> str:
    done = subprocess.run(
        list(command), capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def release(real_cluster: RealCluster, namespace: str) -> Iterator[tuple[str, float]]:
    """The chart installed with the operator image; (namespace, seconds `--wait` took)."""
    repository, tag = OPERATOR_IMAGE.rsplit(":", 1)
    curl_repository = CURL_IMAGE.rsplit(":", 1)[0]
    started = time.monotonic()
    _run(
        "helm", "install", RELEASE, str(CHART), "--namespace", namespace,
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
        "--set", "image.pullPolicy=Never", "--set", f"watchNamespaces={{{namespace}}}",
        "--set", f"tests.image.repository={curl_repository}", "--set", f"tests.image.tag={tag}",
        "--set", "tests.image.pullPolicy=Never",
        "--wait", "--timeout", "180s",
    )  # fmt: skip
    took = time.monotonic() - started
    yield namespace, took
    # Studies go while the operator still runs: its finalizer would keep them.
    _run("kubectl", "delete", "tuningstudies", "--all", "--namespace", namespace, "--wait")
    _run("helm", "uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "120s")


def _study(name: str) -> dict[str, Any]:
    """The shared synthetic study with the LR range test, on the trainer image.

    ``bayesian`` with two random start-up trials, so the operator's GP sampler (torch,
    in the operator image) proposes the last two.
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


def test_helm_install_helm_test_then_a_bayesian_study_succeeds(
    admin_api: client.ApiClient, release: tuple[str, float]
) -> None:
    namespace, install_seconds = release
    apps = client.AppsV1Api(admin_api)
    deployment = apps.list_namespaced_deployment(namespace).items[0]
    available = [c.status for c in deployment.status.conditions if c.type == "Available"]
    assert available == ["True"], deployment.status
    print(f"helm install --wait took {install_seconds:.1f}s")
    # The chart's own test: its metrics Service, by DNS name, from a curl pod.
    _run("helm", "test", RELEASE, "--namespace", namespace, "--timeout", "120s")

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
    # A trial's log through the kubelet (its pod stays until the study is deleted).
    core = client.CoreV1Api(admin_api)
    pods = core.list_namespaced_pod(namespace, label_selector="rheostat.dev/role=trial").items
    assert pods, "no trial pods left to read logs from"
    assert all(p.spec.node_name for p in pods)
    logs = _run("kubectl", "logs", "--namespace", namespace, pods[0].metadata.name)
    assert logs.strip()


def test_a_deleted_trial_pod_and_a_deleted_operator_pod_lose_nothing(
    admin_api: client.ApiClient, release: tuple[str, float]
) -> None:
    """Real SIGTERMs with grace periods: a node drain of one trial, a rollout of the operator.

    The trial is retried with the same parameters and not counted as failed; the
    Deployment's new operator pod rebuilds the study and finishes exactly the budget.
    """
    namespace, _ = release
    document = synthetic_study(
        "drain",
        algorithm="tpe",
        args=["--steps", "8", "--step-seconds", "0.5"],
        budget={"maxTrials": 6, "parallelism": 2, "maxFailedTrials": 0},
        seed=5,
        scrape_interval=0.5,
    )
    container = document["spec"]["trialTemplate"]["spec"]["containers"][0]
    container["image"] = TRAINER_IMAGE
    container["imagePullPolicy"] = "Never"
    container["securityContext"] = RESTRICTED
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

    def trials() -> list[dict[str, Any]]:
        found = custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, "tuningtrials", label_selector="rheostat.dev/study=drain"
        )["items"]
        return sorted(found, key=lambda t: t["spec"]["number"])

    wait_for(lambda: len(trials()) >= 4, 180, "four trials")
    operator = [
        p
        for p in core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/name=rheostat"
        ).items
        if any(o.kind == "ReplicaSet" for o in p.metadata.owner_references or [])
    ]
    assert len(operator) == 1, [p.metadata.name for p in operator]
    core.delete_namespaced_pod(operator[0].metadata.name, namespace)

    def finished() -> dict[str, Any] | None:
        study = custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "tuningstudies", "drain"
        )
        return (
            study if (study.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None
        )

    study = wait_for(finished, 400, "study drain to finish")
    found = trials()
    assert study["status"]["phase"] == "Succeeded", [t["status"] for t in found]
    counted = [t for t in found if t["status"].get("kind", "counted") == "counted"]
    assert len(counted) == 6
    assert all(t["status"]["state"] == "Complete" for t in counted)
    assert len({tuple(sorted(t["spec"]["params"].items())) for t in counted}) == 6
    lost = found[0]
    assert lost["status"]["kind"] == "retry", lost["status"]
    retried = next(t for t in found if t["status"].get("attempt") == 2)
    assert retried["spec"]["params"] == lost["spec"]["params"]
    per_trial: dict[str, int] = {}
    for trial_pod in core.list_namespaced_pod(
        namespace, label_selector="rheostat.dev/study=drain,rheostat.dev/role=trial"
    ).items:
        number = trial_pod.metadata.labels["rheostat.dev/trial"]
        per_trial[number] = per_trial.get(number, 0) + 1
    assert set(per_trial.values()) <= {1}, per_trial
