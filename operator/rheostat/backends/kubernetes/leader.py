"""One active replica: leader election on a coordination.k8s.io Lease.

Two operators driving one study would each ask their own sampler for trial N and race
to create it; deterministic names make the loser's create fail, but nothing should
rely on that. So every replica first waits for the Lease (client-go's algorithm, as
the official client's `kubernetes.leaderelection` implements it), and only the holder
starts Kopf. A standby stays alive and healthy, so `replicaCount: 2` keeps a warm spare
and a rolling update never runs two leaders.

Safety does not rest on how long requests take. The leader keeps its own deadline
on its monotonic clock: LEADING_BOUND (12 s) after it *sent* the last renewal that
succeeded, it calls `on_lost` (which exits) and its lock refuses to renew again,
whatever the client library's renew loop is doing. The worst case, a renewal PUT
that takes effect the moment it is sent (C) and is then cut off:

- the standby sees that record no earlier than C, and takes the Lease only after
  seeing no change for LEASE_DURATION (15 s): its write takes effect at >= C + 15;
- the leader sent that PUT at S <= C and stops at S + 12 <= C + 12;
- so it has stopped CLOCK_MARGIN (3 s) before the standby can lead, for the two
  clocks' drift over 15 s and the thread's wake-up, and no request's latency enters.

The client library's loop also gives up on its own (RENEW_DEADLINE), later in the worst
case (a try is a GET plus a PUT, REQUEST_TIMEOUT each, after RETRY_PERIOD's sleep:
up to 2 + 10 + 3 + 3 + 2 = 20 s after the renewal's answer), which is why it is not
what keeps replicas apart; whichever stops first calls `on_lost`, once.

Liveness: a leader whose every request takes just under REQUEST_TIMEOUT still renews
in time: from one PUT sent to the next, 3 (its answer) + 2 (sleep) + 3 (GET) = 8 s,
and its answer 3 s later is within 12 s. A replace carries the resourceVersion it
read, so a renewal that succeeds proves no standby took the Lease meanwhile.

The standby's wait is the client library's, on its wall clock: a step of that clock
is outside this bound. A holder that stops cleanly (SIGTERM, rolling update) clears
the holder identity, and a standby takes over on its next try.
"""

from __future__ import annotations

import http.server
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

LOGGER = logging.getLogger(__name__)
LEASE_DURATION = 15
RENEW_DEADLINE = 10
RETRY_PERIOD = 2
# One lease request (a GET or a PUT) may take this long.
REQUEST_TIMEOUT = 3
# What the leader's clock may lag the standby's over one lease, plus the time to act on
# a lost lease: the leader stops this much before a standby could lead.
CLOCK_MARGIN = 3
# A leader stops acting this long after it sent its last successful renewal.
LEADING_BOUND = LEASE_DURATION - CLOCK_MARGIN
# Exit status of a replica that lost its lease; the kubelet restarts it as a standby.
LOST_LEASE_EXIT = 70


class _GuardedLeaseLock(LeaseLock):  # the client is untyped
    """The client's Lease lock, made safe to run forever in a thread.

    The client's lock sends requests with no timeout, so a hung API server would
    hang the renewal and the leader would never notice that its lease ran out; and it
    catches only `ApiException`, so a refused connection would kill the election
    thread. Here every request is bounded and every failure is a failed try, which
    the algorithm already handles. Once released, the lock refuses to renew, so a
    stopping leader cannot take its own released lease back.
    """

    released = False  # a clean stop: never renew again
    deposed = False  # the leader's own deadline passed: never renew again
    # Monotonic time the last successful create or replace was sent (<= when it took effect).
    renewed_at: float | None = None

    def get(self, name: str, namespace: str) -> tuple[bool, Any]:
        try:
            lease = self.api_instance.read_namespaced_lease(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as error:
            return False, error  # the algorithm reads its body (404: create the lease)
        except Exception as error:  # a timeout, a refused connection: a failed try
            # The algorithm logs the error's `reason`, which a urllib3 timeout lacks.
            return False, ApiException(status=0, reason=f"{type(error).__name__}: {error}")
        self.lease_reference = lease
        return True, self.get_lock_object(lease)  # type: ignore[no-untyped-call]

    def create(self, name: str, namespace: str, election_record: Any) -> bool:
        if self.released or self.deposed:
            return False
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=name),
            spec=self.get_lease_spec(election_record),  # type: ignore[no-untyped-call]
        )
        sent = time.monotonic()
        try:
            self.lease_reference = self.api_instance.create_namespaced_lease(
                namespace, body, _request_timeout=REQUEST_TIMEOUT
            )
        except Exception:
            LOGGER.warning("could not create the lease %s/%s", namespace, name, exc_info=True)
            return False
        self.renewed_at = sent
        return True

    def update(self, name: str, namespace: str, updated_record: Any) -> bool:
        if self.released or self.deposed or self.lease_reference is None:
            return False
        lease = self.lease_reference
        lease.spec = self.get_lease_spec(updated_record, lease.spec)  # type: ignore[no-untyped-call]
        sent = time.monotonic()
        try:
            # A replace carries the resourceVersion that was read: two candidates
            # updating the same version cannot both win.
            self.lease_reference = self.api_instance.replace_namespaced_lease(
                name, namespace, lease, _request_timeout=REQUEST_TIMEOUT
            )
        except Exception:
            LOGGER.warning("could not renew the lease %s/%s", namespace, name, exc_info=True)
            return False
        self.renewed_at = sent
        return True


