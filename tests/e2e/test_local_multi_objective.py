"""A study with two objectives, run for real by `rheostat run`: front, files and plot."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from tests.examples_support import load_example, run_study, shrink
from tests.studies import tradeoff_study


def _dominated(trial: dict[str, Any], others: list[dict[str, Any]]) -> bool:
    """Both objectives are minimised in the tradeoff study."""
    a = trial["values"]
    return any(
        all(o["values"][k] <= a[k] for k in a) and any(o["values"][k] < a[k] for k in a)
        for o in others
    )


@pytest.mark.parametrize("algorithm", ["nsga2", "tpe"])
def test_a_two_objective_study_finds_its_front(algorithm: str, tmp_path: Path) -> None:
    document = tradeoff_study(
        algorithm=algorithm,
        args=["--omit", "cost", "--omit-on-trial", "1"],
        budget={"maxTrials": 8, "parallelism": 2, "maxFailedTrials": 1},
    )
    results = run_study(document, tmp_path)
    status = results["status"]
    assert status["phase"] == "Succeeded"
    # The LR range test still ran first, and narrowed the range the trials used.
    low, high = status["lrRangeTest"]["narrowedTo"]
    assert all(low <= t["params"]["lr"] <= high for t in results["trials"])
    trials = {t["number"]: t for t in results["trials"]}
    assert trials[1]["state"] == "failed"
    assert trials[1]["reason"] == "the objective metric 'cost' was never reported"
    complete = [t for t in results["trials"] if t["state"] == "complete"]
    assert len(complete) == 7
    front = [t for t in complete if t["pareto"]]
    assert front, "no trial is on the front"
    # The flag is the definition: on the front exactly when nothing dominates it.
    for trial in complete:
        assert trial["pareto"] == (not _dominated(trial, complete)), trial
    assert status["paretoFront"]["size"] == len(front)
    assert {e["number"] for e in status["paretoFront"]["trials"]} == {t["number"] for t in front}
    work = tmp_path / "work"
    assert (work / "pareto.png").stat().st_size > 10_000
    with (work / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["number"] for r in rows if r["pareto"] == "True"} == {str(t["number"]) for t in front}
    assert all(r["loss"] and r["cost"] for r in rows if r["state"] == "complete")


@pytest.mark.slow
def test_the_multi_objective_example_runs_to_the_end(tmp_path: Path) -> None:
    # The example's own 100-step sweep: at 60 steps this CNN's loss fell only 0.6 %, a
    # curve that rightly gives no advice (rheostat.lr_range.MIN_DESCENT).
    document = shrink(load_example("multi-objective"), max_trials=3, epochs=2, lr_steps=100)
    results = run_study(document, tmp_path)
    status = results["status"]
    assert status["phase"] == "Succeeded"
    assert status["trials"]["complete"] == 3
    assert "suggestedLr" in status["lrRangeTest"]
    assert status["paretoFront"]["size"] >= 1
    for entry in status["paretoFront"]["trials"]:
        assert set(entry["values"]) == {"accuracy", "weights"}
        assert entry["values"]["weights"] > 100  # a real CNN's weight count
