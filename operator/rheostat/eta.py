"""How long a running study still needs: an estimate a person can plan around.

ETA = trials left x median trial time / parallelism, the rule users know from
Katib's and Ray Tune's progress lines. The median, not the mean, so one hung or
instantly failed trial does not swing it; pruned and failed trials count, because
the trials still to come will be pruned and fail at the same rate. Parallelism is
capped by the trials left: the last trial takes a whole trial time, not a
fraction of one. Trials still running are counted as not started (their elapsed
time is ignored): the estimate errs long, by at most one trial time.

Pure and deterministic in its inputs, never in the clock: the operator keeps the
result in the study's status, which is written only when it changes, so an
estimate that moved with every pass would cost an API write per pass. It moves
when a trial finishes, which changes the status anyway.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable


def eta_seconds(durations: Iterable[float], trials_left: int, parallelism: int) -> int | None:
    """Whole seconds until the last trial should end; None while nothing can be said.

    None when no trial has finished yet (no median) or none is left; durations
    that are not finite or are negative (clock skew) are ignored.
    """
    known = [d for d in durations if math.isfinite(d) and d >= 0]
    if not known or trials_left <= 0 or parallelism <= 0:
        return None
    median = statistics.median(known)
    return math.ceil(trials_left * median / min(parallelism, trials_left))


def duration_text(seconds: float) -> str:
    """A duration as a person reads it: the largest unit or two ("45s", "12m", "3h20m", "2d5h")."""
    whole = max(0, math.ceil(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 10:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours == 0:
        return f"{minutes}m"
    days, hours = divmod(hours, 24)
    if days == 0:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    return f"{days}d{hours}h" if hours else f"{days}d"
