"""The search space: spec parameters as Optuna distributions, and grid expansion.

The LR range test can change the space before the first trial (narrow the learning
rate's range, or fix it), so the space is built from the spec *and* the test's
outcome. Fixed parameters are passed to every trial but never sampled.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from rheostat.spec import Parameter, Scalar

# A grid larger than this is almost certainly a typo (a tiny step), not a plan.
MAX_GRID_POINTS = 1_000_000
# A discrete space up to this size is listed point by point once samplers stop
# finding untried points, so a budget as large as the space runs every point once.
MAX_ENUMERATED_POINTS = 100_000

PointKey = tuple[float | int, ...]


@dataclass(frozen=True)
class LrOverride:
    """What the LR range test decided for the learning-rate parameter."""

    parameter: str
    policy: str  # "narrow", "fix", "report" or "schedule" (narrowed around the peak)
    suggested_lr: float
    lower: float
    upper: float


@dataclass(frozen=True)
class SearchSpace:
    """Sampled distributions plus parameters held fixed for every trial."""

    distributions: dict[str, BaseDistribution]
    fixed: dict[str, Scalar] = field(default_factory=dict)
    grid: dict[str, list[Scalar]] | None = None

    def complete(self, sampled: Mapping[str, Scalar]) -> dict[str, Scalar]:
        """A trial's full parameter set: sampled values plus the fixed ones."""
        return {**sampled, **self.fixed}

    def key(self, params: Mapping[str, Scalar]) -> PointKey:
        """Which point of the space `params` is, immune to float rounding.

        Two proposals of a stepped float can differ in the last bit (0.3 against
        0.30000000000000004) and still be one point; a categorical's `1` and `True`
        compare equal in Python and are two. Fixed parameters are the same for every
        trial and left out.
        """
        return tuple(_point_index(d, params[n]) for n, d in self.distributions.items())

    @property
    def size(self) -> int | None:
        """How many points the space has; None when a parameter is continuous."""
        total = 1
        for dist in self.distributions.values():
            values = finite_values(dist)
            if values is None:
                return None
            total *= len(values)
        return total

    def points(self) -> Iterator[dict[str, Scalar]]:
        """Every point of a discrete space (call only when `size` is not None)."""
        names = list(self.distributions)
        columns = [finite_values(self.distributions[n]) or [] for n in names]
        for values in itertools.product(*columns):
            yield dict(zip(names, values, strict=True))


def finite_values(dist: BaseDistribution) -> list[Scalar] | None:
    """Every value a discrete distribution can take; None for a continuous one."""
    if isinstance(dist, CategoricalDistribution):
        return [c for c in dist.choices if c is not None]
    if isinstance(dist, IntDistribution):
        return list(range(dist.low, dist.high + 1, dist.step))
    if isinstance(dist, FloatDistribution) and dist.step is not None:
        count = math.floor((dist.high - dist.low) / dist.step + 1e-9) + 1
        digits = max(0, -math.floor(math.log10(dist.step)) + 6)
        return [round(dist.low + i * dist.step, digits) for i in range(count)]
    return None


def _point_index(dist: BaseDistribution, value: Scalar) -> float | int:
    if isinstance(dist, CategoricalDistribution):
        return int(dist.to_internal_repr(value))
    if isinstance(dist, FloatDistribution) and dist.step is not None:
        return round((float(value) - dist.low) / dist.step)
    return float(value) if isinstance(dist, FloatDistribution) else int(value)


def distribution(parameter: Parameter) -> BaseDistribution:
    """One parameter as an Optuna distribution."""
    if parameter.type == "categorical":
        assert parameter.values is not None
        return CategoricalDistribution(list(parameter.values))
    assert parameter.min is not None
    assert parameter.max is not None
    if parameter.type == "int":
        return IntDistribution(
            int(parameter.min),
            int(parameter.max),
            log=parameter.log,
            step=int(parameter.step or 1),
        )
    return FloatDistribution(parameter.min, parameter.max, log=parameter.log, step=parameter.step)


def grid_values(parameter: Parameter) -> list[Scalar]:
    """Every point of a discrete parameter, ends included."""
    if parameter.type == "categorical":
        assert parameter.values is not None
        return list(parameter.values)
    assert parameter.min is not None
    assert parameter.max is not None
    step = parameter.step or 1
    count = math.floor((parameter.max - parameter.min) / step + 1e-9) + 1
    if parameter.type == "int":
        return [int(parameter.min + i * step) for i in range(count)]
    # Round to the step's precision so that 0.1 * 3 prints as 0.3, not 0.30000000000000004.
    digits = max(0, -math.floor(math.log10(step)) + 6)
    return [round(parameter.min + i * step, digits) for i in range(count)]


def grid_size(parameters: Sequence[Parameter]) -> int:
    """Number of points in the full grid."""
    return math.prod(len(grid_values(p)) for p in parameters)


def apply_lr_override(
    parameters: Sequence[Parameter], override: LrOverride | None
) -> list[Parameter]:
    """The parameters after the LR range test's policy has been applied."""
    if override is None or override.policy == "report":
        return list(parameters)
    result = []
    for parameter in parameters:
        if parameter.name == override.parameter and override.policy in ("narrow", "schedule"):
            bounds = {"min": override.lower, "max": override.upper}
            result.append(parameter.model_copy(update=bounds))
        else:
            result.append(parameter)
    return result


def build_space(
    parameters: Sequence[Parameter], override: LrOverride | None = None, *, grid: bool = False
) -> SearchSpace:
    """Turn spec parameters (and the LR test's outcome) into a search space."""
    fixed: dict[str, Scalar] = {}
    if override is not None and override.policy == "fix":
        fixed[override.parameter] = override.suggested_lr
    sampled = [p for p in apply_lr_override(parameters, override) if p.name not in fixed]
    distributions = {p.name: distribution(p) for p in sampled}
    grid_points = {p.name: grid_values(p) for p in sampled} if grid else None
    return SearchSpace(distributions=distributions, fixed=fixed, grid=grid_points)
