"""Learning-rate range test analysis: turn a recorded (lr, loss) curve into advice.

The trainer sweeps the learning rate exponentially, one batch per step, and
records the raw training loss (see ``rheostat_trainer.lr_finder``). Everything
that *interprets* that curve lives here, as pure numpy functions with no I/O, so
that the control side (engine, operator status, local plots) and the trainer's
stopping rule agree on one definition and the logic is unit-testable without a
model.

The definition follows the consensus of fastai ``lr_find``, torch-lr-finder and
Lightning (see ``shared/reference/lr-range-test.md``):

1. ``lr_k = lr_min * (lr_max / lr_min) ** (k / (N - 1))`` (hits both ends).
2. Bias-corrected EMA of the loss with ``beta = 0.98``; the sweep stops when the
   smoothed loss exceeds ``4 x`` its best so far, or a loss is not finite.
3. Before suggesting, cut the curve at the first non-finite loss and trim the
   first ``max(1, N // 10)`` and the last few points (the warm-up of the EMA and
   the blow-up are not advice).
4. Report every suggestion rule that produced a value; name the one used.

Like fastai's, the suggestion rules are plain ``(lrs, smoothed) -> lr`` functions
rather than something hidden inside a plotting routine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_RULE",
    "MIN_USABLE_POINTS",
    "SUGGESTION_RULES",
    "LrRangeError",
    "LrRangeResult",
    "analyse",
    "diverged",
    "exponential_schedule",
    "minimum",
    "narrowed_bounds",
    "peak_band",
    "schedule_bounds",
    "slide",
    "smooth",
    "steep",
    "valley",
]

SUGGESTION_RULES: tuple[str, ...] = ("valley", "steep", "minimum", "slide")

#: Fewer trimmed points than this cannot carry a valley, a slope and a minimum.
MIN_USABLE_POINTS = 5

#: A curve whose smoothed loss never falls by this share of its starting value gives no
#: advice: its "minimum" is noise. Deep SGD nets at batch 16 stayed within 0.8 % over a
#: whole 100-step sweep (bench/results/lr_advice_heldout.md) and every rule then advised
#: nonsense (1e-6); the shallowest real descent measured fell 2.2 %.
MIN_DESCENT = 0.01

#: At most this many points are dropped from the end (fastai drops 5).
_MAX_END_TRIM = 5

#: ``slide``: a window's gradient counts as "settled" when it changes by less than
#: this, measured in fractions of the curve's loss range per e-fold of lr.
_SLIDE_THRESHOLD = 0.05

#: Narrowing stops this factor (half a decade) below the lr of the lowest loss.
_HALF_DECADE = math.sqrt(10.0)

#: ``schedule_bounds``: the steep region is where the smoothed loss falls at least this
#: share as fast (per e-fold of lr) as at its steepest point: the curve's "full width at
#: half depth" of the slope.
_STEEP_SHARE = 0.5

#: The rule a study uses unless it names one (the spec's default): ``minimum``
#: was the only rule in the good band on 3 of 4 workloads (bench/lr_advice.py).
DEFAULT_RULE = "minimum"

_Array = npt.NDArray[np.float64]

#: What the rule functions accept: a plain list or a numpy array of floats.
Curve = Sequence[float] | npt.NDArray[np.floating[Any]]


class LrRangeError(ValueError):
    """The curve cannot support a suggestion (too short, no finite points, ...)."""


def exponential_schedule(min_lr: float, max_lr: float, steps: int) -> list[float]:
    """Return ``steps`` learning rates rising geometrically from ``min_lr`` to ``max_lr``.

    Uses ``k / (N - 1)`` as torch-lr-finder does (fastai uses ``k / N``) so that
    both ends of the user's range are actually tried. The last value is set to
    ``max_lr`` exactly so float rounding cannot push it out of the range.
    """
    if not (math.isfinite(min_lr) and math.isfinite(max_lr)) or min_lr <= 0 or max_lr <= 0:
        raise ValueError(f"lr range must be positive and finite, got {min_lr!r}..{max_lr!r}")
    if max_lr <= min_lr:
        raise ValueError(f"max_lr ({max_lr!r}) must be greater than min_lr ({min_lr!r})")
    if steps < 2:
        raise ValueError(f"an lr sweep needs at least 2 steps, got {steps}")
    ratio = max_lr / min_lr
    lrs = [min_lr * ratio ** (k / (steps - 1)) for k in range(steps)]
    lrs[0], lrs[-1] = min_lr, max_lr
    return lrs


def smooth(losses: Sequence[float], beta: float = 0.98) -> list[float]:
    """Bias-corrected exponential moving average (fastai / Lightning, ``beta = 0.98``).

    ``v_k = beta * v_{k-1} + (1 - beta) * l_k`` and ``s_k = v_k / (1 - beta**(k+1))``.
    The correction removes the pull towards zero of an average started at 0, so a
    constant input gives a constant output from the first step. A non-finite loss
    makes every later value non-finite, which is what the divergence test wants.
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta!r}")
    out: list[float] = []
    avg = 0.0
    weight = 1.0
    for loss in losses:
        avg = beta * avg + (1.0 - beta) * float(loss)
        weight *= beta
        out.append(avg / (1.0 - weight))
    return out


