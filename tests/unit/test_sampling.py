"""Algorithm and pruner names map to seeded Optuna objects tuned for parallel trials."""

from __future__ import annotations

import optuna
import pytest

from rheostat.sampling import AskTellGridSampler, SettingsError, make_pruner, make_sampler
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
