"""The chart's optional optuna-dashboard (`dashboard.enabled`): off by default, read-only.

Rendered by the real helm, and its RBAC tried on the real API server: a token minted
for the dashboard's ServiceAccount feeds the same watch and storage `rheostat
dashboard` uses, sees a study created meanwhile, and may write nothing.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from rheostat.backends.kubernetes.live import ClusterStorage, ObjectCache
from rheostat.backends.kubernetes.watch import ClusterWatch
from tests.integration.conftest import ClusterHandle, ServiceAccountClient
from tests.integration.operator_support import (
    GROUP,
    VERSION,
    create_study,
    install_crds,
    synthetic_study,
    wait,
)
from tests.integration.test_chart import CHART, _rules, _run, _template

ON = ("--set", "dashboard.enabled=true")


def _named(docs: list[dict[str, Any]], kind: str, suffix: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_the_dashboard_is_off_by_default_and_read_only_when_on(cluster: ClusterHandle) -> None:
    assert not [d for d in _template("rheo", "rheostat") if "dashboard" in d["metadata"]["name"]]
    _run("helm", "lint", "--strict", str(CHART), *ON)
    docs = _template("rheo", "rheostat", *ON)
    [role] = _named(docs, "ClusterRole", "-dashboard")
    assert _rules(role) == {
        ("rheostat.dev", resource, verb)
        for resource in ("tuningstudies", "tuningtrials")
        for verb in ("get", "list", "watch")
    }
    [binding] = _named(docs, "ClusterRoleBinding", "-dashboard")
    [account] = _named(docs, "ServiceAccount", "-dashboard")
    assert binding["subjects"][0]["name"] == account["metadata"]["name"]
    [operator] = _named(docs, "Deployment", "rheo-rheostat")
    [dashboard] = _named(docs, "Deployment", "-dashboard")
    pod, operator_pod = dashboard["spec"]["template"], operator["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]
    [container] = pod["spec"]["containers"]
    assert container["command"][:3] == ["rheostat", "dashboard", "--all-namespaces"]
    # The operator's restricted security context, pod and container.
    assert pod["spec"]["securityContext"] == operator_pod["spec"]["securityContext"]
    assert container["securityContext"] == operator_pod["spec"]["containers"][0]["securityContext"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # Each Service selects its own pods only.
    [service] = _named(docs, "Service", "-dashboard")
    [metrics] = _named(docs, "Service", "-metrics")
    assert _selects(service["spec"]["selector"], pod["metadata"]["labels"])
    assert not _selects(service["spec"]["selector"], operator_pod["metadata"]["labels"])
    assert not _selects(metrics["spec"]["selector"], pod["metadata"]["labels"])
    assert not _selects(operator["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])


def test_the_notes_print_the_port_forward_line(cluster: ClusterHandle) -> None:
    out = _run("helm", "install", "rheo", str(CHART), "-n", "rheostat", "--dry-run=client", *ON)
    assert "kubectl -n rheostat port-forward svc/rheo-rheostat-dashboard 8080" in out


def test_the_dashboard_account_watches_studies_and_writes_nothing(
    cluster: ClusterHandle,
    admin_api: client.ApiClient,
    namespace: str,
    service_account_client: ServiceAccountClient,
) -> None:
    install_crds(admin_api)
    release = f"d{secrets.token_hex(3)}"
    docs = _template(release, namespace, *ON)
    rbac = [
        d
        for d in docs
        if d["kind"] in {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
        and d["metadata"]["name"].endswith("-dashboard")
    ]
    manifest = "\n---\n".join(yaml.safe_dump(d) for d in rbac)
    _run("kubectl", "apply", "-f", "-", stdin=manifest)
    watcher = None
    try:
        api = service_account_client(namespace, f"{release}-rheostat-dashboard")
        cache = ObjectCache()
        watcher = ClusterWatch(api, None, cache)
        watcher.start()
        assert watcher.wait_synced(30), watcher.errors
        storage = ClusterStorage(cache, namespaced=False)
        create_study(admin_api, namespace, synthetic_study("seen"))
        wait(
            lambda: f"{namespace}/seen" in [s.study_name for s in storage.get_all_studies()],
            30,
            "the watch to show the new study",
        )
        with pytest.raises(ApiException) as refused:
            create_study(api, namespace, synthetic_study("mine"))
        assert refused.value.status == 403
        with pytest.raises(ApiException) as refused:
            client.CustomObjectsApi(api).delete_namespaced_custom_object(
                GROUP, VERSION, namespace, "tuningstudies", "seen"
            )
        assert refused.value.status == 403
    finally:
        if watcher is not None:
            watcher.stop()
        for kind in ("clusterrolebinding", "clusterrole"):
            _run("kubectl", "delete", kind, f"{release}-rheostat-dashboard", "--ignore-not-found")


def test_an_account_that_may_not_list_studies_hears_why_at_once(
    cluster: ClusterHandle,
    admin_api: client.ApiClient,
    namespace: str,
    service_account_client: ServiceAccountClient,
) -> None:
    """`rheostat dashboard -A` as a user with no cluster-wide read: told, not kept waiting."""
    install_crds(admin_api)
    api = service_account_client(namespace, "nobody")
    watcher = ClusterWatch(api, None, ObjectCache())
    watcher.start()
    try:
        started = time.monotonic()
        assert not watcher.wait_synced(30)
        assert time.monotonic() - started < 10
        assert "cannot watch tuningstudies" in watcher.errors["tuningstudies"]
        assert "forbidden" in watcher.errors["tuningstudies"].lower()
    finally:
        watcher.stop()
