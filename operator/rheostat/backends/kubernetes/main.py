"""`rheostat operator`: run the Kopf operator against the current kubeconfig."""

from __future__ import annotations

import asyncio
import logging

import kopf
from kubernetes import config
from prometheus_client import start_http_server

from rheostat.backends.kubernetes import handlers


def run_operator(
    *,
    namespaces: list[str],
    metrics_port: int = 8080,
    liveness: str | None = "http://0.0.0.0:8081/healthz",
    verbose: bool = False,
) -> int:
    """Serve metrics, then run every handler until interrupted."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO)
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]  # untyped in the client
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    reconciler = handlers.reconciler()
    if metrics_port:
        start_http_server(metrics_port, registry=reconciler.metrics.registry)
    asyncio.run(
        kopf.operator(
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=liveness,
        )
    )
    return 0
