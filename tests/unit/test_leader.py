"""Leader election without an API server: the real LeaderElector over an in-memory Lease
API, and the timing rules (test_ha.py runs the real thing on a control plane)."""

from __future__ import annotations

import copy
import http
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from rheostat.backends.kubernetes.leader import (
    CLOCK_MARGIN,
    LEADING_BOUND,
    LEASE_DURATION,
    RENEW_DEADLINE,
    REQUEST_TIMEOUT,
    RETRY_PERIOD,
    LeaderElector,
    StandbyHealth,
)
from rheostat.backends.kubernetes.main import elector_from_env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_standby_answers_its_liveness_probe_and_frees_the_port() -> None:
    port = _free_port()
    health = StandbyHealth(f"http://127.0.0.1:{port}/healthz")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            assert response.status == 200
        with pytest.raises(urllib.error.HTTPError) as other:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/elsewhere", timeout=5)
        assert other.value.code == 404
        other.value.close()
    finally:
        health.stop()
    # Kopf binds the same port once this replica leads.
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def test_a_leader_that_cannot_renew_is_gone_before_a_standby_may_lead() -> None:
    # Safety: a standby leads no earlier than LEASE_DURATION after the last renewal took
    # effect; the leader stops LEADING_BOUND after it sent that renewal, which is earlier.
    assert LEADING_BOUND + CLOCK_MARGIN <= LEASE_DURATION
    assert CLOCK_MARGIN >= 1
    # Liveness: a leader whose requests all take just under the timeout still renews in
    # time: answer, sleep, the next GET, the next PUT's answer.
    assert REQUEST_TIMEOUT + RETRY_PERIOD + 2 * REQUEST_TIMEOUT < LEADING_BOUND
    assert RETRY_PERIOD * 1.2 < RENEW_DEADLINE < LEASE_DURATION  # the client library's rules


def test_leader_election_is_off_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RHEOSTAT_LEADER_ELECTION", raising=False)
    assert elector_from_env(["ns"]) is None


def test_leader_election_as_the_chart_configures_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RHEOSTAT_LEADER_ELECTION", "true")
    monkeypatch.setenv("POD_NAME", "rheostat-abc")
    monkeypatch.setenv("POD_NAMESPACE", "tuning")
    monkeypatch.setenv("RHEOSTAT_LEASE_NAME", "release-rheostat")
    monkeypatch.delenv("RHEOSTAT_LEASE_NAMESPACE", raising=False)
    elector = elector_from_env([])
    assert elector is not None
    assert (elector.namespace, elector.name, elector.identity) == (
        "tuning",
        "release-rheostat",
        "rheostat-abc",
    )


# ----- the real LeaderElector over a slow in-memory Lease API ----------------------------


class LeaseServer:
    """One Lease, kept as the API server keeps it: optimistic concurrency on replace."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lease: client.V1Lease | None = None
        self.version = 0
        # (monotonic time of the commit, holder): when each write took effect.
        self.commits: list[tuple[float, str | None]] = []

    def _commit(self, lease: client.V1Lease) -> client.V1Lease:
        self.version += 1
        lease.metadata.resource_version = str(self.version)
        self.lease = copy.deepcopy(lease)
        self.commits.append((time.monotonic(), lease.spec.holder_identity))
        return copy.deepcopy(lease)

    def first_commit_by(self, holder: str, after: float = 0.0) -> float | None:
        with self.lock:
            return next((t for t, h in self.commits if h == holder and t > after), None)


def _api_error(status: int) -> ApiException:
    error = ApiException(status=status, reason=http.HTTPStatus(status).phrase)
    error.body = json.dumps({"code": status})
    return error


class LeaseClient:
    """What one replica's CoordinationV1Api does: each write takes effect at once,
    and each answer comes back `delay` seconds later. A partitioned client's requests
    never arrive, and fail after the same delay (a timeout)."""

    def __init__(self, server: LeaseServer, delay: float) -> None:
        self.server = server
        self.delay = delay
        self.partitioned = False

    def _call(self, request: Callable[[], Any]) -> Any:
        if self.partitioned:
            time.sleep(self.delay)
            raise TimeoutError("the API server is unreachable")
        try:
            with self.server.lock:
                return request()
        finally:
            time.sleep(self.delay)

    def read_namespaced_lease(self, name: str, namespace: str, **_: Any) -> client.V1Lease:
        def read() -> client.V1Lease:
            if self.server.lease is None:
                raise _api_error(404)
            return copy.deepcopy(self.server.lease)

        return self._call(read)

    def create_namespaced_lease(
        self, namespace: str, body: client.V1Lease, **_: Any
    ) -> client.V1Lease:
        def create() -> client.V1Lease:
            if self.server.lease is not None:
                raise _api_error(409)
            return self.server._commit(copy.deepcopy(body))

        return self._call(create)

    def replace_namespaced_lease(
        self, name: str, namespace: str, body: client.V1Lease, **_: Any
    ) -> client.V1Lease:
        def replace() -> client.V1Lease:
            current = self.server.lease
            if (
                current is None
                or body.metadata.resource_version != current.metadata.resource_version
            ):
                raise _api_error(409)
            return self.server._commit(copy.deepcopy(body))

        return self._call(replace)


def _wait_for(check: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow  # real time: the lease must run out, as on a cluster (about 35 s)
def test_a_deposed_leader_stops_before_a_standby_can_lead_and_only_once() -> None:
    """Issue 21.8: requests of 2.8 s (under the 3 s timeout), then a partition.

    The leader is cut off right after a renewal took effect; the standby, whose
    requests are fast, takes the Lease as soon as the rules allow. The leader's
    on_lost must have run before that, and must run once in all.
    """
    server = LeaseServer()
    slow, fast = LeaseClient(server, delay=2.8), LeaseClient(server, delay=0.01)
    lost: dict[str, list[float]] = {"old": [], "new": []}
    old = LeaderElector("ns", identity="old", on_lost=lambda: lost["old"].append(time.monotonic()))
    new = LeaderElector("ns", identity="new", on_lost=lambda: lost["new"].append(time.monotonic()))
    old.api, new.api = slow, fast

    threading.Thread(target=old.wait_until_leading, daemon=True).start()
    leading_since = _wait_for(lambda: server.first_commit_by("old"), 30, "the first leader")
    threading.Thread(target=new.wait_until_leading, daemon=True).start()
    renewed = _wait_for(lambda: server.first_commit_by("old", leading_since), 30, "a renewal")
    slow.partitioned = True  # its renewal took effect; its answer is still on its way

    took_over = _wait_for(lambda: server.first_commit_by("new"), 40, "the standby to lead")
    assert lost["old"], "the standby leads while the old leader still acts"
    assert lost["old"][0] < took_over
    assert lost["old"][0] - renewed <= LEASE_DURATION - CLOCK_MARGIN + 0.5

    assert old.thread is not None
    old.thread.join(timeout=40)  # the client's own renew loop gives up too, later
    assert not old.thread.is_alive()
    assert len(lost["old"]) == 1
    assert lost["new"] == []
    new.release()
