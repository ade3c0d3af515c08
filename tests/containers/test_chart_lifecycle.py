"""The chart's day two: `helm upgrade` mid-study, a failing `helm test`, `helm uninstall`.

What a platform engineer does after the install: change a value and upgrade while
users' studies run, and later remove the release. The upgrade must roll the
operator (a new pod with the new settings, the old one gone) without losing or
repeating a trial. The uninstall must leave nothing of the release behind and no
orphaned Job or pod: "orphaned" meaning a pod or Job no existing object owns, or
anything that carries the release's labels (the Deployment's pods, the `helm test`
pod, passed or failed). TuningStudies and their CRD are users' data and are not the
release's (Helm never deletes CRDs): they stay, and own their Jobs and pods, until
the user deletes them; the garbage collector then takes the rest.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster.polling import wait_for
from tests.containers.chart import (
    GROUP,
    INSTANCE,
    RELEASE,
    VERSION,
    helm_apply,
    operator_pods,
    pods_per_trial,
    run,
    trial_study,
    trials,
    wait_finished,
)
from tests.containers.conftest import RealCluster


@pytest.fixture
def installed(real_cluster: RealCluster, namespace: str, tmp_path: Path) -> Iterator[str]:
    """The chart installed; removed at the end unless the test uninstalled it.

    Whatever state a failed test left (the operator scaled to zero, say), the studies
    are gone before the namespace: finalizers no operator will remove are dropped.
    """
    helm_apply("install", namespace, tmp_path)
    yield namespace
    run("kubectl", "delete", "tuningstudies", "--all", "--namespace", namespace, "--wait=false")
    if RELEASE in run("helm", "list", "--namespace", namespace, "--short").split():
        run("helm", "uninstall", RELEASE, "--namespace", namespace, "--wait")
    for name in run("kubectl", "get", "tuningstudies", "--namespace", namespace,
                    "--output", "name").split():  # fmt: skip
        run("kubectl", "patch", name, "--namespace", namespace, "--type=merge",
            "--patch", '{"metadata":{"finalizers":null}}')  # fmt: skip


def _env(pod: client.V1Pod, name: str) -> str | None:
    container = pod.spec.containers[0]
    return next((e.value for e in container.env or [] if e.name == name), None)


def test_helm_upgrade_rolls_the_operator_and_the_study_loses_nothing(
    admin_api: client.ApiClient, installed: str, tmp_path: Path
) -> None:
    namespace = installed
    core = client.CoreV1Api(admin_api)
    custom = client.CustomObjectsApi(admin_api)
    before = {p.metadata.uid for p in operator_pods(core, namespace)}
    assert before
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "tuningstudies", trial_study("upg", max_trials=8, seed=7)
    )
    wait_for(lambda: len(trials(custom, namespace, "upg")) >= 3, 180, "three trials")

    started = time.monotonic()
    helm_apply("upgrade", namespace, tmp_path, resyncInterval=30, verbose=True)

    def rolled() -> list[client.V1Pod]:
        pods = operator_pods(core, namespace)
        new = [p for p in pods if p.metadata.uid not in before]
        ready = all(
            any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
            for p in new
        )
        return new if new and ready and len(new) == len(pods) else []

    new = wait_for(rolled, 180, "the upgraded operator pods, and the old ones gone")
    print(f"helm upgrade rolled the operator in {time.monotonic() - started:.1f}s")
    for pod in new:
        assert _env(pod, "RHEOSTAT_RESYNC_INTERVAL") == "30", pod.spec.containers[0].env
        assert "--verbose" in pod.spec.containers[0].args, pod.spec.containers[0].args
    status = json.loads(run("helm", "status", RELEASE, "--namespace", namespace, "-o", "json"))
    assert (status["version"], status["info"]["status"]) == (2, "deployed"), status["info"]

    study = wait_finished(custom, namespace, "upg")
    found = trials(custom, namespace, "upg")
    assert study["status"]["phase"] == "Succeeded", [t["status"] for t in found]
    counted = [t for t in found if t["status"].get("kind", "counted") == "counted"]
    assert len(counted) == 8, [t["status"] for t in found]
    assert all(t["status"]["state"] == "Complete" for t in counted)
    assert len({tuple(sorted(t["spec"]["params"].items())) for t in found}) == len(found)
    assert set(pods_per_trial(core, namespace, "upg").values()) == {1}
    # The study was running across the rollout: the new operator made some trials.
    rolled_at = min(p.status.start_time for p in new)
    assert any(
        datetime.fromisoformat(t["metadata"]["creationTimestamp"]) >= rolled_at for t in found
    ), (rolled_at, [t["metadata"]["creationTimestamp"] for t in found])


def _release_leftovers(admin_api: client.ApiClient, namespace: str) -> list[str]:
    """Everything that still carries the release's instance label."""
    core = client.CoreV1Api(admin_api)
    apps = client.AppsV1Api(admin_api)
    rbac = client.RbacAuthorizationV1Api(admin_api)
    batch = client.BatchV1Api(admin_api)
    listings = {
        "pod": core.list_namespaced_pod,
        "service": core.list_namespaced_service,
        "serviceaccount": core.list_namespaced_service_account,
        "configmap": core.list_namespaced_config_map,
        "secret": core.list_namespaced_secret,
        "deployment": apps.list_namespaced_deployment,
        "replicaset": apps.list_namespaced_replica_set,
        "job": batch.list_namespaced_job,
        "role": rbac.list_namespaced_role,
        "rolebinding": rbac.list_namespaced_role_binding,
        "poddisruptionbudget": client.PolicyV1Api(admin_api).list_namespaced_pod_disruption_budget,
    }
    found = [
        f"{kind}/{item.metadata.name}"
        for kind, listing in listings.items()
        for item in listing(namespace, label_selector=INSTANCE).items
    ]
    for kind, cluster_listing in (
        ("clusterrole", rbac.list_cluster_role),
        ("clusterrolebinding", rbac.list_cluster_role_binding),
    ):
        found += [
            f"{kind}/{item.metadata.name}"
            for item in cluster_listing(label_selector=INSTANCE).items
            if item.metadata.name.startswith(f"{RELEASE}-")
        ]
    return found


