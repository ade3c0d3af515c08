"""Hostile trainers and templates on a real control plane: nothing hangs, nothing lies."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client

from tests.integration.operator_support import (
    OperatorProcess,
    create_study,
    get_study,
    synthetic_study,
    trials,
    wait,
    wait_for_phase,
)


def _condition(study: dict[str, Any], kind: str) -> dict[str, Any] | None:
    conditions = (study.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind and c["status"] == "True"), None)


def test_a_non_finite_lr_curve_does_not_stall_the_study(
    admin_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    """The sweep ends on NaN, as real ones do; its status must still be valid JSON."""
    document = synthetic_study(
        "nancurve",
        lr_test=True,
        args=["--fault", "nan", "--fault-on-trial", "-1"],
        budget={"maxTrials": 2, "parallelism": 2},
    )
    # The trainer injects the NaN half way through the sweep: from 1e-4 that is after
    # the synthetic curve's descent (a flat curve gives no advice, MIN_DESCENT).
    document["spec"]["lrRangeTest"]["minLr"] = 1e-4
    create_study(admin_api, namespace, document)
    study = wait_for_phase(
        admin_api, namespace, "nancurve", {"Succeeded", "Failed"}, seconds=120, operator=operator
    )
    assert study["status"]["phase"] == "Succeeded", study["status"]
    lr_test = study["status"]["lrRangeTest"]
    assert "suggestedLr" in lr_test, lr_test
    curve = lr_test["curve"]
    assert 0 < len(curve["losses"]) < 100  # cut at the first NaN
    json.dumps(study["status"], allow_nan=False)


def test_a_job_the_api_server_refuses_fails_its_trial_with_the_servers_message(
    admin_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    document = synthetic_study("refused", budget={"maxTrials": 2, "maxFailedTrials": 0})
    container = document["spec"]["trialTemplate"]["spec"]["containers"][0]
    # Admitted by the TuningStudy schema (env entries pass through), refused in a Job.
    container["env"] = [
        {"name": "BOTH", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]
    create_study(admin_api, namespace, document)
    study = wait_for_phase(
        admin_api, namespace, "refused", {"Succeeded", "Failed"}, seconds=60, operator=operator
    )
    assert study["status"]["phase"] == "Failed"
    (first, *_) = trials(admin_api, namespace, "refused")
    assert first["status"]["state"] == "Failed"
    assert "the API server refused the trial's Job" in first["status"]["reason"]
    assert "valueFrom" in first["status"]["reason"]


def test_pods_refused_by_pod_security_are_reported_then_given_up(
    admin_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    """A Job whose pods admission refuses shows no pod at all: it must not look Pending."""
    core = client.CoreV1Api(admin_api)
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    core.patch_namespace(namespace, {"metadata": {"labels": labels}})
    budget = {
        "maxTrials": 1,
        "maxRetries": 0,
        "maxFailedTrials": 0,
        "unschedulableTimeout": 15,
    }
    create_study(admin_api, namespace, synthetic_study("psa", budget=budget))

    def stuck() -> dict[str, Any] | None:
        return _condition(get_study(admin_api, namespace, "psa"), "TrialsStuck")

    condition = wait(stuck, 60, "a TrialsStuck condition")
    assert condition["reason"] == "FailedCreate"
    assert "PodSecurity" in condition["message"], condition
    study = wait_for_phase(
        admin_api, namespace, "psa", {"Succeeded", "Failed"}, seconds=90, operator=operator
    )
    assert study["status"]["phase"] == "Failed"
    (trial,) = trials(admin_api, namespace, "psa")
    assert "stuck in FailedCreate for more than 15s" in trial["status"]["reason"]


def test_a_helper_container_does_not_speak_for_the_trainer(
    admin_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    """Statuses come sorted by name; the helper (first by name) exits at once with 0."""
    document = synthetic_study(
        "sidecar",
        args=["--steps", "6", "--step-seconds", "0.5"],
        budget={"maxTrials": 2, "parallelism": 2, "maxFailedTrials": 0},
    )
    containers = document["spec"]["trialTemplate"]["spec"]["containers"]
    containers.append(
        {"name": "aux-log-shipper", "image": "shipper:1", "command": ["python", "-c", "pass"]}
    )
    create_study(admin_api, namespace, document)
    study = wait_for_phase(
        admin_api, namespace, "sidecar", {"Succeeded", "Failed"}, seconds=120, operator=operator
    )
    found = trials(admin_api, namespace, "sidecar")
    assert study["status"]["phase"] == "Succeeded", [t["status"].get("reason") for t in found]
    for trial in found:
        assert trial["status"]["state"] == "Complete"
        assert not trial["status"].get("reason"), trial["status"]  # the real final value


def test_an_admitted_study_the_operator_cannot_run_is_reported_invalid_not_retried(
    admin_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    """A categorical's values are invisible to CEL: admitted, then refused by the operator."""
    document = synthetic_study("novalues")
    del document["spec"]["parameters"][3]["values"]
    create_study(admin_api, namespace, document)
    study = wait_for_phase(
        admin_api, namespace, "novalues", {"Succeeded", "Failed"}, seconds=60, operator=operator
    )
    failed = _condition(study, "Failed")
    assert failed is not None
    assert failed["reason"] == "InvalidSpec"
    assert "spec.parameters[3].values" in failed["message"]
    assert not client.BatchV1Api(admin_api).list_namespaced_job(namespace).items
    assert operator.process is not None
    assert operator.process.poll() is None, operator.log_tail()
