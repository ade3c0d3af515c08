"""Algorithm and pruner names map to seeded Optuna objects tuned for parallel trials."""

from __future__ import annotations

import copy
from typing import Any

import optuna
import pytest
from optuna.study import StudyDirection

from rheostat.sampling import (
    GP_MAX_HISTORY,
    AskTellGridSampler,
    BoundedGPSampler,
    SettingsError,
    bounded_history,
    impute_pruned,
    make_pruner,
    make_sampler,
    settings_problems,
)
from rheostat.space import build_space
from rheostat.spec import ALGORITHMS, AlgorithmSpec, EarlyStopping, Parameter

optuna.logging.set_verbosity(optuna.logging.WARNING)
MAX = StudyDirection.MAXIMIZE

PARAMETERS = [
    Parameter.model_validate({"name": "x", "type": "float", "min": 0, "max": 1, "step": 0.25}),
    Parameter.model_validate({"name": "n", "type": "int", "min": 1, "max": 4}),
]


def first_params(name: str, seed: int, count: int = 6) -> list[dict[str, object]]:
    space = build_space(PARAMETERS, grid=name == "grid")
    sampler = make_sampler(AlgorithmSpec(name=name, seed=seed), space)  # type: ignore[arg-type]
    study = optuna.create_study(sampler=sampler)
    asked = []
    for _ in range(count):
        trial = study.ask(space.distributions)
        asked.append(trial.params)
        study.tell(trial, float(trial.params["x"]))
    return asked


@pytest.mark.parametrize("name", ALGORITHMS)
def test_the_same_seed_proposes_the_same_trials(name: str) -> None:
    assert first_params(name, seed=5) == first_params(name, seed=5)


@pytest.mark.parametrize("name", ["random", "tpe", "qmc"])
def test_another_seed_proposes_other_trials(name: str) -> None:
    assert first_params(name, seed=5) != first_params(name, seed=6)


def test_grid_visits_each_point_once() -> None:
    proposals = first_params("grid", seed=1, count=20)
    assert len({(p["x"], p["n"]) for p in proposals}) == 20


def test_parallel_friendly_defaults_and_user_overrides() -> None:
    space = build_space(PARAMETERS)
    tpe = make_sampler(AlgorithmSpec(name="tpe"), space)
    assert isinstance(tpe, optuna.samplers.TPESampler)
    assert tpe._constant_liar
    custom = make_sampler(AlgorithmSpec(name="tpe", settings={"constant_liar": False}), space)
    assert isinstance(custom, optuna.samplers.TPESampler)
    assert not custom._constant_liar
    assert isinstance(
        make_sampler(AlgorithmSpec(name="grid"), build_space(PARAMETERS, grid=True)),
        AskTellGridSampler,
    )


def test_unknown_settings_are_a_clear_error() -> None:
    with pytest.raises(SettingsError, match="tpe settings"):
        make_sampler(AlgorithmSpec(name="tpe", settings={"bogus": 1}), build_space(PARAMETERS))


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("none", optuna.pruners.NopPruner),
        ("median", optuna.pruners.MedianPruner),
        ("successive-halving", optuna.pruners.SuccessiveHalvingPruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
    ],
)
def test_pruners(name: str, kind: type) -> None:
    assert isinstance(make_pruner(EarlyStopping(pruner=name)), kind)  # type: ignore[arg-type]


# ----- the GP's bounded history ---------------------------------------------------------


def _finished(values: list[float]) -> list[optuna.trial.FrozenTrial]:
    distributions: dict[str, optuna.distributions.BaseDistribution] = {
        "x": optuna.distributions.FloatDistribution(0, 1)
    }
    trials = []
    for number, value in enumerate(values):
        trial = optuna.trial.create_trial(
            params={"x": number / len(values)}, distributions=distributions, value=value
        )
        trial.number = number
        trials.append(trial)
    return trials


def test_a_short_history_is_kept_whole() -> None:
    trials = _finished([float(v) for v in range(10)])
    assert bounded_history(trials, StudyDirection.MINIMIZE, cap=10) == trials


@pytest.mark.parametrize("direction", [StudyDirection.MINIMIZE, StudyDirection.MAXIMIZE])
def test_a_long_history_keeps_the_best_half_and_the_most_recent(
    direction: StudyDirection,
) -> None:
    # Values rise with the trial number: the oldest trials are the best when minimizing.
    trials = _finished([float(v) for v in range(100)])
    kept = [t.number for t in bounded_history(trials, direction, cap=20)]
    recent = list(range(80, 100)) if direction == StudyDirection.MAXIMIZE else list(range(90, 100))
    best = list(range(10)) if direction == StudyDirection.MINIMIZE else []
    assert kept == best + recent
    assert len(kept) == 20


