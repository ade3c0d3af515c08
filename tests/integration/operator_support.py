"""Fixtures and helpers for running the real operator against the test cluster."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from rheostat.crd import all_crds
from tests import studies
from tests.cluster.procs import die_with_parent

GROUP, VERSION = "rheostat.dev", "v1alpha1"


def install_crds(api: client.ApiClient) -> None:
    extensions = client.ApiextensionsV1Api(api)
    for crd in all_crds():
        try:
            extensions.create_custom_resource_definition(crd)
        except ApiException as error:
            if error.status != 409:
                raise
            current = extensions.read_custom_resource_definition(crd["metadata"]["name"])
            updated = {
                **crd,
                "metadata": {
                    **crd["metadata"],
                    "resourceVersion": current.metadata.resource_version,
                },
            }
            extensions.replace_custom_resource_definition(crd["metadata"]["name"], updated)
    wait(
        lambda: all(_established(extensions, c["metadata"]["name"]) for c in all_crds()),
        60,
        "CRDs established",
    )


def _established(extensions: client.ApiextensionsV1Api, name: str) -> bool:
    crd = extensions.read_custom_resource_definition(name)
    return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])


def wait(predicate: Callable[[], Any], seconds: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {seconds}s waiting for {what}")


def require_prometheus(url: str | None) -> str:
    """The cluster's Prometheus URL. Our own harness always starts one, so under CI a
    missing server is a failure; on someone else's cluster it only skips the test."""
    if url:
        return url
    message = "no Prometheus for this cluster (set RHEOSTAT_TEST_PROMETHEUS_URL)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OperatorProcess:
    """`rheostat operator` as a subprocess watching one namespace; killable with -9."""

    def __init__(
        self,
        kubeconfig: Path,
        namespace: str,
        log: Path,
        resync: float = 300,
        env: dict[str, str] | None = None,
    ) -> None:
        self.resync = resync
        self.extra_env = dict(env or {})
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.log = log
        self.metrics_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            # Long on purpose: a missed watch event must show as a slow test, not be
            # papered over by a quick resync.
            "RHEOSTAT_RESYNC_INTERVAL": str(self.resync),
            **self.extra_env,
        }
        command = [
            sys.executable,
            "-m",
            "rheostat.cli",
            "operator",
            "-n",
            self.namespace,
            "--metrics-port",
            str(self.metrics_port),
            "--liveness",
            "",
        ]
        with self.log.open("ab") as log:
            # Dies with the test run (or benchmark) that started it, even a killed one.
            self.process = subprocess.Popen(
                command,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - only sets PDEATHSIG
            )

    def kill(self) -> None:
        """SIGKILL: no cleanup, no graceful anything."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def operator(
    cluster: Any, admin_api: client.ApiClient, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    install_crds(admin_api)
    process = OperatorProcess(cluster.kubeconfig, namespace, tmp_path / "operator.log")
    process.start()
    try:
        yield process
    finally:
        # Delete the studies while the operator still runs, so nothing is left stuck.
        custom = client.CustomObjectsApi(admin_api)
        for study in custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, "tuningstudies"
        )["items"]:
            try:
                custom.delete_namespaced_custom_object(
                    GROUP, VERSION, namespace, "tuningstudies", study["metadata"]["name"]
                )
            except ApiException as error:
                if error.status != 404:
                    raise
        process.stop()


def pods_per_trial(api: client.ApiClient, namespace: str, study: str) -> dict[str, int]:
    """How many pods each trial number of a study had: more than one means it ran twice."""
    pods = client.CoreV1Api(api).list_namespaced_pod(
        namespace, label_selector=f"rheostat.dev/study={study},rheostat.dev/role=trial"
    )
    counts: dict[str, int] = {}
    for pod in pods.items:
        trial = pod.metadata.labels["rheostat.dev/trial"]
        counts[trial] = counts.get(trial, 0) + 1
    return counts


def synthetic_study(name: str, **options: Any) -> dict[str, Any]:
    """The shared synthetic study with the cluster tests' defaults."""
    options.setdefault("budget", {"maxTrials": 3, "parallelism": 3})
    options.setdefault("scrape_interval", 0.5)
    options.setdefault("seed", 3)
    return studies.synthetic_study(name, **options)


def create_study(api: client.ApiClient, namespace: str, document: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "tuningstudies", document, field_validation="Strict"
    )


def get_study(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return dict(
        client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "tuningstudies", name
        )
    )


def trials(api: client.ApiClient, namespace: str, study: str) -> list[dict[str, Any]]:
    found = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "tuningtrials", label_selector=f"rheostat.dev/study={study}"
    )
    return sorted(found["items"], key=lambda t: t["spec"]["number"])


def wait_for_phase(
    api: client.ApiClient,
    namespace: str,
    name: str,
    phases: set[str],
    *,
    seconds: float,
    operator: OperatorProcess,
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        study = get_study(api, namespace, name)
        if (study.get("status") or {}).get("phase") in phases:
            return study
        time.sleep(0.5)
    pytest.fail(
        f"study {name} did not reach {phases}: status={study.get('status')}\n{operator.log_tail()}"
    )
