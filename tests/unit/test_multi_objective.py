"""Studies with several objectives: the spec, the engine, the Pareto front and its readers."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import optuna
import pytest
from rich.console import Console

from rheostat.backends.kubernetes.manifests import record_from_trial, trial_status
from rheostat.backends.kubernetes.present import study_lines
from rheostat.backends.kubernetes.read import study_results, study_row
from rheostat.backends.local.plots import write_plots
from rheostat.backends.local.report import StudyResults, print_summary, write_results
from rheostat.engine import Engine, Finished, Progress, StartTrial, TrialRecord, TrialView
from rheostat.objectives import (
    MAX_FRONT_IN_STATUS,
    best_of_each,
    front_status,
    pareto_front,
    thin,
)
from rheostat.sampling import make_sampler
from rheostat.space import build_space
from rheostat.spec import InvalidStudyError, Objective, StudySpec, study_from_mapping
from tests.bad_specs import objectives_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

GOALS = (
    Objective(metric="accuracy", direction="maximize"),
    Objective(metric="size", direction="minimize"),
)


def make_spec(algorithm: str = "nsga2", max_trials: int = 6, **spec: Any) -> StudySpec:
    document = objectives_study(algorithm=algorithm)
    document["spec"].pop("lrRangeTest")
    document["spec"]["budget"] = {"maxTrials": max_trials, "parallelism": 2}
    document["spec"].update(spec)
    return study_from_mapping(document).spec


def view(number: int, accuracy: float, size: float, state: str = "complete") -> TrialView:
    return TrialView(
        number=number,
        state=state,  # type: ignore[arg-type]
        params={"lr": 0.1},
        value=accuracy,
        reason=None,
        intermediate={},
        duration=1.0,
        values=(accuracy, size),
    )


# ----- spec ---------------------------------------------------------------------------


def test_a_study_with_objectives_is_valid_and_lists_its_goals() -> None:
    spec = make_spec()
    assert spec.multi_objective
    assert [g.metric for g in spec.goals] == ["accuracy", "size"]
    assert spec.primary.metric == "accuracy"
    assert spec.objective is None


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        ({"earlyStopping": {"pruner": "hyperband"}}, "spec.earlyStopping.pruner", "cannot prune"),
        (
            {"objectives": [{"metric": "a"}, {"metric": "a", "direction": "minimize"}]},
            "spec.objectives",
            "different metrics",
        ),
        ({"objective": {"metric": "accuracy"}}, "spec.objective", "exactly one of objective"),
        ({"objectives": [{"metric": f"m{i}"} for i in range(9)]}, "spec.objectives", "at most 8"),
    ],
)
def test_inconsistent_objectives_are_refused_naming_the_field(
    change: dict[str, Any], path: str, message: str
) -> None:
    document = objectives_study()
    document["spec"].update(change)
    with pytest.raises(InvalidStudyError) as raised:
        study_from_mapping(document)
    assert any(p.path == path and message in p.message for p in raised.value.problems), str(
        raised.value
    )


@pytest.mark.parametrize("algorithm", ["nsga2", "tpe", "bayesian", "random", "qmc"])
def test_each_multi_objective_sampler_proposes_and_learns(algorithm: str) -> None:
    engine = Engine.open(
        make_spec(algorithm, max_trials=8),
        optuna.create_study(directions=["maximize", "minimize"]),
    )
    _run(engine)
    assert engine.phase == "Succeeded"
    assert engine.counts().complete == 8
    assert engine.front()


def test_nsga2_is_seeded_like_every_sampler() -> None:
    spec = make_spec("nsga2")
    space = build_space(spec.parameters)
    firsts = []
    for _ in range(2):
        study = optuna.create_study(
            directions=["maximize", "minimize"], sampler=make_sampler(spec.algorithm, space)
        )
        firsts.append(study.ask(dict(space.distributions)).params)
    assert firsts[0] == firsts[1]
    assert isinstance(make_sampler(spec.algorithm, space), optuna.samplers.NSGAIISampler)


def test_a_grid_search_over_several_objectives_covers_the_grid() -> None:
    parameters = [{"name": "x", "type": "int", "min": 0, "max": 2}]
    engine = Engine.open(
        make_spec("grid", max_trials=10, parameters=parameters),
        optuna.create_study(directions=["maximize", "minimize"]),
    )
    _run(engine)
    assert engine.counts().complete == 3  # the grid's size, not maxTrials


# ----- engine -------------------------------------------------------------------------


def _values(params: dict[str, Any]) -> dict[str, float]:
    """Accuracy rises with momentum (or x), size with it too: a real trade-off."""
    m = float(params.get("momentum", params.get("x", 0)))
    return {"accuracy": m, "size": m * m + 0.1 * float(params.get("layers", 1))}


def _run(engine: Engine) -> None:
    now = 0.0
    while not engine.done:
        actions = engine.next_actions(now)
        started = [a for a in actions if isinstance(a, StartTrial)]
        assert started or engine.running, "the engine stalled"
        for start in started:
            engine.observe(Finished(start.number, 0, _values(start.params)), now)
        now += 1


def test_values_are_told_to_optuna_and_the_front_is_optunas() -> None:
    engine = Engine.open(make_spec(), optuna.create_study(directions=["maximize", "minimize"]))
    _run(engine)
    optuna_front = {t.number for t in engine.study.best_trials}
    assert {t.number for t in engine.front()} == optuna_front
    for trial in engine.trials():
        assert trial.values == tuple(_values(trial.params).values())
    status = engine.status()
    assert "bestTrial" not in status
    front = status["paretoFront"]
    assert front["size"] == len(optuna_front)
    entry = front["trials"][0]
    assert set(entry) == {"number", "values", "params"}
    assert set(entry["values"]) == {"accuracy", "size"}


def test_a_trial_missing_an_objective_fails_naming_it() -> None:
    engine = Engine.open(make_spec(), optuna.create_study(directions=["maximize", "minimize"]))
    first = next(a for a in engine.next_actions(0.0) if isinstance(a, StartTrial))
    engine.observe(Finished(first.number, 0, {"accuracy": 0.9}), 1.0)
    trial = next(t for t in engine.trials() if t.number == first.number)
    assert trial.state == "failed"
    assert trial.reason == "the objective metric 'size' was never reported"


def test_the_last_report_of_each_objective_stands_in_for_a_missing_result() -> None:
    engine = Engine.open(make_spec(), optuna.create_study(directions=["maximize", "minimize"]))
    first = next(a for a in engine.next_actions(0.0) if isinstance(a, StartTrial))
    metrics = {"accuracy": 0.5, "size": 3.0}
    # Reports never prune (Optuna cannot) and never raise, even for several objectives.
    assert engine.observe(Progress(first.number, 0, 0.5, metrics), 0.5) == []
    assert engine.observe(Progress(first.number, 1, 0.7, {**metrics, "accuracy": 0.7}), 0.6) == []
    engine.observe(Finished(first.number, 0, {"accuracy": 0.8}), 1.0)
    trial = next(t for t in engine.trials() if t.number == first.number)
    assert trial.values == (0.8, 3.0)
    assert "no final 'size'" in str(trial.reason)


def test_an_operator_restart_rebuilds_the_values_and_the_front() -> None:
    spec = make_spec(max_trials=6)
    engine = Engine.open(spec, optuna.create_study(directions=["maximize", "minimize"]))
    _run(engine)
    records = [engine.record(t.number) for t in engine.trials()]
    # What a TuningTrial stores and gives back.
    stored = [
        record_from_trial(
            {"spec": {"number": r.number, "params": dict(r.params)}, "status": trial_status(r)}
        )
        for r in records
    ]
    assert [r.values for r in stored] == [r.values for r in records]
    rebuilt = Engine.rebuild(spec, stored)
    assert rebuilt.status()["paretoFront"] == engine.status()["paretoFront"]
    assert rebuilt.phase == "Succeeded"


def test_trial_status_shows_every_objective() -> None:
    record = TrialRecord(number=3, params={}, state="complete", value=0.97, values=(0.97, 12345.0))
    status = trial_status(record)
    assert status["values"] == [0.97, 12345.0]
    assert status["display"]["value"] == "0.97 / 1.234e+04"


# ----- the Pareto front ---------------------------------------------------------------


def test_pareto_front_respects_each_direction() -> None:
    trials = [
        view(0, 0.90, 100.0),  # front: smallest
        view(1, 0.95, 200.0),  # front
        view(2, 0.94, 250.0),  # dominated by 1
        view(3, 0.99, 900.0),  # front: most accurate
        view(4, 0.99, 950.0),  # dominated by 3
        view(5, 1.00, 50.0, state="pruned"),  # pruned: never on the front
        view(6, 0.95, 200.0),  # a tie with 1: both stay, as in Optuna
    ]
    assert [t.number for t in pareto_front(trials, GOALS)] == [0, 1, 3, 6]
    flipped = (GOALS[0], Objective(metric="size", direction="maximize"))
    assert [t.number for t in pareto_front(trials, flipped)] == [4]  # beats 3 on size now


def test_the_front_in_status_is_bounded_and_keeps_both_ends() -> None:
    trials = [view(n, n / 100, float(n)) for n in range(60)]  # every trial on the front
    status = front_status(trials, GOALS)
    assert status is not None
    assert status["size"] == 60
    numbers = [e["number"] for e in status["trials"]]
    assert len(numbers) == MAX_FRONT_IN_STATUS
    assert numbers[0] == 0
    assert numbers[-1] == 59
    assert len(json.dumps(status)) < 4000
    assert thin(trials[:5]) == trials[:5]
    assert front_status([], GOALS) is None


def test_each_objectives_best_is_the_fronts_extreme_in_its_direction() -> None:
    trials = [
        view(0, 0.90, 100.0),
        view(1, 0.95, 200.0),
        view(2, 0.99, 900.0),
        view(3, 0.98, 950.0),  # dominated: its values are no one's best
        view(4, 1.00, 10.0, state="pruned"),  # pruned: never counts
    ]
    front = pareto_front(trials, GOALS)
    assert best_of_each(front, GOALS) == {"accuracy": 0.99, "size": 100.0}
    status = front_status(trials, GOALS)
    assert status is not None
    assert status["best"] == {"accuracy": 0.99, "size": 100.0}
    assert best_of_each([], GOALS) == {}


def test_each_objectives_best_is_kept_when_thinning_drops_its_trial() -> None:
    """Three objectives: the front in status is thinned along the first only."""
    goals = (*GOALS, Objective(metric="latency", direction="minimize"))
    trials = [
        TrialView(n, "complete", {"lr": 0.1}, n / 100, None, {}, 1.0, (n / 100, float(n), 1.0))
        for n in range(60)
    ]
    special = TrialView(60, "complete", {"lr": 0.1}, 0.3, None, {}, 1.0, (0.3, 30.5, 0.5))
    status = front_status([*trials, special], goals)
    assert status is not None
    assert 60 not in [e["number"] for e in status["trials"]]  # thinned away
    assert status["best"] == {"accuracy": 0.59, "size": 0.0, "latency": 0.5}


# ----- results files, table, plots ----------------------------------------------------


def _results(metrics: tuple[str, ...] = ("accuracy", "size")) -> StudyResults:
    document = objectives_study(metrics=metrics)
    spec = study_from_mapping(document).spec
    trials = [view(0, 0.9, 100.0), view(1, 0.95, 200.0), view(2, 0.94, 250.0)]
    if len(metrics) > 2:
        trials = [
            TrialView(t.number, t.state, t.params, t.value, None, {}, 1.0, (*(t.values or ()), 1.0))
            for t in trials
        ]
    failed = TrialView(
        3, "failed", {"lr": 0.2}, None, "the objective metric 'size' was never reported", {}, 1.0
    )
    status = {
        "phase": "Succeeded",
        "trials": {"running": 0, "complete": 3, "pruned": 0, "failed": 1, "finished": 4},
        "paretoFront": front_status(trials, spec.goals),
    }
    return StudyResults(name="mo", spec=spec, status=status, trials=[*trials, failed])


def test_results_files_carry_every_value_and_the_pareto_flag(tmp_path: Path) -> None:
    json_path, csv_path = write_results(_results(), tmp_path)
    document = json.loads(json_path.read_text())
    assert [o["metric"] for o in document["objectives"]] == ["accuracy", "size"]
    assert "objective" not in document
    rows = {t["number"]: t for t in document["trials"]}
    assert rows[1]["values"] == {"accuracy": 0.95, "size": 200.0}
    assert [n for n, t in rows.items() if t["pareto"]] == [0, 1]
    assert rows[3]["values"] is None
    assert rows[3]["pareto"] is False
    assert document["status"]["paretoFront"]["size"] == 2
    with csv_path.open() as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0])[:5] == ["number", "state", "accuracy", "size", "pareto"]
    assert [r["pareto"] for r in table] == ["True", "True", "False", "False"]
    assert table[3]["accuracy"] == ""
    assert table[3]["size"] == ""


def test_the_table_lists_the_front(tmp_path: Path) -> None:
    console = Console(record=True, width=160)
    print_summary(_results(), console)
    text = console.export_text()
    assert "Pareto front: 2 trials" in text
    assert "size=200" in text
    assert "Best trial" not in text


@pytest.mark.parametrize("metrics", [("accuracy", "size"), ("accuracy", "size", "latency")])
def test_a_pareto_plot_is_written(metrics: tuple[str, ...], tmp_path: Path) -> None:
    written = write_plots(_results(metrics), tmp_path)
    assert tmp_path / "pareto.png" in written
    assert (tmp_path / "pareto.png").stat().st_size > 10_000


# ----- a cluster study read back ------------------------------------------------------


def test_a_cluster_study_shows_its_front() -> None:
    results = _results()
    body = {
        "apiVersion": "rheostat.dev/v1alpha1",
        "kind": "TuningStudy",
        "metadata": {"name": "mo", "namespace": "default"},
        "spec": objectives_study()["spec"],
        "status": results.status,
    }
    trials = [
        {
            "spec": {"study": "mo", "number": t.number, "params": t.params},
            "status": trial_status(
                TrialRecord(t.number, t.params, t.state, value=t.value, values=t.values)
            ),
        }
        for t in results.trials
    ]
    read = study_results(body, trials)
    assert read.status["paretoFront"]["size"] == 2
    assert [t.number for t in read.front()] == [0, 1]
    row = study_row(body)
    assert row.front == 2
    assert "front of 2" in study_lines([row], namespaces=False)


# ----- warm start ---------------------------------------------------------------------


def test_configurations_warm_start_a_study_with_objectives() -> None:
    spec = make_spec(warmStart={"configurations": [{"lr": 0.01, "momentum": 0.5}]})
    engine = Engine.open(spec, optuna.create_study(directions=["maximize", "minimize"]))
    first = next(a for a in engine.next_actions(0.0) if isinstance(a, StartTrial))
    assert (first.params["lr"], first.params["momentum"]) == (0.01, 0.5)


def test_an_earlier_study_with_objectives_seeds_nothing_and_says_so() -> None:
    document = objectives_study()
    document["spec"]["objective"] = {"metric": "accuracy"}
    del document["spec"]["objectives"]
    document["spec"]["warmStart"] = {"fromStudy": "earlier"}
    document["spec"].pop("lrRangeTest")
    spec = study_from_mapping(document).spec
    earlier = [
        TrialRecord(
            0,
            {"lr": 0.1, "momentum": 0.5, "layers": 2, "optimizer": "sgd"},
            "complete",
            value=0.9,
            values=(0.9, 1000.0),
        )
    ]
    engine = Engine.open(spec, optuna.create_study(direction="maximize"), seeds=earlier)
    assert engine.warnings == [
        "earlier has several objectives and this study one: nothing was told"
    ]
    assert engine.study.get_trials() == []