def diverged(smoothed: Sequence[float], factor: float = 4.0) -> bool:
    """True when the sweep should stop: the last smoothed loss blew up or is not finite.

    "Blew up" means ``last > factor * best`` where ``best`` is the minimum of the
    earlier points, checked from the second point on (``k >= 1``) as Lightning does,
    because the first point has nothing to compare with. Written as
    ``last - best > (factor - 1) * |best|``, which is the same test for positive
    losses and still means "rose by a lot" for losses that can be zero or negative
    (a plain ratio would stop a negative-loss sweep at once).
    """
    if not smoothed:
        return False
    last = float(smoothed[-1])
    if not math.isfinite(last):
        return True
    if len(smoothed) < 2:
        return False
    best = min(float(v) for v in smoothed[:-1])
    return last - best > (factor - 1.0) * abs(best)


# --------------------------------------------------------------------------- rules


def _arrays(lrs: Curve, losses: Curve) -> tuple[_Array, _Array]:
    x = np.asarray(lrs, dtype=np.float64)
    y = np.asarray(losses, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"lrs and losses must be 1-D and equally long ({x.shape} vs {y.shape})")
    if x.size == 0:
        raise LrRangeError("empty curve")
    return x, y


def valley(lrs: Curve, smoothed: Curve) -> float:
    """fastai's default: the middle of the longest strictly decreasing stretch.

    Like fastai, "stretch" means the longest strictly decreasing *subsequence*,
    so a noisy uptick does not split a valley in two; and like fastai its extent
    is taken as the ``L`` points ending at the subsequence's last index, not from
    its first member, because on a noisy plateau a long sparse subsequence can
    start far to the left of the real descent. The answer is the lr at
    ``start + L/3 + L/6``: the middle of the descent, where the loss still falls
    well and the blow-up is far. O(N^2) with a vectorised inner step; N is at most
    a few hundred.
    """
    x, y = _arrays(lrs, smoothed)
    n = y.size
    length = np.ones(n, dtype=np.int64)
    for i in range(1, n):
        earlier = y[:i] > y[i]
        if earlier.any():
            length[i] = length[:i][earlier].max() + 1
    best = int(length.max())
    if best < 2:
        raise LrRangeError("valley: the loss never decreases")
    end = int(np.argmax(length))  # first index reaching the longest length
    start = end - (best - 1)
    sections = (end - start) / 3
    idx = start + int(sections) + int(sections / 2)
    return float(x[idx])


def steep(lrs: Curve, smoothed: Curve) -> float:
    """The lr where the loss falls fastest per unit of ``ln(lr)``.

    Differentiating by ``ln(lr)`` rather than by index (torch-lr-finder) or by lr
    (Lightning) makes the answer independent of the number of steps and of the
    spacing of the sweep.
    """
    x, y = _arrays(lrs, smoothed)
    if x.size < 2:
        raise LrRangeError("steep: need at least 2 points")
    grad = np.gradient(y, np.log(x))
    idx = int(np.argmin(grad))
    if not grad[idx] < 0:
        raise LrRangeError("steep: the loss never decreases")
    return float(x[idx])


def minimum(lrs: Curve, smoothed: Curve) -> float:
    """One tenth of the lr at the lowest loss: the "order of magnitude below the
    minimum" rule of thumb, since at the minimum itself training is on the edge."""
    x, y = _arrays(lrs, smoothed)
    return float(x[int(np.argmin(y))]) / 10.0


