"""The ETA of a running study: trials left x median trial time / parallelism."""

from __future__ import annotations

import math

import pytest

from rheostat.eta import duration_text, eta_seconds


def test_trials_left_times_the_median_over_parallelism() -> None:
    assert eta_seconds([10, 20, 600], trials_left=8, parallelism=4) == 8 * 20 // 4


def test_the_median_is_not_swung_by_one_outlier() -> None:
    assert eta_seconds([60, 60, 60, 60, 36000], trials_left=2, parallelism=2) == 60


def test_an_even_count_takes_the_mean_of_the_middle_two_and_rounds_up() -> None:
    assert eta_seconds([10, 11], trials_left=1, parallelism=1) == 11  # 10.5 -> 11


def test_fewer_trials_left_than_slots_take_a_whole_trial_time() -> None:
    assert eta_seconds([100], trials_left=1, parallelism=8) == 100
    assert eta_seconds([100], trials_left=3, parallelism=8) == 100


@pytest.mark.parametrize(
    ("durations", "left", "parallelism"),
    [([], 5, 2), ([30.0], 0, 2), ([30.0], -1, 2), ([math.nan, -5.0, math.inf], 3, 1)],
    ids=["nothing-finished", "none-left", "over-budget", "only-bad-durations"],
)
def test_no_estimate_without_a_median_or_trials_left(
    durations: list[float], left: int, parallelism: int
) -> None:
    assert eta_seconds(durations, left, parallelism) is None


def test_bad_durations_are_ignored_not_averaged_in() -> None:
    assert eta_seconds([math.nan, -3.0, 40.0], trials_left=1, parallelism=1) == 40


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.2, "1s"),
        (59, "59s"),
        (60, "1m"),
        (400, "6m40s"),
        (600, "10m"),
        (3599, "59m"),
        (3600, "1h"),
        (12000, "3h20m"),
        (86400, "1d"),
        (190800, "2d5h"),
    ],
)
def test_durations_read_like_kubectl_ages(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text
