"""Whole studies on this machine: trainer processes, metrics scraped, SQLite storage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from rheostat.backends.local.runner import LocalRunner, RunOptions
from rheostat.engine import Engine
from rheostat.spec import study_from_mapping
from tests.studies import synthetic_study

ALGORITHMS = ["grid", "random", "tpe", "bayesian", "cmaes", "qmc"]


def run_local(document: dict[str, object], workdir: Path) -> Engine:
    study = study_from_mapping(document)
    with LocalRunner(study, RunOptions(workdir=workdir, show_progress=False)) as runner:
        return runner.run()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_runs_a_whole_study(algorithm: str, tmp_path: Path) -> None:
    engine = run_local(synthetic_study(algorithm=algorithm, args=["--steps", "2"]), tmp_path)
    assert engine.phase == "Succeeded"
    trials = engine.trials()
    assert [t.state for t in trials] == ["complete"] * 6
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6, "a parameter set ran twice"
    best = engine.best()
    assert best is not None
    assert best.value is not None
    assert best.value >= 0
    # Every trial really ran: its own log and termination message are on disk.
    messages = sorted((tmp_path / "trials").glob("t*/termination-message.json"))
    assert len(messages) == 6
    assert json.loads(messages[0].read_text())["metrics"]["loss"] >= 0


def test_failed_trials_are_reported_and_the_study_goes_on(tmp_path: Path) -> None:
    budget = {"maxTrials": 4, "parallelism": 2, "maxFailedTrials": 1}
    document = synthetic_study(args=["--fault", "crash", "--fault-on-trial", "1"], budget=budget)
    engine = run_local(document, tmp_path)
    assert engine.phase == "Succeeded"
    states = {t.number: t for t in engine.trials()}
    assert states[1].state == "failed"
    assert "exited with code 1" in str(states[1].reason)
    assert "injected crash" in str(states[1].reason)
    assert engine.counts().complete == 3


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("nan", "is nan"), ("inf", "is inf"), ("missing", "was never reported")],
)
def test_unusable_objectives_fail_the_trial(fault: str, reason: str, tmp_path: Path) -> None:
    budget = {"maxTrials": 2, "parallelism": 1, "maxFailedTrials": 0}
    # A long scrape interval: the final value must come from the termination message alone.
    document = synthetic_study(
        args=["--fault", fault, "--fault-on-trial", "0"], budget=budget, scrape_interval=300
    )
    engine = run_local(document, tmp_path)
    trial = engine.trials()[0]
    assert trial.state == "failed"
    assert reason in str(trial.reason)
    assert engine.phase == "Failed"  # maxFailedTrials=0: the first failure ends it
    assert "maxFailedTrials=0" in str(engine.failure_reason)


def test_a_hanging_trial_is_timed_out_and_killed(tmp_path: Path) -> None:
    budget = {"maxTrials": 2, "parallelism": 2, "trialTimeout": 2, "maxFailedTrials": 1}
    document = synthetic_study(args=["--fault", "hang", "--fault-on-trial", "0"], budget=budget)
    started = time.monotonic()
    engine = run_local(document, tmp_path)
    assert time.monotonic() - started < 30
    hung = engine.trials()[0]
    assert hung.state == "failed"
    assert hung.reason == "timed out after 2s"
    assert engine.trials()[1].state == "complete"


def test_pruning_stops_bad_trials_early(tmp_path: Path) -> None:
    document = synthetic_study(
        algorithm="random",
        args=["--steps", "6", "--step-seconds", "0.25"],
        budget={"maxTrials": 10, "parallelism": 2},
        pruner="successive-halving",
        scrape_interval=0.1,
    )
    engine = run_local(document, tmp_path)
    assert engine.phase == "Succeeded"
    pruned = [t for t in engine.trials() if t.state == "pruned"]
    complete = [t for t in engine.trials() if t.state == "complete"]
    assert pruned, "no trial was pruned"
    assert all(t.duration is not None for t in pruned + complete)
    # A pruned trial's process was stopped: it ran fewer steps than a complete one.
    assert min(max(t.intermediate) for t in complete) > min(max(t.intermediate) for t in pruned)


def test_lr_range_test_runs_first_and_narrows(tmp_path: Path) -> None:
    document = synthetic_study(lr_test=True, budget={"maxTrials": 3, "parallelism": 3})
    engine = run_local(document, tmp_path)
    status = engine.status()["lrRangeTest"]
    low, high = status["narrowedTo"]
    assert 1e-5 <= low < status["suggestedLr"] < high <= 1.0
    assert all(low <= float(t.params["lr"]) <= high for t in engine.trials())
    log = (tmp_path / "trials" / "lr-range-test" / "log.txt").read_text()
    assert "synthetic lr-range-test" in log


def _counted_trials(workdir: Path) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{workdir / 'study.db'}"
    study = optuna.load_study(study_name="resume", storage=storage)
    return [
        t
        for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get("rheostat:kind", "counted") == "counted"
    ]


def _trainers_running(marker: str) -> list[str]:
    # "--": the marker starts with dashes and must not be read as an option of pgrep.
    found = subprocess.run(
        ["pgrep", "-f", "--", marker], capture_output=True, text=True, check=False
    )
    assert found.returncode in (0, 1), found.stderr  # 1: no process matched
    return found.stdout.split()


def test_ctrl_c_stops_everything_and_the_same_command_resumes(tmp_path: Path, write_study) -> None:  # type: ignore[no-untyped-def]
    marker = "--seed=918273"
    document = synthetic_study(
        "resume",
        # Trials of several seconds, so Ctrl-C lands while some are still running.
        args=["--steps", "10", "--step-seconds", "0.5", marker],
        budget={"maxTrials": 6, "parallelism": 2},
    )
    path = write_study(document)
    workdir = tmp_path / "work"
    command = [sys.executable, "-m", "rheostat.cli", "run", str(path), "--workdir", str(workdir)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Watch the trials' result files, not the database: reading SQLite while the
    # tuner writes it can block for seconds and let the whole study finish first.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if len(list(workdir.glob("trials/t*/termination-message.json"))) >= 3:
            break
        time.sleep(0.1)
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=30)
    assert first.returncode == 130, stderr
    assert "Run the same command again to resume" in stderr
    assert _trainers_running(marker) == [], "a trainer outlived Ctrl-C"
    finished_before = {
        t.number: t.params for t in _counted_trials(workdir) if t.state.is_finished()
    }
    assert 1 <= len(finished_before) < 6

    second = subprocess.run(command, capture_output=True, text=True, check=False, timeout=240)
    assert second.returncode == 0, second.stderr
    counted = _counted_trials(workdir)
    assert len(counted) == 6
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in counted)
    for number, params in finished_before.items():  # kept, not repeated
        assert next(t for t in counted if t.number == number).params == params
    assert len({tuple(sorted(t.params.items())) for t in counted}) == 6
    results = json.loads((workdir / "results.json").read_text())
    assert results["status"]["phase"] == "Succeeded"
    assert (workdir / "results.csv").read_text().count("\n") == 7
    assert (workdir / "history.png").stat().st_size > 1000


def test_a_changed_spec_is_not_mixed_into_an_old_study(tmp_path: Path, write_study) -> None:  # type: ignore[no-untyped-def]
    document = synthetic_study(
        "mixed", args=["--steps", "1"], budget={"maxTrials": 1, "parallelism": 1}
    )
    workdir = tmp_path / "work"
    base = [sys.executable, "-m", "rheostat.cli", "run", "--no-progress", "--workdir", str(workdir)]
    assert (
        subprocess.run(
            [*base, str(write_study(document))], capture_output=True, check=False
        ).returncode
        == 0
    )
    document["spec"]["objective"]["direction"] = "maximize"
    again = subprocess.run(
        [*base, str(write_study(document))], capture_output=True, text=True, check=False
    )
    assert again.returncode == 2
    assert "different spec" in again.stderr
    # The budget may grow: the same study continues.
    document["spec"]["objective"]["direction"] = "minimize"
    document["spec"]["budget"]["maxTrials"] = 2
    grown = subprocess.run(
        [*base, str(write_study(document))], capture_output=True, text=True, check=False
    )
    assert grown.returncode == 0, grown.stderr
    assert len(_counted_trials_named(workdir, "mixed")) == 2


def _counted_trials_named(workdir: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{workdir / 'study.db'}")
    return [
        t for t in study.get_trials() if t.user_attrs.get("rheostat:kind", "counted") == "counted"
    ]


@pytest.mark.slow
def test_digits_study_with_the_lr_range_test(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ)
    study = (root / "examples" / "digits.yaml").read_text()
    study = study.replace("maxTrials: 12", "maxTrials: 3")
    path = tmp_path / "digits.yaml"
    path.write_text(study)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "rheostat.cli",
            "run",
            str(path),
            "--workdir",
            str(tmp_path / "w"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr + run.stdout
    results = json.loads((tmp_path / "w" / "results.json").read_text())
    assert results["status"]["trials"]["finished"] == 3
    assert results["status"]["bestTrial"]["value"] > 0.2  # real training: above chance (0.1)
    assert 1e-6 < results["status"]["lrRangeTest"]["suggestedLr"] < 3.0
    assert (tmp_path / "w" / "lr_range_test.png").stat().st_size > 1000


def test_apply_schedule_gives_each_trial_base_and_peak(tmp_path: Path) -> None:
    """`apply: schedule`: the LR parameter is the peak, searched near the test's peak;
    each trial's trainer gets RHEOSTAT_LR_BASE/PEAK with its own peak and the test's ratio."""
    document = synthetic_study(lr_test=True, budget={"maxTrials": 3, "parallelism": 3})
    document["spec"]["lrRangeTest"]["apply"] = "schedule"
    engine = run_local(document, tmp_path)
    status = engine.status()["lrRangeTest"]
    assert status["policy"] == "schedule"
    base, peak = status["schedule"]["base"], status["schedule"]["peak"]
    low, high = status["narrowedTo"]
    assert low <= peak <= high
    assert base < peak
    for trial in engine.trials():
        log = (tmp_path / "trials" / f"t{trial.number:04d}" / "log.txt").read_text()
        line = next(x for x in log.splitlines() if x.startswith("synthetic schedule:"))
        got = dict(part.split("=") for part in line.split(": ", 1)[1].split())
        assert float(got["peak"]) == float(trial.params["lr"])
        assert float(got["base"]) / float(got["peak"]) == pytest.approx(base / peak)
