"""Budget accounting, in one place: whether a trial may start, and when a study ends.

- a trial *finishes* as complete, pruned or failed; `maxTrials` counts finished trials
  (failed ones included: they spent compute, as in Katib);
- an infrastructure loss (eviction, node loss, an interrupted local run) is not the
  trainer's fault: the same parameters are retried up to `maxRetries` times and only
  then count as a failure (see :mod:`rheostat.lifecycle`);
- the study fails when more than `maxFailedTrials` trials have failed, or when it
  ends with no complete trial (a study that learned nothing has not succeeded);
- once it has failed, nothing starts and everything running is stopped (the engine);
- at most `queueDepth` trials wait for a queue (Kueue quota) at once; a preempted
  trial waits again, is not a failure and uses up no retry.

Pure functions of the counts, so the rules read as the list above.
"""

from __future__ import annotations

from rheostat.events import Counts, Phase
from rheostat.spec import Budget


def target(max_trials: int, capacity: int | None) -> int:
    """maxTrials, capped by the number of points a discrete space holds (if it is)."""
    return max_trials if capacity is None else min(max_trials, capacity)


def may_launch(counts: Counts, budget: Budget, target_trials: int, exhausted: bool) -> bool:
    """Whether one more trial may start now: a free slot, budget left to spend, and
    fewer than queueDepth trials waiting for a queue (sample at admission time)."""
    return (
        not exhausted
        and counts.running < budget.parallelism
        and counts.queued < budget.queue_depth
        and counts.finished + counts.running < target_trials
    )


def verdict(
    counts: Counts, budget: Budget, target_trials: int, exhausted: bool
) -> tuple[Phase, str | None] | None:
    """How the study ends now (its phase and, if it failed, why), or None if it goes on."""
    if counts.failed > budget.max_failed_trials:
        reason = (
            f"{counts.failed} trials failed, more than maxFailedTrials={budget.max_failed_trials}"
        )
        return "Failed", reason
    if counts.running == 0 and (counts.finished >= target_trials or exhausted):
        if counts.complete == 0:
            return "Failed", (
                f"no trial completed ({counts.failed} failed, {counts.pruned} pruned): "
                "the study has no result"
            )
        return "Succeeded", None
    return None
