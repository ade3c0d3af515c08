"""Fixtures for the integration tier: one real cluster per session, a namespace per test.

The cluster is ``tests.cluster.LocalCluster`` (built binaries, loopback ports, a
node agent that runs pods as local processes, a real Prometheus) unless
``RHEOSTAT_TEST_KUBECONFIG`` names an existing one. Without binaries the tier is
skipped with one reason, except under ``CI=true``, where it fails: CI must never go
green by skipping the only tests that talk to Kubernetes.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.cluster import (
    BinariesMissingError,
    ClusterInfo,
    LocalCluster,
    existing_cluster,
)
from tests.cluster.binaries import tool_path
from tests.cluster.harness import session_state_dir
from tests.cluster.polling import wait_for

INTEGRATION_DIR = Path(__file__).parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/integration is an integration test."""
    for item in items:
        if INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)


@dataclass
class ClusterHandle:
    """What the ``cluster`` fixture gives a test."""

    info: ClusterInfo
    local: LocalCluster | None = None

    def restart(self, component: str) -> None:
        """Restart a control-plane component; only our own cluster can (chaos tests)."""
        if self.local is None:
            message = f"cannot restart {component} of a cluster this session did not start"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        self.local.restart(component)

    @property
    def kubeconfig(self) -> Path:
        return self.info.kubeconfig

    @property
    def prometheus_url(self) -> str | None:
        return self.info.prometheus_url

    @property
    def node_names(self) -> list[str]:
        return self.info.node_names

    @property
    def state_dir(self) -> Path:
        return self.info.state_dir

    def api_client(self) -> client.ApiClient:
        """A new admin client; the caller closes it (or uses it as a context manager)."""
        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def token_client(self, token: str) -> client.ApiClient:
        """A client that authenticates with ``token`` only, verifying the same CA."""
        with self.api_client() as admin:
            base = admin.configuration
            conf = client.Configuration()
            conf.host = base.host
            conf.ssl_ca_cert = base.ssl_ca_cert
            conf.verify_ssl = base.verify_ssl
        conf.api_key = {"authorization": f"Bearer {token}"}
        return client.ApiClient(conf)


def _start_or_skip() -> tuple[ClusterInfo, LocalCluster | None]:
    existing = os.environ.get("RHEOSTAT_TEST_KUBECONFIG")
    if existing:
        return existing_cluster(Path(existing)), None
    cluster = LocalCluster(session_state_dir())
    try:
        return cluster.start(), cluster
    except BinariesMissingError as err:
        if IN_CI:
            pytest.fail(f"integration tier cannot run under CI: {err}", pytrace=False)
        pytest.skip(f"integration tier skipped: {err}")


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterHandle]:
    """The session's cluster, with kubectl/helm on PATH and KUBECONFIG set for subprocesses."""
    info, local = _start_or_skip()
    handle = ClusterHandle(info, local)
    env = pytest.MonkeyPatch()
    env.setenv("PATH", tool_path())
    env.setenv("KUBECONFIG", str(info.kubeconfig))
    try:
        if not info.node_names:
            with handle.api_client() as api:
                nodes = client.CoreV1Api(api).list_node().items
                info.node_names = [n.metadata.name for n in nodes]
        yield handle
    finally:
        env.undo()
        if local is not None:
            local.stop()


@pytest.fixture(scope="session")
def admin_api(cluster: ClusterHandle) -> Iterator[client.ApiClient]:
    """One admin ApiClient shared by the session."""
    with cluster.api_client() as api:
        yield api


def _namespace_name(node_name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", node_name.lower()).strip("-")[:40].strip("-")
    return f"t-{slug}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(request: pytest.FixtureRequest, admin_api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace, ready for pods (its ``default`` ServiceAccount exists); deleted after."""
    core = client.CoreV1Api(admin_api)
    name = _namespace_name(request.node.name)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_for(lambda: _has_default_sa(core, name), 60, f"default ServiceAccount in {name}")
    yield name
    try:
        core.delete_namespace(name)
    except ApiException as err:
        if err.status != 404:
            raise


def _has_default_sa(core: client.CoreV1Api, namespace: str) -> bool:
    try:
        core.read_namespaced_service_account("default", namespace)
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    return True


ServiceAccountClient = Callable[[str, str], client.ApiClient]


@pytest.fixture
def service_account_client(
    cluster: ClusterHandle, admin_api: client.ApiClient
) -> Iterator[ServiceAccountClient]:
    """``make(namespace, name)``: a client with only that ServiceAccount's rights.

    The account is created if missing; the token comes from the TokenRequest API,
    exactly as a pod's projected token would.
    """
    core = client.CoreV1Api(admin_api)
    made: list[client.ApiClient] = []

    def make(namespace: str, name: str) -> client.ApiClient:
        try:
            core.create_namespaced_service_account(
                namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
            )
        except ApiException as err:
            if err.status != 409:
                raise
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
        )
        token = core.create_namespaced_service_account_token(name, namespace, request)
        api = cluster.token_client(token.status.token)
        made.append(api)
        return api

    yield make
    for api in made:
        api.close()


# The operator fixture for tests/integration/test_operator.py.
from tests.integration.operator_support import operator  # noqa: E402, F401
