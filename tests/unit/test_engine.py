"""The engine's bookkeeping: budget, parallelism, failures, retries, pruning, resume."""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest

from rheostat.engine import (
    Engine,
    Finished,
    Lost,
    LrRangeFinished,
    Progress,
    Started,
    StartLrRangeTest,
    StartTrial,
    StopTrial,
    TrialRecord,
)
from rheostat.lr_range import exponential_schedule
from rheostat.spec import StudySpec, study_from_mapping
from tests.bad_specs import good_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


def make_spec(**changes: Any) -> StudySpec:
    document = good_study()
    spec = document["spec"]
    spec.pop("lrRangeTest")
    spec["objective"] = {"metric": "loss", "direction": "minimize"}
    spec["earlyStopping"] = {"pruner": "none"}
    for key, value in changes.items():
        spec[key] = value
    return study_from_mapping(document).spec


def open_engine(spec: StudySpec, study: optuna.Study | None = None) -> Engine:
    study = study or optuna.create_study(direction=spec.objective.direction)
    return Engine.open(spec, study)


def starts(actions: list[Any]) -> list[StartTrial]:
    return [a for a in actions if isinstance(a, StartTrial)]


def finish(engine: Engine, number: int, value: float, now: float = 1.0) -> None:
    engine.observe(Finished(number, 0, {"loss": value}), now)


def run_to_end(engine: Engine, value: float = 1.0) -> list[StartTrial]:
    launched: list[StartTrial] = []
    now = 0.0
    while not engine.done:
        batch = starts(engine.next_actions(now))
        if not batch and not engine.running:
            assert engine.done, "the engine stalled"
            break
        launched += batch
        for number in list(engine.running):
            finish(engine, number, value + number * 0.01, now)
        now += 1
    return launched


def test_parallelism_and_exact_budget() -> None:
    engine = open_engine(make_spec(budget={"maxTrials": 5, "parallelism": 2}))
    first = starts(engine.next_actions(0.0))
    assert len(first) == 2
    assert starts(engine.next_actions(0.0)) == []  # parallelism full
    finish(engine, first[0].number, 0.5)
    second = starts(engine.next_actions(1.0))
    assert len(second) == 1
    launched = first + second + run_to_end(engine)
    assert engine.phase == "Succeeded"
    counts = engine.counts()
    assert (counts.complete, counts.failed, counts.running) == (5, 0, 0)
    assert len(launched) == len({s.number for s in launched}) == 5  # none launched twice


def test_training_errors_count_and_fail_the_study() -> None:
    engine = open_engine(
        make_spec(budget={"maxTrials": 10, "parallelism": 3, "maxFailedTrials": 1})
    )
    trials = starts(engine.next_actions(0.0))
    engine.observe(Finished(trials[0].number, 1, None, "Traceback: boom"), 1.0)
    assert engine.phase == "Running"
    engine.observe(Finished(trials[1].number, 0, {"loss": math.nan}), 1.0)
    assert engine.phase == "Failed"
    stops = [a for a in engine.next_actions(2.0) if isinstance(a, StopTrial)]
    assert [s.number for s in stops] == [trials[2].number]
    reasons = {t.number: t.reason for t in engine.trials()}
    assert "exited with code 1: Traceback: boom" in str(reasons[trials[0].number])
    assert "is nan" in str(reasons[trials[1].number])
    assert engine.counts().failed == 2
    assert "maxFailedTrials=1" in str(engine.status()["reason"])


def test_missing_objective_falls_back_to_last_report_or_fails() -> None:
    engine = open_engine(make_spec(budget={"maxTrials": 2, "parallelism": 2}))
    a, b = starts(engine.next_actions(0.0))
    engine.observe(Progress(a.number, 3, 0.25), 0.5)
    engine.observe(Finished(a.number, 0, None), 1.0)
    engine.observe(Finished(b.number, 0, {"accuracy": 0.9}), 1.0)
    views = {t.number: t for t in engine.trials()}
    assert views[a.number].state == "complete"
    assert views[a.number].value == 0.25
    assert views[b.number].state == "failed"
    assert "'loss' was never reported" in str(views[b.number].reason)