def slide(lrs: Curve, smoothed: Curve) -> float:
    """fastai's ``slide``: walk in from the right until the slope settles.

    Compares the gradient at the right end of a window of ``w = max(2, N // 6)``
    points with the gradient at its left end (fastai: 15 of ~85 points) and moves
    the window left while they differ by more than ``_SLIDE_THRESHOLD``; the
    answer is the lr at the left end of the first window whose slope has settled.
    fastai's threshold (0.005 per index, in loss units) depends on the loss scale
    and the step count, so here the gradient is taken per e-fold of lr and divided
    by the curve's loss range; 0.05 is fastai's threshold in those units for a
    100-step, 8-decade sweep with losses spanning about 1 (rounded up for noise).
    """
    x, y = _arrays(lrs, smoothed)
    n = y.size
    if n < 3:
        raise LrRangeError("slide: need at least 3 points")
    span = float(y.max() - y.min())
    if span <= 0:
        raise LrRangeError("slide: the loss is flat")
    grad = np.gradient(y, np.log(x)) / span
    window = max(2, n // 6)
    right = n - 1
    while right - window >= 0:
        left = right - window
        if abs(grad[right] - grad[left]) <= _SLIDE_THRESHOLD:
            return float(x[left])
        right -= 1
    raise LrRangeError("slide: the slope never settles")


def schedule_bounds(lrs: Curve, smoothed: Curve) -> tuple[float, float]:
    """The base and peak lr of a cyclical schedule, from the steepest descent.

    Smith's second use of the range test (cyclic LR, warm restarts, one-cycle): the
    schedule moves between the lr where the loss starts to fall fast and the lr where
    it stops falling fast. Here that region is the contiguous stretch around the
    steepest point (per unit of ``ln(lr)``, like :func:`steep`) where the loss falls
    at least half as fast as there. Its upper end is capped half a decade below the
    lr of the lowest loss, as :func:`narrowed_bounds` caps a constant lr: measured
    against one-cycle trainings (bench/lr_schedule.py), the region's own upper end
    lay 0.3 to 0.7 decades above the good peaks on both SGD workloads, and training
    diverged there. The base is the region's lower end, at most half a decade below
    the peak, so the cycle never collapses into a constant lr.
    """
    x, y = _arrays(lrs, smoothed)
    if x.size < 3:
        raise LrRangeError("schedule: need at least 3 points")
    grad = np.gradient(y, np.log(x))
    steepest = int(np.argmin(grad))
    if not grad[steepest] < 0:
        raise LrRangeError("schedule: the loss never decreases")
    steep_enough = grad <= _STEEP_SHARE * grad[steepest]
    left = right = steepest
    while left > 0 and steep_enough[left - 1]:
        left -= 1
    while right < x.size - 1 and steep_enough[right + 1]:
        right += 1
    peak = min(float(x[right]), float(x[int(np.argmin(y))]) / _HALF_DECADE)
    base = min(float(x[left]), peak / _HALF_DECADE)
    return base, peak


_RULES: dict[str, Callable[[Curve, Curve], float]] = {
    "valley": valley,
    "steep": steep,
    "minimum": minimum,
    "slide": slide,
}


# ------------------------------------------------------------------------ analysis


@dataclass(frozen=True)
class LrRangeResult:
    """The analysed curve: what the status, results.json and plots show.

    ``lrs``, ``losses`` and ``smoothed`` hold the usable curve, i.e. the recorded
    points up to (not including) the first non-finite loss, *untrimmed*, so a plot
    shows the blow-up; the trimming only affects the suggestions.
    """

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    smoothed: tuple[float, ...]
    suggestions: dict[str, float]
    rule: str
    suggested_lr: float
    lower: float
    upper: float
    #: (base, peak) for a cyclical schedule (:func:`schedule_bounds`), if the curve has one.
    schedule: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (only finite floats, lists, str)."""
        return {
            "lrs": list(self.lrs),
            "losses": list(self.losses),
            "smoothed": list(self.smoothed),
            "suggestions": dict(self.suggestions),
            "rule": self.rule,
            "suggestedLr": self.suggested_lr,
            "lower": self.lower,
            "upper": self.upper,
            **({"schedule": list(self.schedule)} if self.schedule else {}),
        }


def _usable_prefix(lrs: Sequence[float], losses: Sequence[float]) -> tuple[_Array, _Array]:
    """Cut the curve at the first point whose loss or lr is unusable."""
    x = np.asarray(lrs, dtype=np.float64)
    y = np.asarray(losses, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"lrs and losses must be 1-D and equally long ({x.shape} vs {y.shape})")
    bad = ~(np.isfinite(y) & np.isfinite(x) & (x > 0))
    cut = int(np.argmax(bad)) if bad.any() else x.size
    if cut == 0:
        raise LrRangeError("no finite points at the start of the curve")
    return x[:cut], y[:cut]


def _trim(n: int) -> slice:
    """Points used for suggestions: drop the EMA warm-up and the blow-up tail."""
    start = max(1, n // 10)
    end = min(_MAX_END_TRIM, max(1, n // 10))
    return slice(start, n - end)


def analyse(
    lrs: Sequence[float],
    losses: Sequence[float],
    rule: str = DEFAULT_RULE,
    beta: float = 0.98,
    *,
    bounds: tuple[float, float] | None = None,
) -> LrRangeResult:
    """Smooth, trim and suggest; narrow the range around the suggestion.

    ``lower``/``upper`` are :func:`narrowed_bounds` of the suggestion within
    ``bounds`` (the parameter's original range), defaulting to the swept range
    ``[lrs[0], lrs[-1]]``.

    If ``rule`` produces no value on this curve (e.g. ``slide`` never settles),
    the first rule of :data:`SUGGESTION_RULES` that did is used instead and named
    in ``LrRangeResult.rule``; ``minimum`` always produces one.
    """
    if rule not in _RULES:
        raise ValueError(f"unknown suggestion rule {rule!r}; expected one of {SUGGESTION_RULES}")
    if len(lrs) == 0:
        raise LrRangeError("empty curve")
    x, y = _usable_prefix(lrs, losses)
    s = np.asarray(smooth(y.tolist(), beta), dtype=np.float64)
    window = _trim(x.size)
    tx, ts = x[window], s[window]
    if tx.size < MIN_USABLE_POINTS:
        raise LrRangeError(
            f"only {tx.size} usable points after cutting non-finite losses and trimming "
            f"({x.size} finite of {len(lrs)} recorded); need at least {MIN_USABLE_POINTS}: "
            "use more steps or a wider range"
        )
    start, lowest = float(ts[0]), float(ts.min())
    if start - lowest < MIN_DESCENT * abs(start):
        raise LrRangeError(
            f"the smoothed loss never fell by {MIN_DESCENT:.0%} of its start ({start:.4g} at "
            f"lr {tx[0]:.3g}, lowest {lowest:.4g}): the sweep shows no descent to advise "
            "from; use more steps, a larger maxLr, or a sweep after a warm-up"
        )
    suggestions: dict[str, float] = {}
    for name in SUGGESTION_RULES:
        try:
            suggestions[name] = _RULES[name](tx, ts)
        except LrRangeError:
            continue
    used = rule if rule in suggestions else next(r for r in SUGGESTION_RULES if r in suggestions)
    suggested = suggestions[used]
    lr_at_min = float(tx[int(np.argmin(ts))])
    low, high = bounds if bounds is not None else (float(lrs[0]), float(lrs[-1]))
    lower, upper = narrowed_bounds(suggested, lr_at_min, low, high)
    try:
        schedule: tuple[float, float] | None = schedule_bounds(tx, ts)
    except LrRangeError:
        schedule = None
    return LrRangeResult(
        lrs=tuple(x.tolist()),
        losses=tuple(y.tolist()),
        smoothed=tuple(s.tolist()),
        suggestions=suggestions,
        rule=used,
        suggested_lr=suggested,
        lower=lower,
        upper=upper,
        schedule=schedule,
    )


def narrowed_bounds(
    suggested_lr: float, lr_at_min_loss: float, low: float, high: float
) -> tuple[float, float]:
    """The lr range trials should search after the range test.

    ``low = suggested / 10``: one decade below the suggestion still trains (just
    slower), and "an order of magnitude below the minimum" is the classic rule of
    thumb, so the optimum is very unlikely to lie further down.
    ``high = min(max(suggested, lr_at_min_loss / sqrt(10)), suggested * 10)``: the
    sweep reaches its loss minimum after a short ramp, and a whole training run at
    a *constant* lr becomes unstable well before that point, so the range stops
    half a decade below the minimum (bench/lr_advice.py measured the good band
    0.7 to 1.8 decades below it on four workloads); it never excludes the
    suggestion itself, and a decade above the suggestion bounds it when the
    minimum is far to the right.

    The result is intersected with the user's ``[low, high]`` (narrowing never
    widens). If that leaves nothing, or a range too thin to search
    (``high <= low * 1.01``), the original bounds are returned: a curve that
    disagrees with the user's range is reported, not obeyed.
    """
    new_low = max(suggested_lr / 10.0, low)
    ceiling = max(suggested_lr, lr_at_min_loss / _HALF_DECADE)
    new_high = min(ceiling, suggested_lr * 10.0, high)
    if not (math.isfinite(new_low) and math.isfinite(new_high)) or new_high <= new_low * 1.01:
        return low, high
    return new_low, new_high


def peak_band(peak: float, low: float, high: float) -> tuple[float, float]:
    """Where a schedule's peak lr is searched: half a decade either side of the test's
    peak, within the user's ``[low, high]``; the user's range if that leaves too little."""
    new_low, new_high = max(peak / _HALF_DECADE, low), min(peak * _HALF_DECADE, high)
    if new_high <= new_low * 1.01:
        return low, high
    return new_low, new_high
