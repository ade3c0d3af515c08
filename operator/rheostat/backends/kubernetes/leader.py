"""One active replica: leader election on a coordination.k8s.io Lease.

Two operators driving one study would each ask their own sampler for trial N and race
to create it; deterministic names make the loser's create fail, but nothing should
rely on that. So every replica first waits for the Lease (client-go's algorithm, as
the official client's `kubernetes.leaderelection` implements it), and only the holder
starts Kopf. A standby stays alive and healthy, so `replicaCount: 2` keeps a warm spare
and a rolling update never runs two leaders.

Safety comes from the timings: the holder renews every `RETRY_PERIOD`; if it cannot
renew for `RENEW_DEADLINE` it exits at once (no graceful anything: a lost lease means
another replica may already lead). A standby takes the lease only after it has seen
no renewal for `LEASE_DURATION`, which is longer than the deadline, so the old holder
has stopped before the new one starts. A holder that stops cleanly (SIGTERM, rolling
update) clears the holder identity, and a standby takes over on its next try.
"""

from __future__ import annotations

import http.server
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from kubernetes import client
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

LOGGER = logging.getLogger(__name__)
LEASE_DURATION = 15
RENEW_DEADLINE = 10
RETRY_PERIOD = 2
# One lease request may take this long: the last try before the renew deadline must
# end before a standby's LEASE_DURATION runs out (10 + 3 < 15).
REQUEST_TIMEOUT = 3
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

    released = False

    def get(self, name: str, namespace: str) -> tuple[bool, Any]:
        try:
            lease = self.api_instance.read_namespaced_lease(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except Exception as error:
            return False, error
        self.lease_reference = lease
        return True, self.get_lock_object(lease)  # type: ignore[no-untyped-call]

    def create(self, name: str, namespace: str, election_record: Any) -> bool:
        if self.released:
            return False
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=name),
            spec=self.get_lease_spec(election_record),  # type: ignore[no-untyped-call]
        )
        try:
            self.lease_reference = self.api_instance.create_namespaced_lease(
                namespace, body, _request_timeout=REQUEST_TIMEOUT
            )
        except Exception:
            LOGGER.warning("could not create the lease %s/%s", namespace, name, exc_info=True)
            return False
        return True

    def update(self, name: str, namespace: str, updated_record: Any) -> bool:
        if self.released or self.lease_reference is None:
            return False
        lease = self.lease_reference
        lease.spec = self.get_lease_spec(updated_record, lease.spec)  # type: ignore[no-untyped-call]
        try:
            # A replace carries the resourceVersion that was read: two candidates
            # updating the same version cannot both win.
            self.lease_reference = self.api_instance.replace_namespaced_lease(
                name, namespace, lease, _request_timeout=REQUEST_TIMEOUT
            )
        except Exception:
            LOGGER.warning("could not renew the lease %s/%s", namespace, name, exc_info=True)
            return False
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
    _leading: threading.Event = field(default_factory=threading.Event)
    _lock: _GuardedLeaseLock | None = None

    def wait_until_leading(self) -> None:
        """Block until this replica holds the Lease; from then on it renews it."""
        self._lock = _GuardedLeaseLock(self.name, self.namespace, self.identity)  # type: ignore[no-untyped-call]
        config = electionconfig.Config(  # type: ignore[no-untyped-call]
            self._lock,
            lease_duration=LEASE_DURATION,
            renew_deadline=RENEW_DEADLINE,
            retry_period=RETRY_PERIOD,
            onstarted_leading=self._leading.set,
            onstopped_leading=self._stopped,
        )
        election = leaderelection.LeaderElection(config)  # type: ignore[no-untyped-call]
        threading.Thread(target=self._run, args=(election,), name="leader", daemon=True).start()
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

    def _stopped(self) -> None:
        if self._lock is not None and self._lock.released:
            return  # our own clean stop
        self.on_lost()

    def release(self) -> None:
        """Hand the Lease over now instead of making the standby wait it out."""
        lock = self._lock
        if lock is None or not self._leading.is_set():
            return
        lock.released = True
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
