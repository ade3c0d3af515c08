"""Multi-pod trials on the real control plane: the Job controller runs the Indexed Job.

The process node runs each pod as a local process, so there is no DNS and no
torchrun here (the real node proves those, tests/containers/test_multipod.py); what
this proves is the wiring with the real Job controller and garbage collector: the
Service before the Job, the indices and NODE_RANK by the downward API, the
successPolicy met by index 0 alone, and nothing left after the study is deleted.
"""

from __future__ import annotations

from kubernetes import client

from tests.integration.operator_support import (
    OperatorProcess,
    create_study,
    synthetic_study,
    trials,
    wait,
    wait_for_phase,
)

INDEX = "batch.kubernetes.io/job-completion-index"


def test_trials_of_three_pods_run_and_rank_zero_reports_for_each(
    admin_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    document = synthetic_study("mp", budget={"maxTrials": 2, "parallelism": 2})
    document["spec"]["trialTemplate"]["replicas"] = 3
    create_study(admin_api, namespace, document)
    study = wait_for_phase(
        admin_api, namespace, "mp", {"Succeeded", "Failed"}, seconds=180, operator=operator
    )
    found = trials(admin_api, namespace, "mp")
    assert study["status"]["phase"] == "Succeeded", [t["status"] for t in found]
    assert [t["status"]["state"] for t in found] == ["Complete", "Complete"]

    core, batch = client.CoreV1Api(admin_api), client.BatchV1Api(admin_api)
    job = batch.read_namespaced_job("mp-t0", namespace)
    assert job.spec.completion_mode == "Indexed"
    assert (job.spec.completions, job.spec.parallelism) == (3, 3)

    # successPolicy met by index 0 ends the trial; the Job controller adds Complete a
    # moment after SuccessCriteriaMet (CI once read the Job in between).
    def complete() -> bool:
        job = batch.read_namespaced_job("mp-t0", namespace)
        return {c.type: c.status for c in job.status.conditions or []}.get("Complete") == "True"

    wait(complete, 60, "mp-t0's Job to be Complete")
    pods = core.list_namespaced_pod(namespace, label_selector="rheostat.dev/trial=0").items
    assert sorted(p.metadata.annotations[INDEX] for p in pods) == ["0", "1", "2"]
    assert all(p.spec.subdomain == "mp-t0" for p in pods)
    service = core.read_namespaced_service("mp-t0", namespace)
    assert service.spec.cluster_ip == "None"
    assert service.metadata.owner_references[0].uid == found[0]["metadata"]["uid"]

    client.CustomObjectsApi(admin_api).delete_namespaced_custom_object(
        "rheostat.dev", "v1alpha1", namespace, "tuningstudies", "mp"
    )

    def nothing_left() -> bool:
        selector = "rheostat.dev/study=mp"
        return not (
            core.list_namespaced_pod(namespace, label_selector=selector).items
            or batch.list_namespaced_job(namespace, label_selector=selector).items
            or core.list_namespaced_service(namespace, label_selector=selector).items
        )

    wait(nothing_left, 60, "the study's pods, Jobs and Services to go")