def test_lost_trials_are_retried_with_the_same_params_and_not_counted() -> None:
    engine = open_engine(make_spec(budget={"maxTrials": 2, "parallelism": 1, "maxRetries": 1}))
    (first,) = starts(engine.next_actions(0.0))
    engine.observe(Lost(first.number, "evicted"), 1.0)
    (retry,) = starts(engine.next_actions(1.0))
    assert retry.params == first.params
    assert retry.attempt == 2
    assert engine.counts().finished == 0
    engine.observe(Lost(retry.number, "node lost"), 2.0)
    assert engine.counts().failed == 1  # out of retries: now it counts
    assert "gave up after 2 attempts" in str(engine.trials()[-1].reason)


def test_timeouts_stop_and_fail_the_trial() -> None:
    engine = open_engine(make_spec(budget={"maxTrials": 1, "trialTimeout": 10}))
    (trial,) = starts(engine.next_actions(0.0))
    engine.observe(Started(trial.number, 0.0), 0.0)
    assert engine.next_actions(5.0) == []
    actions = engine.next_actions(11.0)
    assert actions == [StopTrial(trial.number, "timeout")]
    engine.observe(Finished(trial.number, -15, None), 12.0)  # the late exit changes nothing
    assert engine.trials()[0].reason == "timed out after 10s"
    assert engine.phase == "Failed" or engine.counts().failed == 1


def test_pruning_stops_a_bad_trial() -> None:
    spec = make_spec(
        budget={"maxTrials": 4, "parallelism": 1},
        earlyStopping={"pruner": "median", "settings": {"n_startup_trials": 2}},
    )
    engine = open_engine(spec)
    for _ in range(2):
        (trial,) = starts(engine.next_actions(0.0))
        for step in range(3):
            assert engine.observe(Progress(trial.number, step, 1.0), 0.0) == []
        finish(engine, trial.number, 1.0)
    (bad,) = starts(engine.next_actions(0.0))
    actions = engine.observe(Progress(bad.number, 0, 5.0), 0.0)
    assert actions == [StopTrial(bad.number, "pruned")]
    view = next(t for t in engine.trials() if t.number == bad.number)
    assert view.state == "pruned"
    assert "pruned at step 0" in str(view.reason)


def test_resume_requeues_interrupted_trials() -> None:
    spec = make_spec(budget={"maxTrials": 4, "parallelism": 2})
    study = optuna.create_study(direction="minimize")
    engine = open_engine(spec, study)
    a, b = starts(engine.next_actions(0.0))
    finish(engine, a.number, 0.3)
    # The tuner dies here with b running. A new engine over the same study:
    resumed = open_engine(spec, study)
    relaunched = starts(resumed.next_actions(0.0))
    assert relaunched[0].params == b.params
    run_to_end(resumed)
    counts = resumed.counts()
    assert (counts.complete, counts.failed) == (4, 0)
    complete_params = [tuple(sorted(t.params.items())) for t in resumed.trials()]
    assert len(set(complete_params)) == 4, "a trial ran twice"


def test_small_discrete_space_is_exhausted_without_duplicates() -> None:
    spec = make_spec(
        algorithm={"name": "random", "seed": 3},
        parameters=[{"name": "optimizer", "type": "categorical", "values": ["sgd", "adam"]}],
        budget={"maxTrials": 5, "parallelism": 1},
    )
    engine = open_engine(spec)
    launched = run_to_end(engine)
    assert sorted(s.params["optimizer"] for s in launched) == ["adam", "sgd"]
    assert engine.phase == "Succeeded"


def test_grid_budget_is_capped_by_the_grid() -> None:
    spec = make_spec(
        algorithm={"name": "grid"},
        parameters=[
            {"name": "x", "type": "float", "min": 0, "max": 1, "step": 0.5},
            {"name": "o", "type": "categorical", "values": ["a", "b"]},
        ],
        budget={"maxTrials": 100, "parallelism": 4},
    )
    engine = open_engine(spec)
    assert engine.target_trials == 6
    launched = run_to_end(engine)
    points = sorted((s.params["x"], s.params["o"]) for s in launched)
    assert points == sorted((x, o) for x in (0.0, 0.5, 1.0) for o in ("a", "b"))


