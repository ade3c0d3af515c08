"""The LR range test plot's loss axis: the low end, where the suggestions sit, is shown."""

from __future__ import annotations

import math

from rheostat.backends.local.plots import lr_axis_limits
from rheostat.lr_range import analyse


def _sweep() -> tuple[list[float], list[float]]:
    """A noisy descent from 2.3 to ~0.05, then divergence to 40."""
    lrs = [10 ** (-6 + 6 * i / 99) for i in range(100)]
    losses = []
    for i, lr in enumerate(lrs):
        base = 0.05 + 2.25 / (1 + (lr / 1e-3) ** 2)
        noise = 0.04 * (1 if i % 2 else -1)
        losses.append(max(base + noise, 0.001) if lr < 0.2 else base + (lr - 0.2) * 60)
    return lrs, losses


def test_the_axis_reaches_below_every_raw_and_smoothed_point() -> None:
    lrs, losses = _sweep()
    result = analyse(lrs, losses)
    low, _ = lr_axis_limits(result.losses, result.smoothed) or (0.0, 0.0)
    assert low < min(result.losses)  # raw noise dips below the smoothed minimum
    assert low < min(result.smoothed)
    # The old axis ended at 95 % of the smoothed minimum, above the raw dips.
    assert min(result.losses) < 0.95 * min(result.smoothed)


def test_the_start_is_shown_and_the_blow_up_is_cut_off() -> None:
    lrs, losses = _sweep()
    result = analyse(lrs, losses)
    low, high = lr_axis_limits(result.losses, result.smoothed) or (0.0, 0.0)
    assert high >= result.smoothed[0]
    assert high < max(result.losses) / 4  # divergence does not squash the descent
    # The descent fills the axis: its lowest point is just above the bottom.
    lowest = min(*result.losses, *result.smoothed)
    assert 0 < (lowest - low) / (high - low) < 0.1


def test_a_loss_near_zero_still_has_room_below() -> None:
    smoothed = [0.02, 0.01, 0.004, 0.002, 0.003, 0.05]
    raw = [0.021, 0.009, 0.0035, 0.0012, 0.004, 0.06]
    low, high = lr_axis_limits(raw, smoothed) or (0.0, 0.0)
    assert low < 0.0012
    assert high >= 0.02


def test_degenerate_curves() -> None:
    assert lr_axis_limits([math.nan], [math.nan]) is None
    low, high = lr_axis_limits([1.0, 1.0], [1.0, 1.0]) or (0.0, 0.0)
    assert low < 1.0 < high
