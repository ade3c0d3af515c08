"""The budget rules on their own: when a trial may start and how a study ends."""

from __future__ import annotations

from rheostat.budget import may_launch, target, verdict
from rheostat.events import Counts
from rheostat.spec import Budget

BUDGET = Budget(max_trials=4, parallelism=2, max_failed_trials=1)


def test_the_target_is_capped_by_a_discrete_space() -> None:
    assert target(10, None) == 10
    assert target(10, 6) == 6
    assert target(3, 6) == 3


def test_a_trial_starts_only_with_a_free_slot_and_budget_left() -> None:
    assert may_launch(Counts(running=1), BUDGET, 4, exhausted=False)
    assert not may_launch(Counts(running=2), BUDGET, 4, exhausted=False)  # parallelism
    assert not may_launch(Counts(running=1, complete=3), BUDGET, 4, exhausted=False)
    assert not may_launch(Counts(), BUDGET, 4, exhausted=True)  # the space is used up


def test_no_trial_is_sampled_while_queue_depth_trials_wait_for_quota() -> None:
    wide = Budget(max_trials=10, parallelism=8, queue_depth=1)
    assert may_launch(Counts(running=2), wide, 10, exhausted=False)
    assert not may_launch(Counts(running=3, queued=1), wide, 10, exhausted=False)
    deeper = Budget(max_trials=10, parallelism=8, queue_depth=2)
    assert may_launch(Counts(running=3, queued=1), deeper, 10, exhausted=False)


def test_how_a_study_ends() -> None:
    assert verdict(Counts(running=1, complete=3), BUDGET, 4, exhausted=False) is None
    assert verdict(Counts(complete=3, failed=1), BUDGET, 4, exhausted=False) == ("Succeeded", None)
    phase, reason = verdict(Counts(running=1, failed=2), BUDGET, 4, exhausted=False) or ("", "")
    assert phase == "Failed"
    assert "more than maxFailedTrials=1" in str(reason)
    phase, reason = verdict(Counts(pruned=2), BUDGET, 4, exhausted=True) or ("", "")
    assert phase == "Failed"
    assert "no trial completed (0 failed, 2 pruned)" in str(reason)
