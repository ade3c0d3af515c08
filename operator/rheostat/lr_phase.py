"""What the LR range test's outcome does to a study: pure glue between spec and analysis.

`lr_range` knows curves; this module knows the study: which parameter is the
learning rate, its range, the policy (narrow, fix, report), and how the outcome is
stored with the study so a resumed or rebuilt study applies the same decision.
A curve the analysis cannot use, of any shape, becomes an error message: the study
then runs over the user's own range, never stops on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rheostat import lr_range
from rheostat.space import LrOverride
from rheostat.spec import StudySpec, default_value


@dataclass(frozen=True)
class LrOutcome:
    """The analysed test, or why there is none (exactly one is set)."""

    result: lr_range.LrRangeResult | None = None
    error: str | None = None


def start_params(spec: StudySpec) -> dict[str, Any]:
    """The parameters the sweep runs with: defaults, and the LR at the sweep's start."""
    test = spec.lr_range_test
    assert test is not None
    params: dict[str, Any] = {p.name: default_value(p) for p in spec.parameters}
    params[test.parameter] = test.min_lr
    return params


def analyse(spec: StudySpec, lrs: Sequence[float], losses: Sequence[float]) -> LrOutcome:
    """Analyse a reported curve; any curve it cannot use becomes an error, not a crash."""
    test = spec.lr_range_test
    assert test is not None
    try:
        result = lr_range.analyse(lrs, losses, rule=test.suggestion, bounds=_bounds(spec))
    except (lr_range.LrRangeError, ValueError, TypeError) as error:
        return LrOutcome(error=f"the LR range test's curve could not be used: {error}")
    return LrOutcome(result=result)


def override(spec: StudySpec, result: lr_range.LrRangeResult) -> LrOverride:
    """The policy applied to the space.

    `fix` (or `schedule`) with a suggestion (a peak) outside the parameter's own
    range is not obeyed: the curve disagrees with the user (a curve that rises
    from its first point makes `minimum` suggest the sweep's start, far below any
    sane LR), so the study searches the user's range and the status says why
    (:func:`disagreement`).
    """
    test = spec.lr_range_test
    assert test is not None
    policy = test.apply
    if policy in ("fix", "schedule") and disagreement(spec, result) is not None:
        policy = "report"
    if policy == "schedule":
        assert result.schedule is not None  # else disagreement() said why
        peak = result.schedule[1]
        lower, upper = lr_range.peak_band(peak, *_bounds(spec))
        return LrOverride(test.parameter, policy, peak, lower, upper)
    return LrOverride(test.parameter, policy, result.suggested_lr, result.lower, result.upper)


def trial_schedule(
    spec: StudySpec, result: lr_range.LrRangeResult | None, params: Mapping[str, Any]
) -> tuple[float, float] | None:
    """A trial's (base, peak) LR under `apply: schedule`, or None.

    The peak is the trial's own value of the LR parameter (searched around the
    test's peak); the base keeps the test's base-to-peak ratio, so a trial that
    tries a higher peak cycles from a proportionally higher base.
    """
    test = spec.lr_range_test
    if test is None or result is None or override(spec, result).policy != "schedule":
        return None
    assert result.schedule is not None
    base, peak = result.schedule
    trial_peak = float(params.get(test.parameter, peak))
    return trial_peak * base / peak, trial_peak


def disagreement(spec: StudySpec, result: lr_range.LrRangeResult) -> str | None:
    """Why a `fix` was not applied, if the suggestion lies outside the user's range."""
    test = spec.lr_range_test
    assert test is not None
    low, high = _bounds(spec)
    if test.apply == "schedule":
        if result.schedule is None:
            return (
                "the curve has no steep descent to take a schedule's bounds from; "
                "the study searches the whole range and the trials get no schedule"
            )
        if not low <= result.schedule[1] <= high:
            return (
                f"the schedule's peak lr {result.schedule[1]:.3g} lies outside "
                f"{test.parameter}'s range [{low:g}, {high:g}]; the study searches the "
                "whole range and the trials get no schedule"
            )
        return None
    if test.apply != "fix" or low <= result.suggested_lr <= high:
        return None
    return (
        f"the suggested lr {result.suggested_lr:.3g} lies outside {test.parameter}'s range "
        f"[{low:g}, {high:g}]; not fixed, the study searches the whole range"
    )


def summary(spec: StudySpec, result: lr_range.LrRangeResult) -> dict[str, Any]:
    """The test's outcome as status and results.json show it (small and finite)."""
    applied = override(spec, result)
    out: dict[str, Any] = {
        "rule": result.rule,
        "suggestedLr": result.suggested_lr,
        "suggestions": dict(result.suggestions),
        "policy": applied.policy,
        "steps": len(result.lrs),
    }
    if applied.policy in ("narrow", "schedule"):
        out["narrowedTo"] = [applied.lower, applied.upper]
    if result.schedule is not None:
        out["schedule"] = {"base": result.schedule[0], "peak": result.schedule[1]}
    warning = disagreement(spec, result)
    if warning is not None:
        out["warning"] = warning
    return out


def stored(result: lr_range.LrRangeResult) -> dict[str, Any]:
    """The curve to keep with the study: its usable (finite) part.

    Analysis cuts a curve at its first non-finite point, so keeping only that part
    loses nothing a rebuilt study needs, and keeps the stored form valid JSON: the
    API server refuses a status with NaN in it.
    """
    return {"lrs": list(result.lrs), "losses": list(result.losses)}


def restore(spec: StudySpec, kept: Mapping[str, Any] | None) -> LrOutcome | None:
    """The outcome kept with a study, replayed; None when the test has not ended."""
    if spec.lr_range_test is None or kept is None:
        return None
    if "error" in kept:
        return LrOutcome(error=str(kept["error"]))
    lrs, losses = kept.get("lrs"), kept.get("losses")
    if not isinstance(lrs, list) or not isinstance(losses, list):
        return LrOutcome(error="the stored LR range test has no curve")
    try:
        return analyse(spec, [_float(v) for v in lrs], [_float(v) for v in losses])
    except (TypeError, ValueError) as error:
        return LrOutcome(error=f"the stored LR range test's curve could not be read: {error}")


def _float(value: Any) -> float:
    """Stored points are numbers; a null (how JSON writes NaN) reads as NaN."""
    return math.nan if value is None else float(value)


def _bounds(spec: StudySpec) -> tuple[float, float]:
    test = spec.lr_range_test
    assert test is not None
    parameter = next(p for p in spec.parameters if p.name == test.parameter)
    assert parameter.min is not None
    assert parameter.max is not None
    return parameter.min, parameter.max