def _exit_on_lost_lease() -> None:
    LOGGER.critical("lost the leader lease: exiting so that only one replica drives studies")
    logging.shutdown()
    os._exit(LOST_LEASE_EXIT)


@dataclass
class LeaderElector:
    """Waits for the Lease, keeps renewing it in a thread, releases it on a clean stop."""

    namespace: str
    name: str = "rheostat-operator"
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    on_lost: Callable[[], None] = _exit_on_lost_lease
    # The CoordinationV1Api to use; by default the client's, from the loaded config.
    api: Any = None
    thread: threading.Thread | None = None
    _leading: threading.Event = field(default_factory=threading.Event)
    _released: threading.Event = field(default_factory=threading.Event)
    _lock: _GuardedLeaseLock | None = None
    _stop_once: threading.Lock = field(default_factory=threading.Lock)
    _lost: bool = False

    def wait_until_leading(self) -> None:
        """Block until this replica holds the Lease; from then on it renews it."""
        self._lock = _GuardedLeaseLock(self.name, self.namespace, self.identity)  # type: ignore[no-untyped-call]
        if self.api is not None:
            self._lock.api_instance = self.api
        config = electionconfig.Config(  # type: ignore[no-untyped-call]
            self._lock,
            lease_duration=LEASE_DURATION,
            renew_deadline=RENEW_DEADLINE,
            retry_period=RETRY_PERIOD,
            onstarted_leading=self._started_leading,
            onstopped_leading=self._stopped,
        )
        election = leaderelection.LeaderElection(config)  # type: ignore[no-untyped-call]
        self.thread = threading.Thread(
            target=self._run, args=(election,), name="leader", daemon=True
        )
        self.thread.start()
        LOGGER.info("%s: waiting for the lease %s/%s", self.identity, self.namespace, self.name)
        self._leading.wait()
        LOGGER.info("%s: holds the lease %s/%s; starting", self.identity, self.namespace, self.name)

    def _run(self, election: Any) -> None:
        try:
            election.run()
        finally:
            # run() returns only after a failed renewal (onstopped_leading ran); an
            # exception out of it must not leave a leader that no longer renews.
            self._stopped()

    def _started_leading(self) -> None:
        threading.Thread(target=self._keep_deadline, name="leader-deadline", daemon=True).start()
        self._leading.set()

    def _keep_deadline(self) -> None:
        """Stop LEADING_BOUND after the last renewal was sent, on this replica's own clock.

        Independent of the client library's loop and of how long its requests take.
        """
        lock = self._lock
        assert lock is not None
        assert lock.renewed_at is not None  # it leads, so it has written the lease
        while True:
            remaining = lock.renewed_at + LEADING_BOUND - time.monotonic()
            if remaining <= 0:
                break
            if self._released.wait(remaining):
                return  # a clean stop: nothing to fence
        LOGGER.error(
            "%s: no renewal of the lease %s/%s for %d s; stepping down",
            self.identity,
            self.namespace,
            self.name,
            LEADING_BOUND,
        )
        self._stopped()

    def _stopped(self) -> None:
        """The lease is lost (or may be): never renew again, and call on_lost once."""
        lock = self._lock
        if lock is not None:
            if lock.released:
                return  # our own clean stop
            lock.deposed = True
        with self._stop_once:
            if self._lost:
                return
            self._lost = True
        self.on_lost()

    def release(self) -> None:
        """Hand the Lease over now instead of making the standby wait it out."""
        lock = self._lock
        if lock is None or not self._leading.is_set():
            return
        lock.released = True
        self._released.set()
        try:
            api = lock.api_instance
            lease = api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=REQUEST_TIMEOUT
            )
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = None
            api.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=REQUEST_TIMEOUT
            )
            LOGGER.info("%s: released the lease %s/%s", self.identity, self.namespace, self.name)
        except Exception as error:  # the API server away: the lease expires on its own
            LOGGER.warning("could not release the lease (%s); it expires on its own", error)


class StandbyHealth:
    """Answers the liveness probe while this replica waits for the Lease.

    A standby is healthy: it must not be restarted for waiting. Kopf serves the
    endpoint once this replica leads, so this server stops first to free the port.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        path = parts.path or "/"

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                ok = self.path.split("?")[0] == path
                self.send_response(200 if ok else 404)
                self.end_headers()
                if ok:
                    self.wfile.write(b"standby\n")

            def log_message(self, format: str, *args: Any) -> None:
                """Probes every few seconds are not worth a log line."""

        self._server = http.server.ThreadingHTTPServer(
            (parts.hostname or "0.0.0.0", parts.port or 80),
            Handler,
        )
        threading.Thread(
            target=self._server.serve_forever, name="standby-health", daemon=True
        ).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
