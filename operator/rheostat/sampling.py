"""Algorithm and pruner names from the spec, as Optuna samplers and pruners.

Defaults are chosen for trials that run in parallel: TPE with the constant liar
(running trials count as pessimistic results, so parallel asks spread out), the GP
sampler's batch acquisition over running trials (on a bounded history, so a long
study's asks stay around a second), scrambled Sobol points for QMC, NSGA-II
generations small enough to evolve within a modest budget.
User settings from the spec override any of them.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers._gp.sampler import (  # how Optuna shares a running trial's params
    _RELATIVE_PARAMS_KEY,
    _SYSTEM_ATTR_MAX_LENGTH,
    _get_params,
)
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from rheostat.pruning import AlignedMedianPruner
from rheostat.space import SearchSpace
from rheostat.spec import AlgorithmSpec, EarlyStopping

T = TypeVar("T")


class AskTellGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its stop-the-loop call.

    GridSampler calls `study.stop()` once every point was tried, which only works
    inside `study.optimize`; with ask-and-tell the engine caps the budget at the
    grid's size itself, so the stop is left out.
    """

    def after_trial(self, *args: Any, **kwargs: Any) -> None:
        return None


# How many finished trials the GP conditions on. Its cost grows faster than
# linearly with them: measured on this project's 2-core machine, one ask took about
# 1 s at 300 trials, 2-3 s at 500 and 4-14 s at 1,000 (scripted in bench/README.md).
GP_MAX_HISTORY = 300
# NSGA-II's default generation size (see make_sampler).
NSGA2_POPULATION = 20


class BoundedGPSampler(optuna.samplers.GPSampler):
    """Optuna's GP sampler, conditioned on at most `max_history` finished trials.

    An ask is a GP fit plus an acquisition search over every finished trial, so a
    long study's asks would grow without bound (and hold a pass thread, and the GIL,
    for seconds). Past the cap the GP sees the best half of the cap (the incumbent
    region, where the acquisition matters) and the most recent rest (where the
    search is now); older, worse trials add little. Deterministic under a seed.
    Running trials still enter as the GP's batch points, as in Optuna.
    """

    def __init__(self, *, max_history: int = GP_MAX_HISTORY, **options: Any) -> None:
        if max_history < 10:
            raise ValueError(f"max_history must be at least 10, got {max_history}")
        super().__init__(**options)
        self.max_history = max_history

    def sample_relative(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        search_space: dict[str, BaseDistribution],
    ) -> dict[str, Any]:
        """Optuna's ask, conditioned on pruned trials too (single objective).

        Optuna's GPSampler reads only COMPLETE and RUNNING trials, so under a median
        pruner (most trials pruned) the GP saw a handful of points and kept proposing
        the regions the pruner had just rejected. Here pruned trials enter with a
        pessimistic value (`impute_pruned`) and count toward the startup trials;
        running trials stay Optuna's batch points (qLogEI fantasises their outcomes:
        the principled form of the constant liar), so parallel asks spread out.
        """
        if search_space == {} or len(study.directions) != 1:
            return super().sample_relative(study, trial, search_space)
        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        trials = study._get_trials(deepcopy=False, states=states, use_cache=False)
        completed = [t for t in trials if t.state == TrialState.COMPLETE]
        pruned = [
            t
            for t in trials
            if t.state == TrialState.PRUNED and search_space.keys() <= t.params.keys()
        ]
        running = [
            t
            for t in trials
            if t.state == TrialState.RUNNING and search_space.keys() <= _get_params(t).keys()
        ]
        if not completed or len(completed) + len(pruned) < self._n_startup_trials:
            return {}
        observed = completed + impute_pruned(pruned, completed, study.direction)
        observed.sort(key=lambda t: t.number)
        import torch  # Optuna's GP needs it; imported here as Optuna itself does

        with torch.device("cpu"):
            params = self._sample_relative_impl(study, observed, running, search_space)
        if params:
            text = json.dumps(params)
            for i in range(0, len(text), _SYSTEM_ATTR_MAX_LENGTH):
                study._storage.set_trial_system_attr(
                    trial._trial_id,
                    f"{_RELATIVE_PARAMS_KEY}:{i // _SYSTEM_ATTR_MAX_LENGTH}",
                    text[i : i + _SYSTEM_ATTR_MAX_LENGTH],
                )
        return params

    def _sample_relative_impl(
        self,
        study: optuna.Study,
        completed_trials: list[FrozenTrial],
        running_trials: list[FrozenTrial],
        search_space: dict[str, BaseDistribution],
    ) -> dict[str, Any]:
        if len(study.directions) == 1:
            kept = bounded_history(completed_trials, study.direction, self.max_history)
        else:
            # Several objectives have no single "best half": keep the most recent.
            kept = completed_trials[-self.max_history :]
        return super()._sample_relative_impl(study, kept, running_trials, search_space)


