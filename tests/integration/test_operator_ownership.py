"""A study's children are what its uid owns, and a Job gone or never seen is not waited
for forever: issue 21's defects 1-3 on a real control plane.

Nothing here relies on timing: the predecessor's children are held by a finalizer,
the trial's name by a Job the test made, the LR test's Job is deleted once its pod runs.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.integration.operator_support import (
    GROUP,
    VERSION,
    OperatorProcess,
    create_study,
    get_study,
    synthetic_study,
    trials,
    wait,
    wait_for_phase,
)

HOLD = "tests.rheostat.dev/hold"


def _controller(obj: dict[str, Any]) -> str | None:
    refs = obj["metadata"].get("ownerReferences") or []
    return next((r["uid"] for r in refs if r.get("controller")), None)


def _set_finalizers(api: client.ApiClient, namespace: str, name: str, held: bool) -> None:
    body = {"metadata": {"finalizers": [HOLD] if held else None}}
    try:
        client.CustomObjectsApi(api).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, "tuningtrials", name, body
        )
    except ApiException as error:
        if error.status != 404:
            raise


def _gone(api: client.ApiClient, namespace: str, name: str) -> bool:
    try:
        get_study(api, namespace, name)
    except ApiException as error:
        return error.status == 404
    return False


def _reasons(api: client.ApiClient, namespace: str, uid: str) -> list[str]:
    events = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.uid={uid}"
    )
    return [str(e.reason) for e in events.items]


def test_a_study_deleted_and_reapplied_runs_its_own_trials_while_the_old_ones_linger(
    admin_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    budget = {"maxTrials": 2, "parallelism": 2, "unschedulableTimeout": 5}
    create_study(admin_api, namespace, synthetic_study("again", budget=budget))
    first = wait_for_phase(
        admin_api, namespace, "again", {"Succeeded"}, seconds=120, operator=operator
    )
    old_uid = first["metadata"]["uid"]
    old = {t["metadata"]["name"]: t for t in trials(admin_api, namespace, "again")}
    assert len(old) == 2
    for name in old:  # the garbage collector will not finish with these meanwhile
        _set_finalizers(admin_api, namespace, name, held=True)
    try:
        client.CustomObjectsApi(admin_api).delete_namespaced_custom_object(
            GROUP, VERSION, namespace, "tuningstudies", "again"
        )
        wait(lambda: _gone(admin_api, namespace, "again"), 60, "the old study deleted")
        document = synthetic_study("again", budget={**budget, "maxTrials": 3})
        document["spec"]["parameters"][1].update({"min": 0.5, "max": 0.51})  # momentum
        create_study(admin_api, namespace, document)

        study = wait_for_phase(
            admin_api, namespace, "again", {"Succeeded", "Failed"}, seconds=180, operator=operator
        )

        assert study["status"]["phase"] == "Succeeded", study["status"]
        new_uid = study["metadata"]["uid"]
        found = trials(admin_api, namespace, "again")
        mine = {t["spec"]["number"]: t for t in found if _controller(t) == new_uid}
        complete = [t for t in mine.values() if t["status"]["state"] == "Complete"]
        assert len(complete) == 3, [t["status"] for t in mine.values()]
        assert all(0.5 <= t["spec"]["params"]["momentum"] <= 0.51 for t in complete)
        best = study["status"]["bestTrial"]
        assert best["number"] in mine
        assert best["value"] == min(t["status"]["value"] for t in complete)
        for name, before in old.items():  # untouched: neither adopted nor written to
            now = next(t for t in found if t["metadata"]["name"] == name)
            assert _controller(now) == old_uid
            assert now["status"]["value"] == before["status"]["value"]
        assert "Resumed" not in _reasons(admin_api, namespace, new_uid)
    finally:
        for name in old:
            _set_finalizers(admin_api, namespace, name, held=False)


def test_a_deleted_lr_range_test_job_does_not_hold_the_study_in_lr_range_test(
    admin_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    document = synthetic_study(
        "lrgone",
        lr_test=True,
        args=["--fault", "hang", "--fault-on-trial", "-1"],  # only the LR test hangs
        budget={"maxTrials": 2, "parallelism": 2, "unschedulableTimeout": 10},
    )
    create_study(admin_api, namespace, document)
    core = client.CoreV1Api(admin_api)
    selector = "rheostat.dev/study=lrgone,rheostat.dev/role=lr-range-test"
    wait(
        lambda: any(
            p.status.phase == "Running"
            for p in core.list_namespaced_pod(namespace, label_selector=selector).items
        ),
        60,
        "the LR range test's pod running",
    )
    client.BatchV1Api(admin_api).delete_namespaced_job(
        "lrgone-lr-range-test", namespace, propagation_policy="Background"
    )

    study = wait_for_phase(
        admin_api, namespace, "lrgone", {"Succeeded", "Failed"}, seconds=120, operator=operator
    )

    assert study["status"]["phase"] == "Succeeded", study["status"]
    error = study["status"]["lrRangeTest"]["error"]
    assert "deleted before it finished" in error or "never seen" in error
    jobs = client.BatchV1Api(admin_api).list_namespaced_job(namespace, label_selector=selector)
    assert jobs.items == []  # lost, not run again
    assert "LrRangeTestFailed" in _reasons(admin_api, namespace, study["metadata"]["uid"])


def test_a_trial_whose_job_never_shows_is_retried_not_waited_for_forever(
    admin_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    """A Job the operator meant to create but never sees (here: a stranger's Job holds
    its name, without the study's labels) counts as lost after the grace."""
    stranger = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "unseen-t0", "namespace": namespace},
        "spec": {
            "suspend": True,  # it runs nothing
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "busybox", "command": ["true"]}],
                }
            },
        },
    }
    batch = client.BatchV1Api(admin_api)
    batch.create_namespaced_job(namespace, stranger)
    budget = {"maxTrials": 2, "parallelism": 2, "unschedulableTimeout": 5}
    create_study(admin_api, namespace, synthetic_study("unseen", budget=budget))

    study = wait_for_phase(
        admin_api, namespace, "unseen", {"Succeeded", "Failed"}, seconds=120, operator=operator
    )

    assert study["status"]["phase"] == "Succeeded", study["status"]
    assert study["status"]["trials"]["complete"] == 2
    (first, *_) = trials(admin_api, namespace, "unseen")
    assert first["status"]["kind"] == "retry", first["status"]
    assert "never seen" in first["status"]["reason"]
    held = batch.read_namespaced_job("unseen-t0", namespace)
    assert not held.metadata.owner_references  # neither adopted nor deleted
