"""Warm start: configurations run first and exactly once; an earlier study is told, not run."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from rheostat.engine import Engine, Finished, TrialRecord
from rheostat.spec import InvalidStudyError, Scalar, study_from_mapping
from tests.bad_specs import OPERATOR_ONLY_CASES, BadCase, bad_document
from tests.unit.test_engine import make_spec, open_engine, run_to_end, starts

FIRST: dict[str, Scalar] = {"lr": 0.01, "momentum": 0.9, "layers": 2, "optimizer": "sgd"}
SECOND: dict[str, Scalar] = {"lr": 0.001, "momentum": 0.5, "layers": 3, "optimizer": "adam"}
THIRD: dict[str, Scalar] = {"lr": 0.1}  # partial: the sampler fills in the rest


def earlier(count: int) -> list[TrialRecord]:
    """Finished trials of an earlier study over the same space."""
    return [
        TrialRecord(
            number=n,
            params={
                "lr": 10 ** -(n % 4 + 1),
                "momentum": 0.1 * n,
                "layers": 1 + n % 4,
                "optimizer": ("sgd", "adam")[n % 2],
            },
            state="pruned" if n % 3 == 0 else "complete",
            value=None if n % 3 == 0 else 1.0 / (n + 1),
            intermediate={0: 2.0, 1: 1.5} if n % 3 == 0 else {},
        )
        for n in range(count)
    ]


def warm(configurations: list[dict[str, Any]], **budget: Any) -> Any:
    return make_spec(
        warmStart={"configurations": configurations},
        budget={"maxTrials": 6, "parallelism": 1, **budget},
    )


@pytest.mark.parametrize("case", OPERATOR_ONLY_CASES, ids=lambda c: c.id)
def test_a_bad_configuration_names_its_field(case: BadCase) -> None:
    with pytest.raises(InvalidStudyError) as raised:
        study_from_mapping(bad_document(case))
    assert case.field in [p.path for p in raised.value.problems]


def test_configurations_run_first_in_order_and_count() -> None:
    engine = open_engine(warm([FIRST, SECOND, THIRD]))
    launched = run_to_end(engine)
    assert [s.params for s in launched[:2]] == [FIRST, SECOND]
    assert launched[2].params["lr"] == THIRD["lr"]
    assert len(launched) == 6
    assert engine.counts().finished == 6


def test_configurations_run_exactly_once_across_a_rebuild() -> None:
    spec = warm([FIRST, SECOND, THIRD], parallelism=2)
    engine = open_engine(spec)
    first = starts(engine.next_actions(0.0))
    assert [s.params for s in first] == [FIRST, SECOND]
    engine.observe(Finished(0, 0, {"loss": 0.5}), 1.0)
    # The operator restarts: trial 0 finished, trial 1 still runs, THIRD never launched.
    records = [engine.record(0), engine.record(1)]
    rebuilt = Engine.rebuild(spec, records)
    assert set(rebuilt.running) == {1}
    launched = run_to_end(rebuilt)
    params = [s.params for s in launched]
    assert FIRST not in params
    assert SECOND not in params
    assert params[0]["lr"] == THIRD["lr"]
    assert sum(1 for p in params if p["lr"] == THIRD["lr"]) == 1
    assert rebuilt.counts().finished == 6


def test_a_resumed_study_does_not_queue_its_configurations_again() -> None:
    spec = warm([FIRST, SECOND])
    study = optuna.create_study(direction="minimize")
    open_engine(spec, study)
    open_engine(spec, study)  # a second local run over the same SQLite study
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [FIRST, SECOND]


def test_seeded_trials_are_told_not_run_and_not_counted() -> None:
    spec = make_spec(budget={"maxTrials": 4, "parallelism": 1})
    study = optuna.create_study(direction="minimize")
    engine = Engine.open(spec, study, seeds=earlier(6))
    told = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(told) == 6
    assert engine.counts().finished == 0
    assert engine.trials() == []
    launched = run_to_end(engine)
    assert len(launched) == 4
    seeded_points = {engine.space.key(r.params) for r in earlier(6)}
    assert all(engine.space.key(s.params) not in seeded_points for s in launched)
    assert [t.number for t in engine.trials()] == [6, 7, 8, 9]
    # The sampler sees them: TPE conditions on every complete trial of the study.
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 4 + 4


def test_seeds_outside_the_space_are_skipped_with_a_warning() -> None:
    seeds = [
        *earlier(2),
        TrialRecord(
            number=7,
            params={"lr": 5.0, "momentum": 0.1, "layers": 1, "optimizer": "sgd"},
            state="complete",
            value=0.1,
        ),
        TrialRecord(number=8, params={**FIRST, "dropout": 0.5}, state="complete", value=0.1),
        TrialRecord(number=9, params=FIRST, state="failed"),
    ]
    engine = Engine.open(make_spec(), optuna.create_study(direction="minimize"), seeds=seeds)
    assert len(engine.study.get_trials()) == 2
    assert len(engine.warnings) == 2
    assert "trial 7" in engine.warnings[0]
    assert "lr=5.0 is outside" in engine.warnings[0]
    assert "dropout is not a parameter" in engine.warnings[1]


def test_seeds_survive_a_rebuild_from_their_records_and_are_not_told_twice() -> None:
    spec = make_spec(budget={"maxTrials": 3, "parallelism": 1})
    engine = Engine.open(spec, optuna.create_study(direction="minimize"), seeds=earlier(3))
    starts(engine.next_actions(0.0))
    records = [engine.record(n) for n in range(4)]
    assert [r.kind for r in records] == ["seeded"] * 3 + ["counted"]
    rebuilt = Engine.rebuild(spec, records)
    told = rebuilt.study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(told) == 3
    assert set(rebuilt.running) == {3}
    assert rebuilt.counts().finished == 0
    assert len(run_to_end(rebuilt)) == 2  # trial 3 was adopted, not launched again
    assert rebuilt.counts().finished == 3


def test_a_configuration_equal_to_a_seeded_trial_is_not_run() -> None:
    seeds = earlier(1)
    spec = warm([dict(seeds[0].params), FIRST])
    engine = Engine.open(spec, optuna.create_study(direction="minimize"), seeds=seeds)
    first = starts(engine.next_actions(0.0))
    assert [s.params for s in first] == [FIRST]


@pytest.mark.parametrize("available", [3, 2])
def test_the_operator_tells_the_seeds_again_before_its_own_trials(available: int) -> None:
    """TuningTrials hold only the study's own trials; the seeds come from the source."""
    spec = make_spec(warmStart={"fromStudy": "earlier"}, budget={"maxTrials": 3, "parallelism": 1})
    engine = Engine.rebuild(spec, [], seeds=earlier(3))
    assert engine.status()["warmStart"] == {"seeded": 3}
    [start] = starts(engine.next_actions(0.0))
    assert start.number == 3
    engine.observe(Finished(3, 0, {"loss": 0.5}), 1.0)
    # Restarted; the earlier study may have lost a trial since (then number 2 is a gap).
    rebuilt = Engine.rebuild(spec, [engine.record(3)], seeds=earlier(available))
    assert rebuilt.status()["warmStart"] == {"seeded": available}
    assert [t.number for t in rebuilt.trials()] == [3]
    assert rebuilt.trials()[0].value == 0.5
    assert [s.number for s in run_to_end(rebuilt)] == [4, 5]


def test_a_grid_runs_its_configurations_first_and_every_point_once() -> None:
    configurations: list[dict[str, Scalar]] = [
        {"x": 0.3, "optimizer": "adam"},
        {"x": 0.6, "optimizer": "sgd"},
    ]
    spec = make_spec(
        algorithm={"name": "grid"},
        parameters=[
            {"name": "x", "type": "float", "min": 0.0, "max": 0.6, "step": 0.3},
            {"name": "optimizer", "type": "categorical", "values": ["sgd", "adam"]},
        ],
        warmStart={"configurations": configurations},
        budget={"maxTrials": 6, "parallelism": 1},
    )
    launched = [s.params for s in run_to_end(open_engine(spec))]
    assert launched[:2] == configurations
    assert len({(p["x"], p["optimizer"]) for p in launched}) == 6
