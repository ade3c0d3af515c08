"""Warm start on a real control plane: a study told another study's TuningTrials."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from tests.integration.operator_support import (
    OperatorProcess,
    create_study,
    synthetic_study,
    trials,
    wait,
    wait_for_phase,
)

CONFIG = {"lr": 0.05, "momentum": 0.5, "layers": 2, "optimizer": "adam"}


def _subset(config: dict[str, Any], params: dict[str, Any]) -> bool:
    return all(params.get(k) == v for k, v in config.items())


def test_a_study_warm_started_from_another_studys_trials(
    admin_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    create_study(admin_api, namespace, synthetic_study("before"))
    before = wait_for_phase(
        admin_api, namespace, "before", {"Succeeded", "Failed"}, seconds=180, operator=operator
    )
    assert before["status"]["phase"] == "Succeeded", before["status"]
    old = [t["spec"]["params"] for t in trials(admin_api, namespace, "before")]
    assert len(old) == 3

    document = synthetic_study("after", budget={"maxTrials": 3, "parallelism": 1})
    document["spec"]["warmStart"] = {"configurations": [CONFIG], "fromStudy": "before"}
    create_study(admin_api, namespace, document)
    # The operator dies once the configuration runs: it must not run it a second time.
    wait(lambda: trials(admin_api, namespace, "after"), 120, "the first trial of 'after'")
    operator.kill()
    operator.start()
    after = wait_for_phase(
        admin_api, namespace, "after", {"Succeeded", "Failed"}, seconds=240, operator=operator
    )
    status = after["status"]
    assert status["phase"] == "Succeeded", status
    assert status["warmStart"] == {"seeded": 3}
    assert status["trials"]["finished"] == 3
    found = trials(admin_api, namespace, "after")
    # Seeds took numbers 0-2 and were never run: the study's own trials start at 3.
    assert [t["spec"]["number"] for t in found] == [3, 4, 5]
    assert _subset(CONFIG, found[0]["spec"]["params"])
    assert sum(_subset(CONFIG, t["spec"]["params"]) for t in found) == 1
    assert not [t for t in found if t["spec"]["params"] in old]
    events = client.CoreV1Api(admin_api).list_namespaced_event(
        namespace, field_selector="involvedObject.name=after"
    )
    messages = {e.reason: e.message for e in events.items}
    assert messages["WarmStarted"] == "told the sampler 3 trials of study before"


def test_a_source_study_that_optimised_the_other_way_seeds_nothing(
    admin_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    create_study(admin_api, namespace, synthetic_study("lossy"))  # minimises loss
    source = wait_for_phase(
        admin_api, namespace, "lossy", {"Succeeded", "Failed"}, seconds=180, operator=operator
    )
    assert source["status"]["phase"] == "Succeeded", source["status"]

    document = synthetic_study("upside", budget={"maxTrials": 2, "parallelism": 2})
    document["spec"]["objective"] = {"metric": "loss", "direction": "maximize"}
    document["spec"]["warmStart"] = {"fromStudy": "lossy"}
    create_study(admin_api, namespace, document)
    after = wait_for_phase(
        admin_api, namespace, "upside", {"Succeeded", "Failed"}, seconds=240, operator=operator
    )
    status = after["status"]
    assert status["phase"] == "Succeeded", status  # it ran, unseeded
    assert status.get("warmStart", {}).get("seeded", 0) == 0
    assert [t["spec"]["number"] for t in trials(admin_api, namespace, "upside")] == [0, 1]
    events = client.CoreV1Api(admin_api).list_namespaced_event(
        namespace, field_selector="involvedObject.name=upside"
    )
    messages = {e.reason: e.message for e in events.items}
    refused = messages["WarmStartRefused"]
    assert "spec.warmStart.fromStudy: study lossy optimised 'loss' (minimize)" in refused
    assert messages["WarmStarted"] == "told the sampler 0 trials of study lossy"