def _valley_curve(steps: int = 100) -> tuple[list[float], list[float]]:
    lrs = exponential_schedule(1e-6, 10.0, steps)
    losses = [2.3 - 1.5 / (1 + math.exp(-3 * (math.log10(lr) + 2.5))) for lr in lrs]
    losses = [
        loss if lr < 0.1 else loss + 20 * (math.log10(lr) + 1)
        for lr, loss in zip(lrs, losses, strict=True)
    ]
    return lrs, losses


@pytest.mark.parametrize("policy", ["narrow", "fix", "report"])
def test_lr_range_test_runs_first_and_applies_its_policy(policy: str) -> None:
    document = good_study()
    document["spec"]["objective"] = {"metric": "loss", "direction": "minimize"}
    document["spec"]["lrRangeTest"]["apply"] = policy
    spec = study_from_mapping(document).spec
    engine = open_engine(spec)
    (test,) = engine.next_actions(0.0)
    assert isinstance(test, StartLrRangeTest)
    assert test.params["lr"] == 1e-6
    assert test.params["layers"] in {2, 3}
    assert engine.next_actions(0.5) == []  # no trial before the test is done
    engine.observe(LrRangeFinished(*_valley_curve()), 1.0)
    assert engine.lr_result is not None
    suggested = engine.lr_result.suggested_lr
    assert 1e-4 < suggested < 1e-1
    trials = starts(engine.next_actions(1.0))
    status = engine.status()["lrRangeTest"]
    if policy == "fix":
        assert all(t.params["lr"] == suggested for t in trials)
    elif policy == "narrow":
        low, high = status["narrowedTo"]
        assert 1e-5 <= low < suggested < high <= 1.0
        assert all(low <= t.params["lr"] <= high for t in trials)
    else:
        assert "narrowedTo" not in status


def test_a_failed_lr_range_test_leaves_the_range_alone() -> None:
    document = good_study()
    document["spec"]["objective"] = {"metric": "loss", "direction": "minimize"}
    engine = open_engine(study_from_mapping(document).spec)
    engine.next_actions(0.0)
    engine.observe(LrRangeFinished(error="the LR range test exited with code 1"), 1.0)
    assert engine.phase == "Running"
    assert engine.status()["lrRangeTest"] == {"error": "the LR range test exited with code 1"}
    assert starts(engine.next_actions(1.0))


def test_rebuild_from_records_keeps_every_trial_and_adopts_running_ones() -> None:
    spec = make_spec(
        budget={"maxTrials": 6, "parallelism": 2, "maxRetries": 1},
        earlyStopping={"pruner": "median", "settings": {"n_startup_trials": 1}},
    )
    engine = open_engine(spec)
    a, b = starts(engine.next_actions(0.0))
    engine.observe(Progress(a.number, 0, 0.2), 1.0)
    finish(engine, a.number, 0.2)
    engine.observe(Lost(b.number, "evicted"), 1.0)
    c, d = starts(engine.next_actions(2.0))
    assert c.params == b.params  # the evicted trial's parameters run again
    engine.observe(Progress(d.number, 0, 0.1), 3.0)  # better than the median: kept
    records = [engine.record(n) for n in range(len(engine.study.trials))]
    assert [r.state for r in records][:2] == ["complete", "failed"]
    assert records[1].kind == "retry"

    # The operator restarts: only the records survive.
    rebuilt = Engine.rebuild(spec, records)
    assert set(rebuilt.running) == {c.number, d.number}  # adopted, not re-run
    assert rebuilt.counts().finished == 1
    assert rebuilt.record(d.number).intermediate == {0: 0.1}
    finish(rebuilt, c.number, 0.4)
    finish(rebuilt, d.number, 0.5)
    launched = run_to_end(rebuilt)
    assert rebuilt.phase == "Succeeded"
    assert rebuilt.counts().complete == 6
    assert min(s.number for s in launched) == d.number + 1  # numbers continue
    counted = [t.params for t in rebuilt.trials()]
    assert len({tuple(sorted(p.items())) for p in counted}) == 6