def impute_pruned(
    pruned: list[FrozenTrial], completed: list[FrozenTrial], direction: StudyDirection
) -> list[FrozenTrial]:
    """Pruned trials as COMPLETE copies carrying a pessimistic value, for the GP.

    A pruner's verdict is "no better than the median": so a pruned trial's value is
    its last intermediate value, capped at the completed trials' median final value
    (a partial curve may already beat weak finished runs, the verdict says it would
    not beat the typical one) and floored at the worst completed value (a diverged
    run's 0.1 would otherwise dominate the GP's standardisation and flatten the rest
    of the surface). A trial pruned before reporting anything gets the worst value.
    """
    if not pruned or not completed:
        return []
    sign = 1.0 if direction == StudyDirection.MAXIMIZE else -1.0
    finals = [sign * float(t.value) for t in completed if t.value is not None]
    if not finals:
        return []
    worst, median = min(finals), statistics.median(finals)
    imputed = []
    for trial in pruned:
        steps = trial.intermediate_values
        last = sign * steps[max(steps)] if steps else -math.inf
        score = min(max(last, worst), median) if math.isfinite(last) else worst
        twin = copy.copy(trial)
        twin.state = TrialState.COMPLETE
        twin.values = [sign * score]
        imputed.append(twin)
    return imputed


def bounded_history(
    trials: list[FrozenTrial], direction: StudyDirection, cap: int
) -> list[FrozenTrial]:
    """The best `cap // 2` trials and the most recent others, in trial order."""
    if len(trials) <= cap:
        return trials
    sign = -1.0 if direction == StudyDirection.MAXIMIZE else 1.0
    best = sorted(trials, key=lambda t: (sign * float(t.value or 0.0), t.number))[: cap // 2]
    chosen = {t.number for t in best}
    for trial in sorted(trials, key=lambda t: t.number, reverse=True):
        if len(chosen) >= cap:
            break
        chosen.add(trial.number)
    return [t for t in trials if t.number in chosen]


class SettingsError(ValueError):
    """A sampler or pruner setting that Optuna does not accept."""


def _construct(
    kind: str, factory: Callable[..., T], defaults: Mapping[str, Any], settings: Mapping[str, Any]
) -> T:
    try:
        return factory(**{**defaults, **settings})
    except TypeError as error:
        raise SettingsError(f"{kind} settings: {error}") from None


def make_sampler(algorithm: AlgorithmSpec, space: SearchSpace) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for an algorithm name, seeded and set up for parallel trials."""
    seed = algorithm.seed
    settings = algorithm.settings
    defaults: dict[str, Any]
    name = algorithm.name
    if name == "grid":
        assert space.grid is not None, "a grid search needs a grid space"
        return _construct(
            "grid", AskTellGridSampler, {"search_space": space.grid, "seed": seed}, settings
        )
    if name == "random":
        return _construct("random", optuna.samplers.RandomSampler, {"seed": seed}, settings)
    if name == "tpe":
        defaults = {
            "seed": seed,
            "constant_liar": True,
            "multivariate": True,
            "n_startup_trials": 5,
        }
        return _construct("tpe", optuna.samplers.TPESampler, defaults, settings)
    if name == "bayesian":
        defaults = {"seed": seed, "n_startup_trials": 5, "deterministic_objective": False}
        return _construct("bayesian", BoundedGPSampler, defaults, settings)
    if name == "cmaes":
        defaults = {"seed": seed, "warn_independent_sampling": False, "n_startup_trials": 1}
        return _construct("cmaes", optuna.samplers.CmaEsSampler, defaults, settings)
    if name == "qmc":
        defaults = {
            "seed": seed,
            "scramble": True,
            "qmc_type": "sobol",
            "warn_independent_sampling": False,
        }
        return _construct("qmc", optuna.samplers.QMCSampler, defaults, settings)
    if name == "nsga2":
        # Optuna's default population is 50: a study of a few dozen trials would
        # never leave its random first generation. 20 gives a 100-trial study five.
        defaults = {"seed": seed, "population_size": NSGA2_POPULATION}
        return _construct("nsga2", optuna.samplers.NSGAIISampler, defaults, settings)
    raise SettingsError(f"unknown algorithm {name!r}")


def make_pruner(early_stopping: EarlyStopping) -> optuna.pruners.BasePruner:
    """The Optuna pruner for the spec's early-stopping block."""
    settings = early_stopping.settings
    name = early_stopping.pruner
    defaults: dict[str, Any]
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        # Optuna's, over every completed trial that reached the step (see rheostat.pruning).
        return _construct("median", AlignedMedianPruner, {"n_startup_trials": 5}, settings)
    if name == "successive-halving":
        defaults = {"min_resource": 1, "reduction_factor": 3}
        return _construct(
            "successive-halving", optuna.pruners.SuccessiveHalvingPruner, defaults, settings
        )
    if name == "hyperband":
        defaults = {"min_resource": 1, "reduction_factor": 3}
        return _construct("hyperband", optuna.pruners.HyperbandPruner, defaults, settings)
    raise SettingsError(f"unknown pruner {name!r}")


def settings_problems(
    algorithm: AlgorithmSpec, early_stopping: EarlyStopping, space: SearchSpace
) -> list[tuple[str, str]]:
    """(field path, message) for sampler or pruner settings Optuna would refuse."""
    problems = []
    try:
        make_sampler(algorithm, space)
    except (SettingsError, ValueError) as error:
        problems.append(("spec.algorithm.settings", str(error)))
    try:
        make_pruner(early_stopping)
    except (SettingsError, ValueError) as error:
        problems.append(("spec.earlyStopping.settings", str(error)))
    return problems
