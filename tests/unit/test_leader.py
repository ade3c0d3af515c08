"""Leader election's pieces that need no API server (test_ha.py runs the real thing)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from rheostat.backends.kubernetes.leader import (
    LEASE_DURATION,
    RENEW_DEADLINE,
    REQUEST_TIMEOUT,
    RETRY_PERIOD,
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
    # The last renewal try starts before the deadline and ends within a request timeout.
    assert RENEW_DEADLINE + REQUEST_TIMEOUT < LEASE_DURATION
    assert RETRY_PERIOD * 1.2 < RENEW_DEADLINE  # the client library's own rule


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