def test_rebuild_fills_number_gaps_and_reseeds() -> None:
    spec = make_spec(algorithm={"name": "random", "seed": 4}, budget={"maxTrials": 4})
    records = [
        TrialRecord(
            number=0,
            params={"lr": 0.01, "momentum": 0.5, "layers": 2, "optimizer": "sgd"},
            state="complete",
            value=0.3,
        ),
        TrialRecord(
            number=2,
            params={"lr": 0.02, "momentum": 0.1, "layers": 1, "optimizer": "adam"},
            state="pruned",
            intermediate={0: 0.9},
        ),
    ]
    engine = Engine.rebuild(spec, records)
    assert len(engine.study.trials) == 3
    assert engine.counts().finished == 2
    (next_trial,) = starts(engine.next_actions(0.0))
    assert next_trial.number == 3


def test_a_sampler_stuck_on_one_point_falls_back_to_random() -> None:
    class Stuck(optuna.samplers.RandomSampler):
        """Always proposes the same parameters, as a GP can on a discrete space."""

        def sample_independent(self, study: Any, trial: Any, name: str, distribution: Any) -> Any:
            return distribution.to_external_repr(0)

    spec = make_spec(
        parameters=[{"name": "n", "type": "int", "min": 0, "max": 9}],
        budget={"maxTrials": 6, "parallelism": 1},
    )
    engine = open_engine(spec)
    engine.study.sampler = Stuck(seed=1)
    launched = run_to_end(engine)
    assert engine.phase == "Succeeded"
    assert len({s.params["n"] for s in launched}) == 6  # not ended early after one point


def test_a_bigger_budget_reopens_a_finished_study() -> None:
    engine = open_engine(make_spec(budget={"maxTrials": 2, "parallelism": 1}))
    run_to_end(engine)
    assert engine.phase == "Succeeded"
    engine.set_budget(engine.spec.budget.model_copy(update={"max_trials": 4}))
    assert engine.phase == "Running"
    run_to_end(engine)
    assert engine.counts().complete == 4


def test_a_trial_interrupted_while_its_params_were_drawn_is_not_requeued() -> None:
    spec = make_spec(budget={"maxTrials": 3, "parallelism": 1})
    study = optuna.create_study(direction="minimize")
    engine = open_engine(spec, study)
    (first,) = starts(engine.next_actions(0.0))
    finish(engine, first.number, 0.5)
    study.ask()  # the tuner died inside ask(): a RUNNING trial with no parameters
    resumed = open_engine(spec, study)
    launched = run_to_end(resumed)
    assert all(s.params != first.params for s in launched)
    assert resumed.counts().complete == 3


def test_the_timeout_counts_from_the_trainers_start_not_from_launch() -> None:
    """Time spent waiting for a node is the cluster's (unschedulableTimeout), not the trial's."""
    engine = open_engine(make_spec(budget={"maxTrials": 1, "trialTimeout": 5}))
    (trial,) = starts(engine.next_actions(0.0))
    assert engine.next_actions(100.0) == []  # pending for 100 s: no timeout
    engine.observe(Started(trial.number, 100.0), 100.0)
    engine.observe(Started(trial.number, 103.0), 103.0)  # repeated reports keep the first
    assert engine.next_actions(104.0) == []
    assert engine.next_actions(105.5) == [StopTrial(trial.number, "timeout")]


def test_a_study_failed_by_timeouts_starts_nothing_and_stops_the_rest() -> None:
    engine = open_engine(
        make_spec(
            budget={"maxTrials": 10, "parallelism": 2, "maxFailedTrials": 1, "trialTimeout": 10}
        )
    )
    first = starts(engine.next_actions(0.0))
    for trial in first:
        engine.observe(Started(trial.number, 0.0), 0.0)
    actions = engine.next_actions(11.0)
    assert engine.phase == "Failed"
    assert not starts(actions), "a failed study launched new trials"
    assert sorted(a.number for a in actions if isinstance(a, StopTrial)) == sorted(
        t.number for t in first
    )
    assert engine.running == {}
    assert engine.next_actions(12.0) == []


def test_a_study_whose_every_trial_failed_has_failed() -> None:
    engine = open_engine(make_spec(budget={"maxTrials": 3, "parallelism": 3, "maxFailedTrials": 5}))
    for trial in starts(engine.next_actions(0.0)):
        engine.observe(Finished(trial.number, 1, None, "boom"), 1.0)
    engine.next_actions(1.0)
    assert engine.phase == "Failed"
    assert "no trial completed" in engine.status()["reason"]


