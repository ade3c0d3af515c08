"""Fixtures for the container tier: a test cluster with one REAL node.

The node is a kubelet with containerd, runc and a CNI bridge
(``tests.cluster.real_node``), running the images ``make images`` built from the
project's Dockerfiles. Whatever the process node agent fakes (images, termination
message files, logs, Services, in-cluster API access) is real here.

Without what the node needs (root, the Debian packages, kubelet, the images) the tier
is skipped with one reason, except under ``CI=true``, where it fails. The cluster has
no process nodes, so every pod lands on the real node.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.cluster import BinariesMissingError, ClusterInfo, LocalCluster
from tests.cluster.binaries import tool_path
from tests.cluster.harness import STATE_ROOT
from tests.cluster.polling import wait_for
from tests.cluster.real_node import (
    NODE_LABEL,
    NODE_NAME,
    RealNodeUnavailableError,
    check_available,
    cleanup_host,
)

CONTAINERS_DIR = Path(__file__).parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TRAINER_IMAGE = "localhost/rheostat/trainer:dev"
OPERATOR_IMAGE = "localhost/rheostat/operator:dev"
GP_WORKER_IMAGE = "localhost/rheostat/gp-worker:dev"
CURL_IMAGE = "localhost/rheostat/curl:dev"
GPUS = 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/containers is a container test."""
    for item in items:
        if CONTAINERS_DIR in item.path.parents:
            item.add_marker(pytest.mark.containers)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "containers: runs on the test cluster's real node")


@dataclass
class RealCluster:
    """What the ``real_cluster`` fixture gives a test."""

    info: ClusterInfo

    @property
    def kubeconfig(self) -> Path:
        return self.info.kubeconfig

    def api_client(self) -> client.ApiClient:
        """A new admin client; the caller closes it (or uses it as a context manager)."""
        return config.new_client_from_config(config_file=str(self.kubeconfig))


def _state_dir() -> Path:
    """``.cluster/containers-<pid>``, after undoing what dead sessions left on the host."""
    STATE_ROOT.mkdir(exist_ok=True)
    for old in STATE_ROOT.glob("containers-*"):
        pid = old.name.removeprefix("containers-")
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            cleanup_host(old)
            shutil.rmtree(old, ignore_errors=True)
    folder = STATE_ROOT / f"containers-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def _unavailable(reason: str) -> None:
    message = f"real node unavailable: {reason}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def real_cluster() -> Iterator[RealCluster]:
    """One cluster per session: the control plane, Prometheus and the real node."""
    try:
        check_available()
    except RealNodeUnavailableError as err:
        _unavailable(str(err))
    cluster = LocalCluster(_state_dir(), nodes=0, gpus=GPUS, real_node=True)
    try:
        info = cluster.start(timeout=180.0)
    except BinariesMissingError as err:
        _unavailable(str(err))
        raise
    saved = {k: os.environ.get(k) for k in ("PATH", "KUBECONFIG")}
    os.environ["PATH"] = tool_path()
    os.environ["KUBECONFIG"] = str(info.kubeconfig)
    try:
        yield RealCluster(info)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        cluster.stop()


@pytest.fixture(scope="session")
def admin_api(real_cluster: RealCluster) -> Iterator[client.ApiClient]:
    with real_cluster.api_client() as api:
        yield api


@pytest.fixture
def namespace(admin_api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace that enforces the ``restricted`` Pod Security Standard."""
    core = client.CoreV1Api(admin_api)
    name = f"ct-{secrets.token_hex(3)}"
    core.create_namespace(
        {
            "metadata": {
                "name": name,
                "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
            }
        }
    )

    def has_default_sa() -> bool:
        try:
            core.read_namespaced_service_account("default", name)
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        return True

    wait_for(has_default_sa, 30, f"default ServiceAccount in {name}")
    yield name
    core.delete_namespace(name)


def restricted_container(name: str, image: str, command: list[str]) -> dict[str, object]:
    """A container that passes the ``restricted`` Pod Security Standard."""
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "Never",
        "command": command,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def on_real_node(spec: dict[str, object]) -> dict[str, object]:
    """Pin a pod spec to the real node by its label (what a user's nodeSelector does)."""
    return {**spec, "nodeSelector": {NODE_LABEL[0]: NODE_LABEL[1]}}


@pytest.fixture
def wait_pod_done(
    admin_api: client.ApiClient,
) -> Callable[[str, str, float], client.V1Pod]:
    """Wait until a pod is Succeeded or Failed and return it."""
    core = client.CoreV1Api(admin_api)

    def wait(namespace: str, name: str, timeout: float) -> client.V1Pod:
        def done() -> bool:
            pod = core.read_namespaced_pod(name, namespace)
            return pod.status.phase in ("Succeeded", "Failed")

        wait_for(done, timeout, f"pod {namespace}/{name} to finish")
        return core.read_namespaced_pod(name, namespace)

    return wait


__all__ = [
    "CURL_IMAGE",
    "GPUS",
    "GP_WORKER_IMAGE",
    "NODE_NAME",
    "OPERATOR_IMAGE",
    "TRAINER_IMAGE",
]
