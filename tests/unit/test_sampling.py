"""Algorithm and pruner names map to seeded Optuna objects tuned for parallel trials."""

from __future__ import annotations

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
    make_pruner,
    make_sampler,
    settings_problems,
)
from rheostat.space import build_space
from rheostat.spec import ALGORITHMS, AlgorithmSpec, EarlyStopping, Parameter

optuna.logging.set_verbosity(optuna.logging.WARNING)

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
    distributions = {"x": optuna.distributions.FloatDistribution(0, 1)}
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
