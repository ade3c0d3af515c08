"""Checks beyond the schema that need the search space: the same for CLI and operator.

The schema and CEL rules catch malformed studies at admission. A few problems only
show once the space is built: sampler or pruner settings Optuna refuses, or a grid
too large to be meant. They are reported with a field path like every other problem.
"""

from __future__ import annotations

from rheostat.sampling import settings_problems
from rheostat.space import MAX_GRID_POINTS, build_space, grid_size
from rheostat.spec import InvalidStudyError, SpecProblem, TuningStudy, parse_study


def runtime_problems(study: TuningStudy) -> list[SpecProblem]:
    """Problems of a schema-valid study that only show once its space is built."""
    spec = study.spec
    grid = spec.algorithm.name == "grid"
    if grid and grid_size(spec.parameters) > MAX_GRID_POINTS:
        return [
            SpecProblem(
                "spec.parameters",
                f"the grid has {grid_size(spec.parameters):,} points, more than "
                f"{MAX_GRID_POINTS:,}: use larger steps or another algorithm",
            )
        ]
    space = build_space(spec.parameters, grid=grid)
    return [
        SpecProblem(path, message)
        for path, message in settings_problems(spec.algorithm, spec.early_stopping, space)
    ]


def load_study(text: str) -> TuningStudy:
    """Parse and fully validate a study; raise InvalidStudyError with every problem."""
    study = parse_study(text)
    problems = runtime_problems(study)
    if problems:
        raise InvalidStudyError(problems)
    return study
