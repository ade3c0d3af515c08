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
