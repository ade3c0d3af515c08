"""Two operator replicas with leader election, as the chart runs them with replicaCount 2.

Only the Lease holder drives studies; the standby waits, healthy. Killed (-9), the
leader's lease expires and the standby takes over; stopped cleanly, the leader hands
the lease over at once. Either way the study keeps every exactly-once guarantee.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from rheostat.backends.kubernetes.leader import LOST_LEASE_EXIT
from tests.integration.conftest import ClusterHandle
from tests.integration.operator_support import (
    OperatorProcess,
    create_study,
    install_crds,
    pods_per_trial,
    synthetic_study,
    trials,
    wait,
    wait_for_phase,
)

LEASE = "rheostat-operator"


def _holder(api: client.ApiClient, namespace: str) -> str | None:
    try:
        lease = client.CoordinationV1Api(api).read_namespaced_lease(LEASE, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return lease.spec.holder_identity if lease.spec else None


def _leader_gauge(replica: OperatorProcess) -> float | None:
    """The replica's `rheostat_operator_leader`; None while it is not serving yet."""
    url = f"http://127.0.0.1:{replica.metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("rheostat_operator_leader "):
            return float(line.split()[1])
    raise AssertionError("no rheostat_operator_leader metric")


@pytest.fixture
def replicas(
    cluster: ClusterHandle, admin_api: client.ApiClient, namespace: str, tmp_path: Path
) -> Iterator[dict[str, OperatorProcess]]:
    install_crds(admin_api)
    started: dict[str, OperatorProcess] = {}
    for name in ("replica-a", "replica-b"):
        env = {
            "RHEOSTAT_LEADER_ELECTION": "true",
            "POD_NAME": name,
            "POD_NAMESPACE": namespace,
        }
        replica = OperatorProcess(cluster.kubeconfig, namespace, tmp_path / f"{name}.log", env=env)
        replica.start()
        started[name] = replica
        if name == "replica-a":  # a leads: b starts once the lease is taken
            wait(lambda: _holder(admin_api, namespace) == "replica-a", 60, "a holds the lease")
    try:
        yield started
    finally:
        custom = client.CustomObjectsApi(admin_api)
        for study in custom.list_namespaced_custom_object(
            "rheostat.dev", "v1alpha1", namespace, "tuningstudies"
        )["items"]:
            custom.delete_namespaced_custom_object(
                "rheostat.dev", "v1alpha1", namespace, "tuningstudies", study["metadata"]["name"]
            )
        for replica in started.values():
            replica.stop()


def _assert_exactly_once(api: client.ApiClient, namespace: str, study: str, budget: int) -> None:
    found = trials(api, namespace, study)
    counted = [t for t in found if t["status"].get("kind", "counted") == "counted"]
    assert len(counted) == budget, [t["status"] for t in found]
    params = {tuple(sorted(t["spec"]["params"].items())) for t in counted}
    assert len(params) == budget, "a parameter set was counted twice"
    assert set(pods_per_trial(api, namespace, study).values()) <= {1}


def _study(name: str) -> dict[str, Any]:
    return synthetic_study(
        name,
        args=["--steps", "3", "--step-seconds", "0.5"],
        budget={"maxTrials": 10, "parallelism": 2, "maxFailedTrials": 0},
    )


def test_the_standby_takes_over_when_the_leader_is_killed(
    admin_api: client.ApiClient, namespace: str, replicas: dict[str, OperatorProcess]
) -> None:
    leader, standby = replicas["replica-a"], replicas["replica-b"]
    wait(lambda: _leader_gauge(standby) == 0.0, 60, "b serving metrics as a standby")
    create_study(admin_api, namespace, _study("ha"))
    wait(lambda: len(trials(admin_api, namespace, "ha")) >= 3, 90, "three trials")
    assert "holds the lease" not in standby.log.read_text()  # b never drove anything

    killed = time.monotonic()
    leader.kill()
    wait(lambda: _holder(admin_api, namespace) == "replica-b", 90, "b takes the lease")
    print(f"takeover after kill -9: {time.monotonic() - killed:.1f}s")
    study = wait_for_phase(
        admin_api, namespace, "ha", {"Succeeded", "Failed"}, seconds=240, operator=standby
    )
    assert study["status"]["phase"] == "Succeeded", study["status"]
    _assert_exactly_once(admin_api, namespace, "ha", 10)
    assert _leader_gauge(standby) == 1.0


def test_a_leader_stopped_cleanly_hands_over_at_once(
    admin_api: client.ApiClient, namespace: str, replicas: dict[str, OperatorProcess]
) -> None:
    leader, standby = replicas["replica-a"], replicas["replica-b"]
    create_study(admin_api, namespace, _study("handover"))
    wait(lambda: len(trials(admin_api, namespace, "handover")) >= 3, 90, "three trials")

    stopped = time.monotonic()
    leader.stop()  # SIGTERM, as a rolling update sends
    assert leader.process is not None
    assert leader.process.returncode == 0, leader.log_tail()
    assert "released the lease" in leader.log.read_text()
    # The lease is released, so b need not wait out its 15 s duration.
    wait(lambda: _holder(admin_api, namespace) == "replica-b", 60, "b takes the lease")
    print(f"handover after SIGTERM: {time.monotonic() - stopped:.1f}s")
    study = wait_for_phase(
        admin_api, namespace, "handover", {"Succeeded", "Failed"}, seconds=240, operator=standby
    )
    assert study["status"]["phase"] == "Succeeded", study["status"]
    _assert_exactly_once(admin_api, namespace, "handover", 10)


def test_a_leader_cut_off_from_the_api_server_steps_down(
    cluster: ClusterHandle,
    admin_api: client.ApiClient,
    namespace: str,
    replicas: dict[str, OperatorProcess],
) -> None:
    """Fencing: a leader that cannot renew for the renew deadline exits by itself, so
    that it is gone before any standby may take the lease."""
    leader, standby = replicas["replica-a"], replicas["replica-b"]
    create_study(admin_api, namespace, _study("fenced"))
    wait(lambda: len(trials(admin_api, namespace, "fenced")) >= 3, 90, "three trials")
    apiserver = dict(cluster.info.groups)["kube-apiserver"]
    assert leader.process is not None
    os.killpg(apiserver, signal.SIGSTOP)
    try:
        leader.process.wait(timeout=60)
    finally:
        os.killpg(apiserver, signal.SIGCONT)
    assert leader.process.returncode == LOST_LEASE_EXIT, leader.log_tail()
    wait(lambda: _holder(admin_api, namespace) == "replica-b", 90, "b takes the lease")
    study = wait_for_phase(
        admin_api, namespace, "fenced", {"Succeeded", "Failed"}, seconds=240, operator=standby
    )
    assert study["status"]["phase"] == "Succeeded", study["status"]
    _assert_exactly_once(admin_api, namespace, "fenced", 10)
