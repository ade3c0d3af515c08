"""A study with two objectives on a real control plane: the Pareto front in status."""

from __future__ import annotations

import subprocess
from typing import Any

import optuna
from kubernetes import client

from rheostat.backends.kubernetes.export import export_to_storage
from rheostat.backends.kubernetes.read import ClusterReader
from tests.integration.operator_support import (
    OperatorProcess,
    create_study,
    trials,
    wait_for_phase,
)
from tests.studies import tradeoff_study


def _dominated(values: list[float], others: list[list[float]]) -> bool:
    """Both objectives (loss, cost) are minimised."""
    return any(
        all(o <= v for o, v in zip(other, values, strict=True)) and other != values
        for other in others
    )


def test_a_two_objective_study_ends_with_its_front_in_status(
    admin_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    document = tradeoff_study(
        "pareto",
        args=["--omit", "cost", "--omit-on-trial", "1"],
        budget={"maxTrials": 6, "parallelism": 2, "maxFailedTrials": 1},
        seed=3,
    )
    document["spec"]["metrics"] = {"scrapeInterval": 0.5}
    create_study(admin_api, namespace, document)
    study = wait_for_phase(
        admin_api, namespace, "pareto", {"Succeeded", "Failed"}, seconds=240, operator=operator
    )
    status = study["status"]
    assert status["phase"] == "Succeeded", status
    assert "suggestedLr" in status["lrRangeTest"]  # the LR range test still ran first
    assert "bestTrial" not in status
    found = {t["spec"]["number"]: t for t in trials(admin_api, namespace, "pareto")}
    assert found[1]["status"]["state"] == "Failed"
    assert "'cost' was never reported" in found[1]["status"]["reason"]
    complete = {n: t["status"]["values"] for n, t in found.items() if "values" in t["status"]}
    assert len(complete) == 5
    assert all(len(v) == 2 for v in complete.values())
    on_front = {n for n, v in complete.items() if not _dominated(v, list(complete.values()))}
    front: dict[str, Any] = status["paretoFront"]
    assert front["size"] == len(on_front)
    # Each objective's best (the dashboard's "Best of each objective") is the front's.
    assert front["best"] == {
        "loss": min(v[0] for v in complete.values()),
        "cost": min(v[1] for v in complete.values()),
    }
    assert {e["number"] for e in front["trials"]} == on_front
    for entry in front["trials"]:
        # Named values (the API server sorts the keys); a TuningTrial's are in spec order.
        named = entry["values"]
        assert [named["loss"], named["cost"]] == complete[entry["number"]]
    # kubectl shows the front's size and each trial's values.
    table = subprocess.run(
        ["kubectl", "get", "tstudy,ttrial", "-n", namespace],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"front of {len(on_front)}" in table
    assert " / " in table
    # Read back as `rheostat get/describe/export` do: the same front, and Optuna's.
    cluster = ClusterReader(admin_api).study(namespace, "pareto")
    assert {t.number for t in cluster.results().front()} == on_front
    exported = export_to_storage(cluster, optuna.storages.InMemoryStorage())
    assert {t.number for t in exported.best_trials} == on_front
