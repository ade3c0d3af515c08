"""Warm start: configurations run first and exactly once; an earlier study is told, not run."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from rheostat import warm_start
from rheostat.engine import Engine, Finished, LrRangeFinished, TrialRecord
from rheostat.spec import InvalidStudyError, Scalar, study_from_mapping
from tests.bad_specs import OPERATOR_ONLY_CASES, BadCase, bad_document, good_study
from tests.unit.test_engine import _valley_curve, make_spec, open_engine, run_to_end, starts

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


def _stepped(step: int, high: int = 10) -> Any:
    return make_spec(
        parameters=[{"name": "n", "type": "int", "min": 0, "max": high, "step": step}],
        warmStart={"fromStudy": "earlier"},
        budget={"maxTrials": 2, "parallelism": 1},
    )


def _on_unit_grid() -> list[TrialRecord]:
    """An earlier study over n in 0..10 step 1."""
    return [
        TrialRecord(number=i, params={"n": n}, state="complete", value=float(n))
        for i, n in enumerate([0, 9, 2, 4, 7, 6, 8, 10])
    ]


def test_seeds_off_the_new_step_grid_are_skipped_with_a_warning() -> None:
    engine = Engine.open(
        _stepped(2, high=20), optuna.create_study(direction="minimize"), seeds=_on_unit_grid()
    )
    told = [t.params["n"] for t in engine.study.get_trials()]
    assert told == [0, 2, 4, 6, 8, 10]
    [nine, seven] = engine.warnings
    assert "skipped trial 1 of earlier: n=9 is not on the grid of 0..20 step 2" in nine
    assert "n=7" in seven
    assert len(run_to_end(engine)) == 2


@pytest.mark.parametrize("numbered", [True, False], ids=["numbered", "as-before-the-fix"])
def test_a_seeding_cut_short_is_completed_on_the_next_open(numbered: bool) -> None:
    """A tuner killed halfway through seeding: the next run tells the rest, once each.

    The store then holds some seeds and no mark that seeding ended (`numbered`), or,
    written before this fix, the seeds without their number in the earlier study.
    """
    spec = _stepped(1, high=20)
    study = optuna.create_study(direction="minimize")
    seeds = _on_unit_grid()
    for record in seeds[:3]:
        attrs: dict[str, Any] = {"rheostat:kind": "seeded", "rheostat:reason": "seeded from x"}
        if numbered:
            attrs[warm_start.ATTR_SEEDED_FROM] = record.number
        study.add_trial(
            optuna.trial.create_trial(
                params=dict(record.params),
                distributions={"n": optuna.distributions.IntDistribution(0, 20)},
                value=record.value,
                user_attrs=attrs,
            )
        )
    assert warm_start.needs_seeds(study)  # the runner reads the source again
    engine = Engine.open(spec, study, seeds=seeds)
    assert sorted(t.params["n"] for t in study.get_trials()) == sorted(s.params["n"] for s in seeds)
    assert not warm_start.needs_seeds(study)
    run_to_end(engine)
    assert warm_start.seeded(study) == len(seeds)
    Engine.open(spec, study, seeds=seeds)  # a resume tells nothing again
    assert warm_start.seeded(study) == len(seeds)


def _narrowing_study() -> tuple[Any, list[TrialRecord]]:
    """A bayesian study warm-started from `earlier`, whose LR range test narrows lr."""
    document = good_study()
    document["spec"]["objective"] = {"metric": "loss", "direction": "minimize"}
    document["spec"]["algorithm"] = {"name": "bayesian", "seed": 3}
    document["spec"]["lrRangeTest"]["apply"] = "narrow"
    document["spec"]["warmStart"] = {"fromStudy": "earlier"}
    document["spec"]["budget"] = {"maxTrials": 4, "parallelism": 1}
    seeds = [
        TrialRecord(
            number=i,
            params={"lr": lr, "momentum": 0.5, "layers": 2, "optimizer": "sgd"},
            state="complete",
            value=1.0 + i,
        )
        for i, lr in enumerate([1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 0.5, 1e-5])
    ]
    return study_from_mapping(document).spec, seeds


def test_the_operator_tells_seeds_after_the_lr_test_and_again_on_a_rebuild() -> None:
    spec, seeds = _narrowing_study()
    engine = Engine.rebuild(spec, [], seeds=seeds)
    assert warm_start.seeded(engine.study) == 0
    engine.next_actions(0.0)
    engine.observe(LrRangeFinished(*_valley_curve()), 1.0)
    told = warm_start.seeded(engine.study)
    assert 0 < told < len(seeds)
    assert any("is outside" in w for w in engine.drain_warnings())
    [start] = starts(engine.next_actions(1.0))
    assert start.number == told
    engine.observe(Finished(start.number, 0, {"loss": 0.5}), 2.0)
    stored = engine.study.user_attrs["rheostat:lrRangeTest"]
    rebuilt = Engine.rebuild(spec, [engine.record(start.number)], stored, seeds)
    assert warm_start.seeded(rebuilt.study) == told
    assert [t.number for t in rebuilt.trials()] == [start.number]
    assert [s.number for s in run_to_end(rebuilt)] == [told + 1, told + 2, told + 3]


def test_after_an_lr_range_test_seeds_are_told_with_the_narrowed_range(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Optuna's intersection search space keeps lr only if seeds and trials agree on it."""
    spec, seeds = _narrowing_study()
    engine = Engine.open(spec, optuna.create_study(direction="minimize"), seeds=seeds)
    assert engine.study.get_trials() == []  # not yet: the range may still change
    engine.next_actions(0.0)
    engine.observe(LrRangeFinished(*_valley_curve()), 1.0)
    low, high = engine.status()["lrRangeTest"]["narrowedTo"]
    told = [t.params["lr"] for t in engine.study.get_trials()]
    assert told == [lr for lr in (s.params["lr"] for s in seeds) if low <= lr <= high]
    assert any("lr=0.5 is outside" in w for w in engine.warnings)
    assert engine.status()["warmStart"] == {"seeded": len(told)}
    # Optuna logs a fallback to independent (RandomSampler) sampling; warnings are errors.
    optuna.logging.enable_propagation()
    try:
        with caplog.at_level("WARNING", logger="optuna"):
            launched = run_to_end(engine)
    finally:
        optuna.logging.disable_propagation()
    assert not [r.message for r in caplog.records if "independent" in r.message], caplog.text
    assert len(launched) == 4
    assert all(low <= s.params["lr"] <= high for s in launched)
    probe = engine.study.ask()
    assert "lr" in engine.study.sampler.infer_relative_search_space(engine.study, probe)
