"""Unit tests for the pure LR-range-test analysis (``rheostat.lr_range``)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rheostat import lr_range
from rheostat.lr_range import (
    DEFAULT_RULE,
    SUGGESTION_RULES,
    LrRangeError,
    analyse,
    diverged,
    exponential_schedule,
    minimum,
    narrowed_bounds,
    schedule_bounds,
    slide,
    smooth,
    steep,
    valley,
)

FAST = settings(max_examples=40, deadline=None)


def synthetic_curve(
    c: float,
    *,
    steps: int = 100,
    noise: float = 0.0,
    seed: int = 0,
    lo: float = 1e-7,
    hi: float = 10,
) -> tuple[list[float], list[float]]:
    """A realistic range-test curve whose raw loss is lowest at ``lr = c``.

    Flat at small lr, a smooth descent over the decade below ``c``, a steep rise
    above it (the blow-up), times multiplicative noise.
    """
    rng = np.random.default_rng(seed)
    lrs = exponential_schedule(lo, hi, steps)
    losses = []
    for lr in lrs:
        u = math.log10(lr / c)
        if u < -1:
            v = 2.3
        elif u <= 0:
            v = 2.3 - 2.0 * (1 - math.cos(math.pi * (u + 1))) / 2
        else:
            v = 0.3 + 6.0 * u * u
        losses.append(v * (1 + noise * float(rng.standard_normal())))
    return lrs, losses


def run_until_divergence(lrs: list[float], losses: list[float]) -> tuple[list[float], list[float]]:
    """What the trainer records: stop at the first step where the sweep diverged."""
    for k in range(len(losses)):
        if diverged(smooth(losses[: k + 1])):
            return lrs[: k + 1], losses[: k + 1]
    return lrs, losses


# ------------------------------------------------------------------ schedule


@FAST
@given(
    lo_exp=st.floats(-9, -1),
    decades=st.floats(0.5, 10),
    steps=st.integers(2, 400),
)
def test_schedule_hits_both_ends_and_is_monotone(lo_exp: float, decades: float, steps: int) -> None:
    lo, hi = 10**lo_exp, 10 ** (lo_exp + decades)
    lrs = exponential_schedule(lo, hi, steps)
    assert len(lrs) == steps
    assert lrs[0] == lo
    assert lrs[-1] == hi
    assert all(a < b for a, b in itertools.pairwise(lrs))
    ratios = np.diff(np.log(lrs))
    assert np.allclose(ratios, ratios[0], rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize(
    ("lo", "hi", "steps"), [(0, 1, 10), (1, 1, 10), (1e-3, 1e-4, 10), (1e-3, 1, 1)]
)
def test_schedule_rejects_bad_ranges(lo: float, hi: float, steps: int) -> None:
    with pytest.raises(ValueError, match=r"."):
        exponential_schedule(lo, hi, steps)


# ------------------------------------------------------------------ smoothing


@FAST
@given(value=st.floats(-1e6, 1e6), n=st.integers(1, 300), beta=st.floats(0, 0.999))
def test_smoothing_bias_correction_keeps_constants(value: float, n: int, beta: float) -> None:
    out = smooth([value] * n, beta)
    assert out == pytest.approx([value] * n, rel=1e-9, abs=1e-9)


def test_smoothing_matches_definition() -> None:
    losses = [3.0, 1.0, 2.0]
    beta = 0.5
    v, expected = 0.0, []
    for k, loss in enumerate(losses):
        v = beta * v + (1 - beta) * loss
        expected.append(v / (1 - beta ** (k + 1)))
    assert smooth(losses, beta) == pytest.approx(expected)
    assert smooth(losses, 0.0) == losses


def test_smoothing_propagates_nan() -> None:
    out = smooth([1.0, math.nan, 1.0])
    assert math.isfinite(out[0])
    assert not any(math.isfinite(v) for v in out[1:])


# ------------------------------------------------------------------ divergence


def test_divergence_rule() -> None:
    assert not diverged([])
    assert not diverged([100.0])  # k = 0: nothing to compare with
    assert not diverged([1.0, 0.5, 2.0])  # exactly 4x best is not above it
    assert diverged([1.0, 0.5, 2.01])
    assert not diverged([1.0, 0.5, 2.4], factor=5.0)
    assert diverged([1.0, math.inf])
    assert diverged([1.0, math.nan])
    assert not diverged([-1.0, -2.0, -1.5])  # negative losses do not stop at once
    assert diverged([-1.0, -2.0, 5.0])


def test_sweep_on_synthetic_curve_stops_after_the_blow_up() -> None:
    lrs, losses = synthetic_curve(1e-3)
    cut_lrs, _ = run_until_divergence(lrs, losses)
    assert len(cut_lrs) < len(lrs)
    assert 1e-3 < cut_lrs[-1] < 1.0  # the EMA lags the raw blow-up a little


# ------------------------------------------------------------------ suggestions


@FAST
@given(
    log_c=st.floats(-5, -1),
    steps=st.integers(80, 200),
    noise=st.floats(0, 0.05),
    seed=st.integers(0, 2**16),
)
def test_valley_and_steep_land_about_a_decade_below_the_minimum(
    log_c: float, steps: int, noise: float, seed: int
) -> None:
    c = 10**log_c
    lrs, losses = run_until_divergence(*synthetic_curve(c, steps=steps, noise=noise, seed=seed))
    result = analyse(lrs, losses, rule="valley")
    for rule in ("valley", "steep"):
        offset = math.log10(result.suggestions[rule] / c)
        assert -1.7 <= offset <= 0.3, (rule, offset)
    assert result.rule == "valley"
    assert result.suggested_lr == result.suggestions["valley"]
    # The narrowed range contains the suggestion and stays inside the original one.
    assert lrs[0] <= result.lower <= result.suggested_lr <= result.upper <= lrs[-1]
    assert result.upper > result.lower * 1.01


def test_every_rule_is_reported_on_a_clean_curve() -> None:
    lrs, losses = run_until_divergence(*synthetic_curve(1e-2))
    result = analyse(lrs, losses, rule="slide")
    assert set(result.suggestions) == set(SUGGESTION_RULES)
    assert result.rule == "slide"
    smoothed = smooth(losses)
    i = int(np.argmin(smoothed))
    assert result.suggestions["minimum"] == pytest.approx(lrs[i] / 10)
    for value in result.suggestions.values():
        assert 1e-4 < value < 1e-1


@pytest.mark.parametrize("fn", [valley, steep, minimum, slide])
def test_rules_are_pure_functions_of_the_curve(fn: object) -> None:
    lrs, losses = run_until_divergence(*synthetic_curve(1e-3, noise=0.02))
    smoothed = smooth(losses)
    assert callable(fn)
    first = fn(lrs[10:-5], smoothed[10:-5])
    assert first == fn(lrs[10:-5], smoothed[10:-5])
    low = lrs[10] / 10 if fn is minimum else lrs[10]
    assert low <= first <= lrs[-6]


def test_valley_is_the_middle_of_a_clean_descent() -> None:
    lrs = [float(i + 1) for i in range(10)]
    losses = [5.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.4, 2.0, 3.0]
    # Longest strictly decreasing stretch: indices 1..7 (L = 7, span 6) -> 1 + 2 + 1.
    assert valley(lrs, losses) == 5.0


def test_rules_without_a_descent_raise_and_analyse_falls_back() -> None:
    lrs = exponential_schedule(1e-5, 1, 40)
    rising = [1.0 + i for i in range(40)]
    with pytest.raises(LrRangeError, match="never decreases"):
        valley(lrs, rising)
    with pytest.raises(LrRangeError, match="never decreases"):
        steep(lrs, rising)


@pytest.mark.parametrize(
    "losses",
    [
        [1.0 + i for i in range(40)],  # rising from the first step
        [2.30 + 0.002 * math.sin(i) for i in range(40)],  # flat: a deep net that never learns
    ],
)
def test_a_curve_without_a_real_descent_gives_no_advice(losses: list[float]) -> None:
    """Held-out deep SGD nets stayed flat over the whole sweep and every rule advised
    noise (1e-6); a curve whose smoothed loss never falls 1 % is refused with a reason."""
    lrs = exponential_schedule(1e-5, 1, 40)
    with pytest.raises(LrRangeError, match="no descent to advise from"):
        analyse(lrs, losses)


# ------------------------------------------------------------------ trimming and NaN


def test_trimming_ignores_the_warm_up_and_the_tail() -> None:
    lrs = exponential_schedule(1e-6, 1, 50)
    losses = [2.0 - i / 50 for i in range(50)]  # a descent all the way
    losses[0] = -100.0  # a first point that would otherwise be the minimum
    losses[-1] = -100.0  # so would a last one
    result = analyse(lrs, losses, rule="minimum", beta=0.0)
    assert lrs[0] / 10 != result.suggested_lr
    assert lrs[-1] / 10 != result.suggested_lr


def test_curve_is_cut_at_the_first_non_finite_loss() -> None:
    lrs, losses = synthetic_curve(1e-2)
    losses = losses[:80]
    lrs = lrs[:80]
    losses[70] = math.nan
    losses[75] = 0.0  # would be the minimum if the cut did not happen
    result = analyse(lrs, losses)
    assert len(result.lrs) == len(result.losses) == len(result.smoothed) == 70
    assert all(math.isfinite(v) for v in result.smoothed)
    assert max(result.suggestions.values()) <= lrs[69]


def test_short_curves_raise_with_a_reason() -> None:
    lrs = exponential_schedule(1e-5, 1, 6)
    with pytest.raises(LrRangeError, match="usable points"):
        analyse(lrs, [1.0, 0.9, 0.8, 0.7, 0.6, 0.5])
    with pytest.raises(LrRangeError, match="no finite points"):
        analyse(lrs, [math.nan] * 6)
    with pytest.raises(LrRangeError, match="usable points"):
        analyse(exponential_schedule(1e-5, 1, 100), [1.0, 0.9, 0.8, math.inf] + [0.1] * 96)
    with pytest.raises(LrRangeError, match="empty"):
        analyse([], [])


def test_analyse_rejects_unknown_rules_and_mismatched_lengths() -> None:
    lrs, losses = synthetic_curve(1e-2)
    with pytest.raises(ValueError, match="unknown suggestion rule"):
        analyse(lrs, losses, rule="median")
    with pytest.raises(ValueError, match="equally long"):
        analyse(lrs, losses[:-1])


def test_result_is_json_friendly() -> None:
    lrs, losses = run_until_divergence(*synthetic_curve(1e-3, noise=0.01))
    result = analyse(lrs, losses, bounds=(1e-6, 1.0))
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["rule"] == DEFAULT_RULE
    assert data["suggestedLr"] == result.suggested_lr
    assert 1e-6 <= data["lower"] < data["upper"] <= 1.0
    assert len(data["lrs"]) == len(data["losses"]) == len(data["smoothed"])


# ------------------------------------------------------------------ narrowing


def test_narrowing_rule() -> None:
    half = math.sqrt(10)
    # The range stops half a decade below the loss minimum.
    assert narrowed_bounds(1e-3, 1e-2, 1e-6, 1.0) == pytest.approx((1e-4, 1e-2 / half))
    # The minimum is far right: one decade above the suggestion caps the range.
    assert narrowed_bounds(1e-3, 1.0, 1e-6, 1.0) == pytest.approx((1e-4, 1e-2))
    # The minimum is close: the range still reaches the suggestion itself.
    assert narrowed_bounds(1e-3, 2e-3, 1e-6, 1.0) == pytest.approx((1e-4, 1e-3))
    # Intersected with the user's range.
    assert narrowed_bounds(1e-3, 1e-1, 5e-4, 5e-3) == pytest.approx((5e-4, 5e-3))
    # Empty or degenerate intersections fall back to the original range.
    assert narrowed_bounds(1e-3, 1e-2, 1e-1, 1.0) == (1e-1, 1.0)
    assert narrowed_bounds(1e-3, 1e-2, 1e-6, 1.005e-4) == (1e-6, 1.005e-4)


def test_default_narrowing_spans_two_to_half_a_decade_below_the_minimum() -> None:
    """With the default rule (a tenth of the minimum's lr) the search gets
    ``[m / 100, m / sqrt(10)]``: where bench/lr_advice.py found the good band."""
    lrs, losses = run_until_divergence(*synthetic_curve(1e-2, noise=0.01))
    result = analyse(lrs, losses, bounds=(1e-7, 10.0))
    assert result.rule == DEFAULT_RULE == "minimum"
    m = result.suggested_lr * 10
    assert result.lower == pytest.approx(m / 100)
    assert result.upper == pytest.approx(m / math.sqrt(10))
    assert result.lower < result.suggested_lr < result.upper


def test_default_rule_is_the_specs() -> None:
    from rheostat.spec import LrRangeTest

    assert LrRangeTest.model_fields["suggestion"].default == DEFAULT_RULE


@FAST
@given(
    s=st.floats(1e-9, 1e2),
    m=st.floats(1e-9, 1e2),
    low=st.floats(1e-9, 1e2),
    width=st.floats(1.5, 1e6),
)
def test_narrowing_never_widens(s: float, m: float, low: float, width: float) -> None:
    high = low * width
    lower, upper = narrowed_bounds(s, m, low, high)
    assert low <= lower < upper <= high
    assert (lower, upper) == (low, high) or upper > lower * 1.01
    if (lower, upper) != (low, high) and low <= s <= high:
        assert lower <= s <= upper  # the suggestion is never narrowed away


def test_public_names() -> None:
    assert SUGGESTION_RULES == ("valley", "steep", "minimum", "slide")
    assert issubclass(LrRangeError, ValueError)
    for name in lr_range.__all__:
        assert hasattr(lr_range, name)


# ------------------------------------------------------------ schedule bounds


@FAST
@given(
    log_c=st.floats(-5, -1),
    steps=st.integers(80, 200),
    noise=st.floats(0, 0.05),
    seed=st.integers(0, 2**16),
)
def test_schedule_bounds_span_the_steepest_descent(
    log_c: float, steps: int, noise: float, seed: int
) -> None:
    """The peak is at most half a decade below the loss minimum, the base at least half
    a decade below the peak, both inside the descent (the decade below the minimum,
    give or take the EMA's lag)."""
    c = 10**log_c
    lrs, losses = run_until_divergence(*synthetic_curve(c, steps=steps, noise=noise, seed=seed))
    result = analyse(lrs, losses)
    assert result.schedule is not None
    base, peak = result.schedule
    lowest = result.lrs[int(np.argmin(result.smoothed))]
    assert peak <= lowest / math.sqrt(10) * (1 + 1e-9)
    assert base <= peak / math.sqrt(10) * (1 + 1e-9)
    assert -1.7 <= math.log10(base / c) < math.log10(peak / c) <= 0.3


def test_schedule_bounds_of_a_clean_cosine_descent() -> None:
    """The loss falls along half a cosine over [c/10, c] and stays flat above: the steep
    region (slope at least half its steepest) is u in [-5/6, -1/6] (u = log10(lr/c)); the
    peak is capped half a decade below the minimum at c, and the base is the region's
    lower end or half a decade below the peak, whichever is lower."""
    lrs = exponential_schedule(1e-4, 1.0, 201)
    c = 1e-2
    losses = [
        2.3 - (1 - math.cos(math.pi * (min(max(math.log10(lr / c), -1.0), 0.0) + 1))) for lr in lrs
    ]
    base, peak = schedule_bounds(lrs, losses)
    assert math.log10(peak / c) == pytest.approx(-0.5, abs=0.03)
    assert math.log10(base / c) == pytest.approx(-1.0, abs=0.03)


def test_a_sharp_drop_gives_half_a_decade_below_its_minimum() -> None:
    lrs = exponential_schedule(1e-4, 1.0, 101)
    losses = [2.0 if lr < 1e-2 else 1.0 for lr in lrs]  # one step down at 1e-2
    base, peak = schedule_bounds(lrs, losses)
    assert peak == pytest.approx(1e-2 / math.sqrt(10), rel=0.1)
    assert peak / base == pytest.approx(math.sqrt(10))


def test_no_descent_means_no_schedule() -> None:
    lrs = exponential_schedule(1e-4, 1.0, 50)
    rising = [1.0 + i for i in range(50)]
    with pytest.raises(LrRangeError, match="never decreases"):
        schedule_bounds(lrs, rising)


def test_the_schedule_is_kept_in_the_json_form() -> None:
    result = analyse(*run_until_divergence(*synthetic_curve(1e-2)))
    assert result.schedule is not None
    assert json.loads(json.dumps(result.to_dict()))["schedule"] == list(result.schedule)
