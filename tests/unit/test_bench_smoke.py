"""The benchmarks' smoke run: every section end to end at tiny sizes (bench/run.py --smoke).

It runs the real engine, real training, real subprocess trials and the peers, so
a change that breaks a benchmark is caught in CI rather than at the next
``make bench``. Output goes to a temporary folder; committed results are untouched.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

EXPECTED = [
    "machine.json",
    "SUMMARY.md",
    "sample_efficiency.json",
    "sample_efficiency.csv",
    "sample_efficiency.md",
    "sample_efficiency.png",
    "sample_efficiency_runs.json",
    "synthetic.json",
    "synthetic.csv",
    "synthetic.md",
    "synthetic.png",
    "multi_objective.json",
    "multi_objective.md",
    "multi_objective.png",
    "multi_objective_runs.json",
    "overhead.json",
    "overhead.csv",
    "overhead.md",
    "sampler_latency.json",
    "sampler_latency.csv",
    "sampler_latency.md",
    "sampler_latency.png",
]


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench-smoke")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RHEOSTAT_")}
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        # A bound, not a measurement: every section at tiny sizes took ~7 min on 2
        # cores at load 20; below pytest's own 600 s so the failure shows its output.
        timeout=540,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return out


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@pytest.mark.slow
def test_every_result_file_is_written(smoke_results: Path) -> None:
    for name in EXPECTED:
        path = smoke_results / name
        assert path.exists(), f"{name} missing"
        assert path.stat().st_size > 0, f"{name} is empty"
    assert (smoke_results / "sample_efficiency.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_machine_info_names_the_versions(smoke_results: Path) -> None:
    machine = _load(smoke_results / "machine.json")
    assert machine["cores"] >= 1
    assert machine["versions"]["optuna"] != "not installed"
    assert machine["versions"]["torch"] != "not installed"
    assert set(machine["section_seconds"]) == {
        "sample_efficiency",
        "synthetic",
        "multi_objective",
        "overhead",
        "latency",
    }


@pytest.mark.slow
def test_sample_efficiency_numbers_are_sane(smoke_results: Path) -> None:
    summary = _load(smoke_results / "sample_efficiency.json")
    algorithms = {row["algorithm"] for row in summary["rows"]}
    assert algorithms == {"grid", "random", "tpe", "bayesian", "tpe+lr", "bayesian+lr"}
    for row in summary["rows"]:
        assert 0.0 < row["final_best_median"] <= 1.0
        assert row["total_steps_median"] > 0
        if row["algorithm"].endswith("+lr"):
            # The LR test ran, cost steps, and is charged as part of one trial's cost.
            assert row["lr_test_steps_median"] >= 10
            assert 0 < row["lr_test_fraction_of_trial"] < 2
    assert summary["lr_tests"], "the LR range test left no record"
    for test in summary["lr_tests"]:
        assert test["suggested_lr"] > 0


@pytest.mark.slow
def test_synthetic_regret_is_non_negative(smoke_results: Path) -> None:
    with (smoke_results / "synthetic.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["algorithm"] for r in rows} == {"grid", "random", "tpe", "bayesian", "cmaes", "qmc"}
    regret_columns = [c for c in rows[0] if c.startswith("regret_at_") and c.endswith("_median")]
    assert regret_columns
    for row in rows:
        for column in regret_columns:
            value = float(row[column])
            assert math.isfinite(value)
            assert value >= -1e-9


@pytest.mark.slow
def test_overhead_measures_rheostat_and_optuna(smoke_results: Path) -> None:
    summary = _load(smoke_results / "overhead.json")
    assert summary["trainer_seconds_median"] > 0
    rows = {row["runner"].split()[0]: row for row in summary["rows"]}
    for runner in ("rheostat", "plain"):
        assert rows[runner]["error"] == ""
        assert rows[runner]["wall_seconds"] > 0
        assert math.isfinite(rows[runner]["best_value"])
    # Ray Tune is optional (the `bench` extra): it has numbers or the exact error.
    ray = rows["Ray"]
    assert ray["error"] or ray["wall_seconds"] > 0


@pytest.mark.slow
def test_sampler_latency_has_every_sampler(smoke_results: Path) -> None:
    summary = _load(smoke_results / "sampler_latency.json")
    samplers = {row["sampler"] for row in summary["rows"]}
    assert samplers == {"tpe", "bayesian"}
    measured = [r for r in summary["rows"] if r["median_seconds_per_ask"] is not None]
    assert measured
    assert all(r["median_seconds_per_ask"] > 0 for r in measured)


def _smoke(module: str, out: Path) -> None:
    """`python -m bench.<module> --smoke --out <out>`, outside any study's environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RHEOSTAT_")}
    result = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", "--smoke", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


@pytest.mark.slow
def test_lr_advice_scores_every_rule(tmp_path: Path) -> None:
    """bench/lr_advice.py --smoke: ground-truth grid, LR tests, scoring and cost, end to end."""
    _smoke("lr_advice", tmp_path)
    summary = _load(tmp_path / "lr_advice.json")
    assert set(summary["summary"]) == {"valley", "steep", "minimum", "slide"}
    assert len(summary["workloads"]) >= 4
    for workload in summary["workloads"]:
        assert workload["band"]["lrs"], "a band always holds the best grid LR"
        assert workload["curves"]
        assert workload["curves"][0]["rules"]["minimum"]["lr"] > 0
    assert summary["realistic"]["lr_test_share"] > 0
    assert "## LR test cost" in (tmp_path / "lr_advice.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_lr_schedule_scores_the_advised_peak(tmp_path: Path) -> None:
    """bench/lr_schedule.py --smoke: one-cycle grid, LR tests, advised schedules, scoring."""
    _smoke("lr_schedule", tmp_path)
    summary = _load(tmp_path / "lr_schedule.json")
    assert len(summary["workloads"]) >= 4
    for workload in summary["workloads"]:
        assert workload["band"]["lrs"], "a band always holds the best grid peak"
        advised = [c for c in workload["curves"] if c["advised"]]
        assert advised, "every workload's curve has a steep descent"
        base, peak = advised[0]["advised"]
        assert 0 < base < peak
        assert advised[0]["median_accuracy"] is not None
    assert (tmp_path / "lr_schedule.png").stat().st_size > 0
    assert "peak in band" in (tmp_path / "lr_schedule.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_gp_ask_times_both_samplers(tmp_path: Path) -> None:
    """bench/gp_ask.py --smoke: Optuna's GP and the bounded one, past the bound."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.gp_ask", "--smoke", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    summary = _load(tmp_path / "gp_ask_smoke.json")
    assert summary["rows"][-1]["trials"] > summary["maxHistory"]
    for row in summary["rows"]:
        for sampler in ("optuna", "bounded"):
            assert row[sampler]["first_s"] > 0
            assert row[sampler]["next_median_s"] > 0
