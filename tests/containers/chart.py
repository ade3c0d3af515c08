"""What the chart tests share: `helm` with the images built here, studies on the trainer image.

The values are what a user with no registry passes (``pullPolicy: Never``, the local
image names) plus the annotations a Prometheus that discovers Services by annotation
needs on the chart's metrics Service (the harness's Prometheus is such a one).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from tests.cluster.polling import wait_for
from tests.containers.conftest import CURL_IMAGE, GP_WORKER_IMAGE, OPERATOR_IMAGE, TRAINER_IMAGE
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
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"


def run(*command: str, timeout: float = 240) -> str:
    """Run a command; fail the test with its output unless it exits 0."""
    done = subprocess.run(
        list(command), capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def values(namespace: str, **overrides: Any) -> dict[str, Any]:
    """The chart values for this cluster, with ``overrides`` on top (top-level keys)."""
    repository, tag = OPERATOR_IMAGE.rsplit(":", 1)
    curl_repository, curl_tag = CURL_IMAGE.rsplit(":", 1)
    base: dict[str, Any] = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "watchNamespaces": [namespace],
        "metrics": {
            "service": {
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/path": "/metrics",
                }
            }
        },
        "tests": {"image": {"repository": curl_repository, "tag": curl_tag, "pullPolicy": "Never"}},
    }
    return {**base, **overrides}


def gp_worker_values() -> dict[str, Any]:
    """``gpWorker`` enabled with the GP worker image built here (a ``values`` override)."""
    repository, tag = GP_WORKER_IMAGE.rsplit(":", 1)
    image = {"repository": repository, "tag": tag, "pullPolicy": "Never"}
    return {"enabled": True, "image": image}


def helm_apply(
    verb: str, namespace: str, folder: Path, timeout: str = "180s", **overrides: Any
) -> float:
    """``helm install|upgrade --wait`` with :func:`values`; returns the seconds it took."""
    path = folder / f"values-{verb}.yaml"
    path.write_text(yaml.safe_dump(values(namespace, **overrides)))
    started = time.monotonic()
    run(
        "helm", verb, RELEASE, str(CHART), "--namespace", namespace, "--values", str(path),
        "--wait", "--timeout", timeout,
    )  # fmt: skip
    return time.monotonic() - started


def operator_pods(core: client.CoreV1Api, namespace: str) -> list[client.V1Pod]:
    """The Deployment's pods (not the `helm test` pod, which has no ReplicaSet owner)."""
    return [
        p
        for p in core.list_namespaced_pod(namespace, label_selector=INSTANCE).items
        if any(o.kind == "ReplicaSet" for o in p.metadata.owner_references or [])
    ]


def trial_study(name: str, *, max_trials: int, seed: int) -> dict[str, Any]:
    """A TPE study whose trials take about 4 s each, on the trainer image."""
    document = synthetic_study(
        name,
        algorithm="tpe",
        args=["--steps", "8", "--step-seconds", "0.5"],
        budget={"maxTrials": max_trials, "parallelism": 2, "maxFailedTrials": 0},
        seed=seed,
        scrape_interval=0.5,
    )
    container = document["spec"]["trialTemplate"]["spec"]["containers"][0]
    container["image"] = TRAINER_IMAGE
    container["imagePullPolicy"] = "Never"
    container["securityContext"] = RESTRICTED
    return document


def trials(custom: client.CustomObjectsApi, namespace: str, study: str) -> list[dict[str, Any]]:
    """The study's TuningTrials by number."""
    found = custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, "tuningtrials", label_selector=f"rheostat.dev/study={study}"
    )["items"]
    return sorted(found, key=lambda t: t["spec"]["number"])


def wait_finished(
    custom: client.CustomObjectsApi, namespace: str, name: str, timeout: float = 400
) -> dict[str, Any]:
    """The study once its phase is Succeeded or Failed."""

    def finished() -> dict[str, Any] | None:
        study = custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "tuningstudies", name
        )
        phase = (study.get("status") or {}).get("phase")
        return study if phase in ("Succeeded", "Failed") else None

    return wait_for(finished, timeout, f"study {name} to finish")


def pods_per_trial(core: client.CoreV1Api, namespace: str, study: str) -> dict[str, int]:
    """How many pods ran for each trial number: more than one means a parameter set ran
    twice (a retry creates a new TuningTrial with a new number)."""
    counts: dict[str, int] = {}
    for pod in core.list_namespaced_pod(
        namespace, label_selector=f"rheostat.dev/study={study},rheostat.dev/role=trial"
    ).items:
        number = pod.metadata.labels["rheostat.dev/trial"]
        counts[number] = counts.get(number, 0) + 1
    return counts


def prometheus(base: str, path: str, **params: str) -> dict[str, Any]:
    """A Prometheus HTTP API call; fails the test on an error status."""
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            body: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as error:  # 400 carries Prometheus' own error message
        body = json.load(error)
    assert body["status"] == "success", f"{params}: {body}"
    return body
