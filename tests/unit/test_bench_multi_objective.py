"""bench/multi_objective.py's scoring: the 2-D hypervolume and its curve over trials."""

from __future__ import annotations

import math
from typing import Any

import pytest
from bench.multi_objective import REFERENCE, hv_curve, hypervolume


def test_hypervolume_of_one_point_is_its_box() -> None:
    assert hypervolume([(0.5, 0.5)], (1.0, 1.0)) == pytest.approx(0.25)


def test_hypervolume_ignores_dominated_points_and_points_outside_the_box() -> None:
    front = [(0.2, 0.8), (0.5, 0.5), (0.8, 0.1)]
    expected = 0.3 * 0.2 + 0.3 * 0.5 + 0.2 * 0.9
    noisy = [*front, (0.6, 0.6), (0.9, 0.9), (1.2, 0.0), (0.0, 1.5)]
    assert hypervolume(front, (1.0, 1.0)) == pytest.approx(expected)
    assert hypervolume(noisy, (1.0, 1.0)) == pytest.approx(expected)
    assert hypervolume([], (1.0, 1.0)) == 0.0


def test_curve_grows_with_better_trials_and_skips_failed_ones() -> None:
    bounds = (1_000, 100_000)  # log-scaled: 1,000 -> 0, 10,000 -> 0.5, 100,000 -> 1
    trials: list[dict[str, Any]] = [
        {"state": "complete", "values": [0.5, 10_000.0]},
        {"state": "failed", "values": []},
        {"state": "complete", "values": [0.4, 100_000.0]},  # dominated
        {"state": "complete", "values": [0.9, 100_000.0]},
    ]
    curve = hv_curve(trials, bounds)
    first = 0.5 * (REFERENCE[1] - 0.5)
    assert curve[0] == pytest.approx(first)
    assert curve[1] == curve[2] == pytest.approx(first)
    assert curve[3] == pytest.approx(first + 0.4 * (REFERENCE[1] - 1.0))
    assert all(math.isfinite(v) for v in curve)
