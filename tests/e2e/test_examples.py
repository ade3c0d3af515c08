"""The studies in examples/ run end to end on this machine, on a small budget.

Each committed file is copied with fewer trials, epochs and LR sweep steps and
run through `rheostat run` with its own algorithm, pruner and trainer. The GPU
example runs here too: a local run ignores the pod-only fields (node selector,
tolerations, GPU limits) and the trainer falls back to the CPU; that it really
lands on a GPU node is not tested here (this machine has no GPU).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.examples_support import load_example, run_study, shrink

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["bayesian", "grid", "gpu"])
def test_example_runs_to_the_end(name: str, tmp_path: Path) -> None:
    document = load_example(name)
    results = run_study(shrink(document, max_trials=2, epochs=2), tmp_path)
    status = results["status"]
    assert status["phase"] == "Succeeded"
    assert status["trials"]["complete"] == 2
    assert status["bestTrial"]["value"] > 0.2  # real training: above chance (0.1)
    assert len({tuple(sorted(t["params"].items())) for t in results["trials"]}) == 2
    if "lrRangeTest" in document["spec"]:
        lr = document["spec"]["lrRangeTest"]
        assert lr["minLr"] < status["lrRangeTest"]["suggestedLr"] < lr["maxLr"]
        low, high = status["lrRangeTest"]["narrowedTo"]
        assert all(low <= t["params"]["lr"] <= high for t in results["trials"])


def test_hyperband_example_runs_to_the_end(tmp_path: Path) -> None:
    document = shrink(load_example("hyperband"), max_trials=3, epochs=3)
    results = run_study(document, tmp_path)
    status = results["status"]
    assert status["phase"] == "Succeeded"
    assert status["trials"]["finished"] == 3
    assert status["trials"]["failed"] == 0
    assert status["trials"]["complete"] >= 1
    assert {t["state"] for t in results["trials"]} <= {"complete", "pruned"}
