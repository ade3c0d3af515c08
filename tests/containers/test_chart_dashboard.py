"""The chart's optuna-dashboard (`dashboard.enabled`) from the operator image, on the real node.

In a namespace that enforces the ``restricted`` Pod Security Standard: the
Deployment becomes Ready (its probe is the dashboard's /api/meta), and the study
that ran meanwhile is read back through the dashboard's Service, proxied by the API
server as `kubectl port-forward` would reach it: its trials, as the cluster has them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.cluster.polling import wait_for
from tests.containers.chart import (
    GROUP,
    RELEASE,
    VERSION,
    helm_apply,
    run,
    trial_study,
    trials,
    wait_finished,
)
from tests.containers.conftest import RealCluster

SERVICE = f"{RELEASE}-rheostat-dashboard"


@pytest.fixture
def release(real_cluster: RealCluster, namespace: str, tmp_path: Path) -> Iterator[str]:
    helm_apply("install", namespace, tmp_path, dashboard={"enabled": True})
    yield namespace
    run("kubectl", "delete", "tuningstudies", "--all", "--namespace", namespace, "--wait")
    run("helm", "uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "120s")


def _get(core: client.CoreV1Api, namespace: str, path: str) -> Any:
    """GET through the API server's proxy to the dashboard's Service.

    The raw body: with its content preloaded, the client turns a JSON answer into a
    dict and hands back that dict's str(), which is no longer JSON.
    """
    response = core.connect_get_namespaced_service_proxy_with_path(
        f"{SERVICE}:http", namespace, path, _preload_content=False
    )
    return json.loads(response.data)


def test_the_charts_dashboard_serves_the_clusters_study(
    admin_api: client.ApiClient, release: str
) -> None:
    namespace = release
    core, apps = client.CoreV1Api(admin_api), client.AppsV1Api(admin_api)
    deployment = apps.read_namespaced_deployment(SERVICE, namespace)
    assert deployment.status.ready_replicas == 1, deployment.status
    custom = client.CustomObjectsApi(admin_api)
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "tuningstudies", trial_study("dash", max_trials=2, seed=5)
    )
    study = wait_finished(custom, namespace, "dash")
    assert study["status"]["phase"] == "Succeeded", study["status"]
    expected = len(trials(custom, namespace, "dash"))
    name = f"{namespace}/dash"  # every namespace: studies are namespace/name

    def shown() -> dict[str, Any] | None:
        listed = _get(core, namespace, "api/studies")["study_summaries"]
        found = next((s for s in listed if s["study_name"] == name), None)
        if found is None:
            return None
        detail = _get(core, namespace, f"api/studies/{found['study_id']}")
        return detail if len(detail["trials"]) == expected else None

    detail = wait_for(shown, 60, f"the dashboard to show {name} with {expected} trials")
    assert {t["state"] for t in detail["trials"]} == {"Complete"}
    assert detail["best_trials"][0]["values"] == [study["status"]["bestTrial"]["value"]]
