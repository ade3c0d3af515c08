"""Search-space construction: distributions, grid expansion, the LR test's override."""

from __future__ import annotations

import itertools
import math

from hypothesis import given
from hypothesis import strategies as st
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from rheostat.space import LrOverride, build_space, grid_size, grid_values
from rheostat.spec import Parameter


def param(**fields: object) -> Parameter:
    return Parameter.model_validate(fields)


def test_distributions_follow_the_spec() -> None:
    space = build_space(
        [
            param(name="lr", type="float", min=1e-4, max=1.0, log=True),
            param(name="layers", type="int", min=1, max=8, step=1),
            param(name="opt", type="categorical", values=["sgd", "adam"]),
        ]
    )
    assert space.distributions["lr"] == FloatDistribution(1e-4, 1.0, log=True)
    assert space.distributions["layers"] == IntDistribution(1, 8)
    assert space.distributions["opt"] == CategoricalDistribution(["sgd", "adam"])
    assert space.grid is None


@given(
    low=st.integers(-50, 50),
    span=st.integers(1, 40),
    step=st.sampled_from([0.1, 0.25, 0.5, 1.0, 2.5]),
)
def test_float_grid_covers_both_ends_evenly(low: int, span: int, step: float) -> None:
    high = low + span
    values = grid_values(param(name="x", type="float", min=low, max=high, step=step))
    assert values[0] == low
    assert math.isclose(values[-1], low + step * (len(values) - 1))
    assert high - step < values[-1] <= high + 1e-9
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(values)}
    assert gaps <= {round(step, 9)}


@given(
    sizes=st.lists(st.integers(1, 5), min_size=1, max_size=4),
)
def test_grid_size_is_the_product_of_axes(sizes: list[int]) -> None:
    parameters = [
        param(name=f"p{i}", type="categorical", values=list(range(n))) for i, n in enumerate(sizes)
    ]
    assert grid_size(parameters) == math.prod(sizes)
    space = build_space(parameters, grid=True)
    assert space.grid is not None
    assert [len(v) for v in space.grid.values()] == sizes


def test_narrow_replaces_the_bounds_and_fix_removes_the_parameter() -> None:
    parameters = [
        param(name="lr", type="float", min=1e-5, max=1.0, log=True),
        param(name="m", type="float", min=0, max=1),
    ]
    narrow = build_space(parameters, LrOverride("lr", "narrow", 0.01, 0.001, 0.05))
    assert narrow.distributions["lr"] == FloatDistribution(0.001, 0.05, log=True)
    fixed = build_space(parameters, LrOverride("lr", "fix", 0.01, 0.001, 0.05))
    assert "lr" not in fixed.distributions
    assert fixed.complete({"m": 0.5}) == {"m": 0.5, "lr": 0.01}
    report = build_space(parameters, LrOverride("lr", "report", 0.01, 0.001, 0.05))
    assert report.distributions["lr"] == FloatDistribution(1e-5, 1.0, log=True)