def test_a_study_with_one_complete_trial_succeeds() -> None:
    engine = open_engine(make_spec(budget={"maxTrials": 3, "parallelism": 3, "maxFailedTrials": 5}))
    trials = starts(engine.next_actions(0.0))
    for trial in trials[:-1]:
        engine.observe(Finished(trial.number, 1, None, "boom"), 1.0)
    finish(engine, trials[-1].number, 0.5)
    engine.next_actions(1.0)
    assert engine.phase == "Succeeded"


@pytest.mark.parametrize(
    ("algorithm", "size"), [("random", 200), ("tpe", 200), ("tpe", 50), ("bayesian", 8)]
)
def test_a_space_no_bigger_than_the_budget_runs_every_point_once(algorithm: str, size: int) -> None:
    spec = make_spec(
        algorithm={"name": algorithm, "seed": 7},
        parameters=[{"name": "n", "type": "int", "min": 1, "max": size}],
        budget={"maxTrials": size + 10, "parallelism": 1},
    )
    engine = open_engine(spec)
    assert engine.target_trials == size
    launched = run_to_end(engine)
    assert engine.phase == "Succeeded"
    assert sorted(s.params["n"] for s in launched) == list(range(1, size + 1))


def test_stepped_floats_that_differ_in_the_last_bit_are_one_point() -> None:
    spec = make_spec(
        algorithm={"name": "random", "seed": 2},
        parameters=[{"name": "x", "type": "float", "min": 0.0, "max": 1.0, "step": 0.1}],
        budget={"maxTrials": 11, "parallelism": 1},
    )
    engine = open_engine(spec)
    launched = run_to_end(engine)
    assert sorted(round(float(s.params["x"]), 6) for s in launched) == [i / 10 for i in range(11)]


def _early_minimum_curve(steps: int = 100) -> tuple[list[float], list[float]]:
    """A real descent that bottoms out at lr 1e-6, far below the user's range, then rises."""
    lrs = exponential_schedule(1e-8, 1.0, steps)
    return lrs, [1.0 + 0.5 * abs(math.log10(lr) + 6) for lr in lrs]


def test_fix_with_a_suggestion_outside_the_users_range_searches_the_range() -> None:
    document = good_study()
    document["spec"]["objective"] = {"metric": "loss", "direction": "minimize"}
    document["spec"]["parameters"][0].update(min=1e-4, max=0.1)
    document["spec"]["lrRangeTest"].update(minLr=1e-8, maxLr=1.0, apply="fix", suggestion="minimum")
    engine = open_engine(study_from_mapping(document).spec)
    engine.next_actions(0.0)
    engine.observe(LrRangeFinished(*_early_minimum_curve()), 1.0)
    assert engine.lr_result is not None
    assert engine.lr_result.suggested_lr < 1e-4
    status = engine.status()["lrRangeTest"]
    assert status["policy"] == "report"
    assert "outside lr's range" in status["warning"]
    trials = run_to_end(engine)
    assert all(1e-4 <= t.params["lr"] <= 0.1 for t in trials)
    assert len({t.params["lr"] for t in trials}) > 1, "the lr was fixed after all"


@pytest.mark.parametrize(
    "curve",
    [
        ([1e-5, 1e-4, 1e-3], [1.0, 0.9]),  # unequal lengths
        ([1e-5, 1e-4], [math.nan, 1.0]),  # nothing usable at the start
        ([], []),
    ],
)
def test_a_malformed_lr_curve_is_an_lr_test_error_and_the_study_goes_on(
    curve: tuple[list[float], list[float]],
) -> None:
    document = good_study()
    document["spec"]["objective"] = {"metric": "loss", "direction": "minimize"}
    engine = open_engine(study_from_mapping(document).spec)
    engine.next_actions(0.0)
    engine.observe(LrRangeFinished(*curve), 1.0)
    assert engine.phase == "Running"
    assert "could not be used" in engine.status()["lrRangeTest"]["error"]
    assert starts(engine.next_actions(1.0))
