"""`rheostat operator`: run the Kopf operator against the current kubeconfig."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import kopf
from kubernetes import config
from prometheus_client import start_http_server

from rheostat.backends.kubernetes import handlers
from rheostat.backends.kubernetes.leader import LeaderElector, StandbyHealth

TRUE = ("1", "true", "yes")


def run_operator(
    *,
    namespaces: list[str],
    metrics_port: int = 8080,
    liveness: str | None = "http://0.0.0.0:8081/healthz",
    verbose: bool = False,
) -> int:
    """Serve metrics, then run every handler until interrupted."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        # Kopf logs "Handler ... succeeded" for every watch event (three lines per pod
        # change): noise at scale, and CPU. Warnings and errors still show.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]  # untyped in the client
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    reconciler = handlers.reconciler()
    if metrics_port:
        start_http_server(metrics_port, registry=reconciler.metrics.registry)
    elector = elector_from_env(namespaces)
    if elector is not None:
        standby = StandbyHealth(liveness) if liveness else None
        elector.wait_until_leading()
        if standby is not None:
            standby.stop()
    reconciler.metrics.leader.set(1)
    try:
        asyncio.run(
            kopf.operator(
                standalone=True,
                clusterwide=not namespaces,
                namespaces=namespaces,
                liveness_endpoint=liveness,
            )
        )
    finally:
        reconciler.metrics.leader.set(0)
        reconciler.asks.shutdown()  # the GP workers go with the operator
        if elector is not None:
            elector.release()
    return 0


def elector_from_env(namespaces: list[str]) -> LeaderElector | None:
    """Leader election as the chart configures it (the pod's name and namespace come
    from the Downward API); off unless RHEOSTAT_LEADER_ELECTION is set."""
    if os.environ.get("RHEOSTAT_LEADER_ELECTION", "").lower() not in TRUE:
        return None
    # The client logs every standby try at INFO; our own lines say what matters.
    logging.getLogger("leaderelection").setLevel(logging.WARNING)
    namespace = (
        os.environ.get("RHEOSTAT_LEASE_NAMESPACE")
        or os.environ.get("POD_NAMESPACE")
        or (namespaces[0] if namespaces else "default")
    )
    identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    name = os.environ.get("RHEOSTAT_LEASE_NAME") or "rheostat-operator"
    return LeaderElector(namespace=namespace, name=name, identity=identity)
