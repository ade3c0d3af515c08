"""A GP study on the cluster asks in the operator's worker process, and finishes.

The parametrised algorithm test in test_operator.py runs 3 trials, fewer than the
GP's startup trials: its GP never fits. Here the GP fits from the third trial on, so
the asks really cross to the worker; the operator's metrics say they did.
"""

from __future__ import annotations

import urllib.request

from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.operator_support import (
    OperatorProcess,
    create_study,
    synthetic_study,
    trials,
    wait_for_phase,
)


def _samples(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            label = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{label}}}"] = sample.value
    return found


def test_a_gp_study_asks_in_the_worker_process(
    admin_api: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    document = synthetic_study(
        "gp-worker",
        algorithm="bayesian",
        args=["--steps", "1"],
        budget={"maxTrials": 6, "parallelism": 2},
    )
    document["spec"]["algorithm"]["settings"] = {"n_startup_trials": 2}
    create_study(admin_api, namespace, document)
    study = wait_for_phase(
        admin_api, namespace, "gp-worker", {"Succeeded", "Failed"}, seconds=300, operator=operator
    )

    assert study["status"]["phase"] == "Succeeded", study["status"]
    found = trials(admin_api, namespace, "gp-worker")
    assert [t["status"]["state"] for t in found] == ["Complete"] * 6
    assert len({tuple(sorted(t["spec"]["params"].items())) for t in found}) == 6
    metrics = _samples(operator.metrics_port)
    assert metrics.get("rheostat_ask_worker_seconds_count{}", 0) >= 1, metrics
    fallbacks = {k: v for k, v in metrics.items() if k.startswith("rheostat_ask_fallbacks_total")}
    assert sum(fallbacks.values()) == 0, fallbacks
