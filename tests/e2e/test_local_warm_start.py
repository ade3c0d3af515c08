"""A local study warm-started from an earlier local run: told its trials, runs none again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from rheostat.backends.local.report import StudyResults, write_results
from rheostat.backends.local.runner import LocalRunError, LocalRunner, RunOptions, open_study
from rheostat.backends.local.seeds import load_seeds
from rheostat.cli import main
from rheostat.engine import Engine, Finished, StartTrial, TrialRecord
from rheostat.spec import TuningStudy, study_from_mapping
from tests.studies import synthetic_study

CONFIG = {"lr": 0.05, "momentum": 0.5, "layers": 2, "optimizer": "adam"}


def run_local(document: dict[str, object], workdir: Path) -> Engine:
    study = study_from_mapping(document)
    with LocalRunner(study, RunOptions(workdir=workdir, show_progress=False)) as runner:
        engine = runner.run()
        write_results(StudyResults.from_engine(engine), workdir)
        return engine


@pytest.mark.parametrize("source", ["results.json", "study.db"])
def test_a_study_warm_started_from_an_earlier_run(source: str, tmp_path: Path) -> None:
    earlier = run_local(synthetic_study("before", args=["--steps", "2"]), tmp_path / "before")
    old = [t.params for t in earlier.trials()]
    assert len(old) == 6

    document = synthetic_study(
        "after", args=["--steps", "2"], budget={"maxTrials": 3, "parallelism": 1}
    )
    document["spec"]["warmStart"] = {
        "configurations": [CONFIG],
        "fromStudy": str(tmp_path / "before" / source),
    }
    engine = run_local(document, tmp_path / "after")

    assert engine.phase == "Succeeded"
    # The sampler holds the old trials, told and marked, but they are not this study's.
    told = [t for t in engine.study.get_trials() if t.user_attrs.get("rheostat:kind") == "seeded"]
    assert sorted(t.values for t in told) == sorted([t.value] for t in earlier.trials())
    assert all(t.state == TrialState.COMPLETE for t in told)
    trials = engine.trials()
    assert len(trials) == 3
    assert engine.counts().finished == 3
    # The configuration ran first; no old trial ran again: 3 trainers ran, none old.
    assert trials[0].params == CONFIG
    assert len(list((tmp_path / "after" / "trials").glob("t*"))) == 3
    assert not [t.params for t in trials if t.params in old]
    results = json.loads((tmp_path / "after" / "results.json").read_text())
    assert [t["number"] for t in results["trials"]] == [t.number for t in trials]


def test_a_missing_earlier_study_stops_the_run_before_any_trial(tmp_path: Path) -> None:
    document = synthetic_study("after")
    document["spec"]["warmStart"] = {"fromStudy": str(tmp_path / "nowhere" / "results.json")}
    with pytest.raises(LocalRunError, match=r"spec\.warmStart\.fromStudy"):
        run_local(document, tmp_path / "after")
    assert not (tmp_path / "after" / "trials").exists()


def test_a_resumed_warm_study_reads_its_seeds_from_its_own_store(tmp_path: Path) -> None:
    run_local(synthetic_study("before", args=["--steps", "2"]), tmp_path / "before")
    document = synthetic_study("after", args=["--steps", "2"], budget={"maxTrials": 2})
    document["spec"]["warmStart"] = {"fromStudy": str(tmp_path / "before" / "study.db")}
    run_local(document, tmp_path / "after")
    (tmp_path / "before" / "study.db").unlink()  # gone: a resume must not need it
    document["spec"]["budget"] = {"maxTrials": 4}
    engine = run_local(document, tmp_path / "after")
    stored = optuna.load_study(
        study_name="after", storage=f"sqlite:///{tmp_path / 'after' / 'study.db'}"
    )
    kinds = [t.user_attrs.get("rheostat:kind", "counted") for t in stored.get_trials()]
    assert kinds.count("seeded") == 6
    assert engine.counts().finished == 4


def test_a_study_name_means_its_default_work_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run_local(synthetic_study("before", args=["--steps", "2"]), Path("runs/before"))
    document = synthetic_study("after", args=["--steps", "2"], budget={"maxTrials": 2})
    document["spec"]["warmStart"] = {"fromStudy": "before"}
    engine = run_local(document, Path("runs/after"))
    assert engine.status()["warmStart"] == {"seeded": 6}
    assert engine.counts().finished == 2


def finished_study(document: dict[str, Any], workdir: Path, values: list[float]) -> Engine:
    """A local study whose trials ended with `values`, its files written as a run
    writes them (no trainer needed: the engine is told each trial's end)."""
    study = study_from_mapping(document)
    metric = study.spec.primary.metric
    engine = Engine.open(study.spec, open_study(study, workdir), seeds=seeds_for(study))
    for value in values:
        (start,) = [a for a in engine.next_actions(0.0) if isinstance(a, StartTrial)]
        engine.observe(Finished(start.number, 0, {metric: value}), 1.0)
    write_results(StudyResults.from_engine(engine), workdir)
    return engine


def seeds_for(study: TuningStudy) -> list[TrialRecord]:
    return load_seeds(study.spec) if study.spec.warm_start else []


def one_by_one(name: str, count: int, objective: dict[str, str] | None = None) -> dict[str, Any]:
    document = synthetic_study(name, budget={"maxTrials": count, "parallelism": 1})
    if objective is not None:
        document["spec"]["objective"] = objective
    return document


@pytest.mark.parametrize("source", ["results.json", "study.db"])
@pytest.mark.parametrize(
    "objective",
    [
        {"metric": "accuracy", "direction": "maximize"},
        {"metric": "loss", "direction": "maximize"},
        {"metric": "accuracy", "direction": "minimize"},
    ],
    ids=["metric-and-direction", "direction", "metric"],
)
def test_a_study_that_optimised_something_else_cannot_seed(
    source: str, objective: dict[str, str], tmp_path: Path
) -> None:
    finished_study(one_by_one("before", 3), tmp_path / "before", [17.7, 3.0, 0.1])
    document = one_by_one("after", 2, objective)
    document["spec"]["warmStart"] = {"fromStudy": str(tmp_path / "before" / source)}
    with pytest.raises(LocalRunError, match=r"spec\.warmStart\.fromStudy") as refused:
        run_local(document, tmp_path / "after")
    assert "'loss' (minimize)" in str(refused.value)
    assert f"{objective['metric']!r} ({objective['direction']})" in str(refused.value)
    assert not (tmp_path / "after" / "trials").exists()


def test_renaming_a_study_in_its_work_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workdir = tmp_path / "runs"
    finished_study(one_by_one("first", 2), workdir, [0.5, 0.4])
    before = (workdir / "results.json").read_text()
    with pytest.raises(LocalRunError, match="holds study 'first', not 'second'"):
        open_study(study_from_mapping(one_by_one("second", 2)), workdir)
    path = tmp_path / "second.yaml"
    path.write_text(yaml.safe_dump(one_by_one("second", 2)))
    assert main(["run", str(path), "--workdir", str(workdir), "--no-progress"]) == 2
    assert "holds study 'first'" in capsys.readouterr().err
    assert (workdir / "results.json").read_text() == before
    names = optuna.get_all_study_names(f"sqlite:///{workdir / 'study.db'}")
    assert names == ["first"]


def test_status_reports_the_studys_own_best_not_a_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    finished_study(one_by_one("before", 3), tmp_path / "before", [0.001, 0.002, 0.003])
    document = one_by_one("after", 3)
    document["spec"]["warmStart"] = {"fromStudy": str(tmp_path / "before" / "study.db")}
    finished_study(document, tmp_path / "after", [0.5, 0.4, 0.6])
    best = json.loads((tmp_path / "after" / "results.json").read_text())["status"]["bestTrial"]
    assert best["value"] == 0.4
    capsys.readouterr()
    assert main(["status", str(tmp_path / "after")]) == 0
    out = capsys.readouterr().out
    assert f"best #{best['number']}: 0.4 " in out
    assert "0.001" not in out
    assert "3 complete" in out  # the seeds are not counted either


def test_seeds_are_told_over_the_range_the_lr_range_test_narrowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's case: bayesian, LR range test `apply: narrow`, warm start."""
    finished_study(one_by_one("before", 8), tmp_path / "before", [1.0 + n / 10 for n in range(8)])
    document = synthetic_study(
        "after",
        algorithm="bayesian",
        args=["--steps", "2"],
        budget={"maxTrials": 3, "parallelism": 1},
        lr_test=True,
    )
    document["spec"]["lrRangeTest"]["apply"] = "narrow"
    document["spec"]["warmStart"] = {"fromStudy": str(tmp_path / "before" / "study.db")}
    optuna.logging.enable_propagation()
    try:
        with caplog.at_level("WARNING", logger="optuna"):
            engine = run_local(document, tmp_path / "after")
    finally:
        optuna.logging.disable_propagation()
    assert engine.phase == "Succeeded"
    low, high = engine.status()["lrRangeTest"]["narrowedTo"]
    seeds = [t for t in engine.study.get_trials() if t.user_attrs.get("rheostat:kind") == "seeded"]
    assert seeds
    assert all(low <= t.params["lr"] <= high for t in seeds)
    assert all(t.distributions["lr"] == engine.space.distributions["lr"] for t in seeds)
    skipped = capsys.readouterr().err.count("warning: warm start skipped trial")
    assert skipped == 8 - len(seeds)
    assert not [r.message for r in caplog.records if "independent" in r.message], caplog.text