def test_the_bayesian_sampler_conditions_on_a_bounded_history(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    space = build_space(PARAMETERS)
    sampler = make_sampler(AlgorithmSpec(name="bayesian", seed=1), space)
    assert isinstance(sampler, BoundedGPSampler)
    assert sampler.max_history == GP_MAX_HISTORY
    # What Optuna's own GP code is handed, under our subclass.
    seen: list[int] = []
    original = optuna.samplers.GPSampler._sample_relative_impl

    def recording(self: Any, study: Any, completed: Any, *rest: Any) -> Any:
        seen.append(len(completed))
        return original(self, study, completed, *rest)

    monkeypatch.setattr(optuna.samplers.GPSampler, "_sample_relative_impl", recording)
    study = optuna.create_study(
        sampler=BoundedGPSampler(seed=1, max_history=12, n_startup_trials=5)
    )
    for _ in range(20):
        trial = study.ask(space.distributions)
        study.tell(trial, float(trial.params["x"]) + trial.params["n"])
    assert seen[0] == 5  # the first model-based ask, right after the startup trials
    assert max(seen) == 12  # later asks had up to 19 trials and saw only the cap


def test_a_history_cap_below_ten_is_refused() -> None:
    algorithm = AlgorithmSpec(name="bayesian", settings={"max_history": 3})
    problems = settings_problems(algorithm, EarlyStopping(), build_space(PARAMETERS))
    assert problems == [("spec.algorithm.settings", "max_history must be at least 10, got 3")]


# The GP learns from pruned and running trials (issue 9, part 2).

FLOATS: dict[str, optuna.distributions.BaseDistribution] = {
    "x": optuna.distributions.FloatDistribution(0.0, 1.0),
    "y": optuna.distributions.FloatDistribution(0.0, 1.0),
}
FINISHED = [((0.2, 0.5), 0.9), ((0.8, 0.5), 0.85), ((0.5, 0.2), 0.8), ((0.5, 0.8), 0.8)]
FINISHED += [((0.9, 0.9), 0.7), ((0.1, 0.9), 0.7)]


def _study_with_pruned_cluster(sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """Six finished trials, the best at (0.2, 0.5), and ten pruned trials around it."""
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for (x, y), value in FINISHED:
        study.add_trial(
            optuna.trial.create_trial(params={"x": x, "y": y}, distributions=FLOATS, value=value)
        )
    for i in range(10):
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": 0.15 + 0.01 * i, "y": 0.45 + 0.01 * i},
                distributions=FLOATS,
                state=optuna.trial.TrialState.PRUNED,
                intermediate_values={1: 0.3, 2: 0.4},
            )
        )
    return study


def _distance_from_cluster(params: dict[str, Any]) -> float:
    return float(((params["x"] - 0.2) ** 2 + (params["y"] - 0.5) ** 2) ** 0.5)


def test_pruned_trials_are_imputed_between_the_worst_and_the_median_final() -> None:
    study = _study_with_pruned_cluster(optuna.samplers.RandomSampler(seed=0))
    trials = study.get_trials()
    completed = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    early = copy.copy(pruned[0])
    early.intermediate_values = {}
    good = copy.copy(pruned[1])
    good.intermediate_values = {3: 0.95}
    values = [t.value for t in impute_pruned([pruned[2], early, good], completed, MAX)]
    assert values == [0.7, 0.7, 0.8]  # floored at the worst, worst, capped at the median
    assert pruned[2].state == optuna.trial.TrialState.PRUNED  # the study's trial is untouched
    minimised = impute_pruned([pruned[2]], completed, StudyDirection.MINIMIZE)
    assert [t.value for t in minimised] == [0.8]  # for a loss, 0.4 is better than median 0.8


def test_pruned_trials_push_the_gp_away_from_their_region() -> None:
    plain = _study_with_pruned_cluster(optuna.samplers.GPSampler(seed=3, n_startup_trials=5))
    ours = _study_with_pruned_cluster(BoundedGPSampler(seed=3, n_startup_trials=5))
    ignoring = plain.ask(FLOATS).params
    learning = ours.ask(FLOATS).params
    assert _distance_from_cluster(ignoring) < 0.3  # Optuna's GP stays by the best point
    assert _distance_from_cluster(learning) > 0.6  # ours learnt the pruner's verdict


def test_pruned_trials_count_toward_the_gp_startup() -> None:
    study = _study_with_pruned_cluster(BoundedGPSampler(seed=3, n_startup_trials=12))
    params = study.ask(FLOATS).params  # 6 complete + 10 pruned >= 12: the GP proposes
    assert _distance_from_cluster(params) > 0.2


def test_running_trials_spread_a_batch_of_asks() -> None:
    study = _study_with_pruned_cluster(BoundedGPSampler(seed=5, n_startup_trials=5))
    batch = [study.ask(FLOATS).params for _ in range(4)]  # none told: all running
    points = {(round(p["x"], 3), round(p["y"], 3)) for p in batch}
    assert len(points) == 4
    gaps = [
        ((a["x"] - b["x"]) ** 2 + (a["y"] - b["y"]) ** 2) ** 0.5
        for i, a in enumerate(batch)
        for b in batch[i + 1 :]
    ]
    assert min(gaps) > 0.02


def test_the_learning_gp_reproduces_under_a_seed() -> None:
    def proposals(seed: int) -> list[dict[str, Any]]:
        study = _study_with_pruned_cluster(BoundedGPSampler(seed=seed, n_startup_trials=5))
        return [study.ask(FLOATS).params for _ in range(3)]

    assert proposals(7) == proposals(7)
    assert proposals(7) != proposals(8)