def _owner_exists(admin_api: client.ApiClient, namespace: str, owner: Any) -> bool:
    """Whether the object an ownerReference names exists, with the same UID."""
    custom = client.CustomObjectsApi(admin_api)
    readers = {
        "TuningStudy": lambda: custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "tuningstudies", owner.name
        )["metadata"]["uid"],
        "TuningTrial": lambda: custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "tuningtrials", owner.name
        )["metadata"]["uid"],
        "Job": lambda: (
            client.BatchV1Api(admin_api).read_namespaced_job(owner.name, namespace).metadata.uid
        ),
        "ReplicaSet": lambda: (
            client.AppsV1Api(admin_api)
            .read_namespaced_replica_set(owner.name, namespace)
            .metadata.uid
        ),
    }
    assert owner.kind in readers, f"unexpected owner kind {owner.kind}"
    try:
        return bool(readers[owner.kind]() == owner.uid)
    except ApiException as err:
        if err.status == 404:
            return False
        raise


def _orphans(admin_api: client.ApiClient, namespace: str) -> list[str]:
    """Jobs and pods in the namespace that no existing object owns."""
    core = client.CoreV1Api(admin_api)
    batch = client.BatchV1Api(admin_api)
    items = [("pod", p) for p in core.list_namespaced_pod(namespace).items]
    items += [("job", j) for j in batch.list_namespaced_job(namespace).items]
    return [
        f"{kind}/{item.metadata.name}"
        for kind, item in items
        if item.metadata.deletion_timestamp is None
        and not any(
            _owner_exists(admin_api, namespace, o) for o in item.metadata.owner_references or []
        )
    ]


def test_helm_uninstall_leaves_no_orphaned_jobs_or_pods(
    admin_api: client.ApiClient, installed: str
) -> None:
    namespace = installed
    core = client.CoreV1Api(admin_api)
    custom = client.CustomObjectsApi(admin_api)
    apps = client.AppsV1Api(admin_api)
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "tuningstudies", trial_study("kept", max_trials=2, seed=9)
    )
    assert wait_finished(custom, namespace, "kept")["status"]["phase"] == "Succeeded"
    study_pods = core.list_namespaced_pod(namespace, label_selector="rheostat.dev/study=kept")
    assert study_pods.items, "the finished study's trial pods should still be there"

    # A failing `helm test` (no operator behind the metrics Service): Helm prints the
    # pod's log and deletes the pod, since `helm uninstall` would never delete it.
    deployment = apps.list_namespaced_deployment(namespace, label_selector=INSTANCE).items[0]
    run("kubectl", "scale", "deployment", deployment.metadata.name, "--replicas=0",
        "--namespace", namespace)  # fmt: skip
    wait_for(lambda: not operator_pods(core, namespace), 120, "the operator pod to go")
    failed = subprocess.run(
        ["helm", "test", RELEASE, "--namespace", namespace, "--timeout", "120s"],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert failed.returncode != 0, failed.stdout
    assert not core.list_namespaced_pod(
        namespace, label_selector=f"{INSTANCE},app.kubernetes.io/component=test"
    ).items
    assert "curl: (" in failed.stderr, failed.stderr  # the test pod's log

    started = time.monotonic()
    run("helm", "uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "120s")
    print(f"helm uninstall --wait took {time.monotonic() - started:.1f}s")
    right_after = _release_leftovers(admin_api, namespace)
    wait_for(
        lambda: not _release_leftovers(admin_api, namespace),
        60,
        f"the release's objects to be deleted (right after uninstall: {right_after})",
    )
    assert _orphans(admin_api, namespace) == []
    # The study and its pods stay (users' data, not the release's), owned by it.
    remaining = core.list_namespaced_pod(namespace, label_selector="rheostat.dev/study=kept")
    assert {p.metadata.uid for p in remaining.items} == {p.metadata.uid for p in study_pods.items}

    # With no operator left to run the study's finalizer, deleting it means removing
    # the finalizer (what docs tell users); the garbage collector takes its Jobs/pods.
    run("kubectl", "patch", "tuningstudy", "kept", "--namespace", namespace, "--type=merge",
        "--patch", '{"metadata":{"finalizers":null}}')  # fmt: skip
    run("kubectl", "delete", "tuningstudy", "kept", "--namespace", namespace, "--wait")
    batch = client.BatchV1Api(admin_api)
    wait_for(
        lambda: (
            not core.list_namespaced_pod(namespace).items
            and not batch.list_namespaced_job(namespace).items
        ),
        120,
        "every Job and pod to be garbage-collected",
    )
