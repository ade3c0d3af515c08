"""Why a study that is not finished is not starting trials: the answer `describe` gives.

A user who sees DONE stay put wants to know which of a few things holds it: the
operator has not seen the study, the LR range test runs first, trial pods cannot
be scheduled, pods are on their way, every parallel slot is busy, or maxTrials
are all launched. Each is a :class:`Rule` in :data:`RULES`, checked in order over
plain :class:`WaitFacts`, so a new reason (a Kueue queue, say) is one more fact
and one more rule placed where it belongs in the list, and its own unit test.

Pure: the facts come from the study's status and its trials' pods, gathered by
the caller.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

TERMINAL = frozenset({"Succeeded", "Failed"})
# The TrialsStuck condition's message: "trial N: <why>" per trial, joined by "; ".
_STUCK_PART = re.compile(r"; (?=trial \d+: )")
_STUCK_NUMBER = re.compile(r"^trial (\d+): ")


@dataclass(frozen=True)
class WaitFacts:
    """What a study shows of itself, as far as waiting goes."""

    phase: str
    running: int  # trials launched and not ended (pods pending included)
    finished: int
    target: int  # maxTrials, capped by what the space holds
    parallelism: int
    # Launched trials whose pod has not started (scheduling, pulling its image),
    # stuck ones excluded.
    starting: int = 0
    stuck: Sequence[str] = ()  # one message per trial whose pod cannot start


@dataclass(frozen=True)
class Reason:
    """One cause of waiting: a CamelCase name (as a condition's reason) and a sentence."""

    name: str
    message: str


@dataclass(frozen=True)
class Rule:
    name: str
    applies: Callable[[WaitFacts], bool]
    message: Callable[[WaitFacts], str]


def _trials(count: int) -> str:
    return f"{count} trial" if count == 1 else f"{count} trials"


def _slots_full(f: WaitFacts) -> bool:
    return f.running >= f.parallelism and f.finished + f.running < f.target


def _all_launched(f: WaitFacts) -> bool:
    return f.running > 0 and f.finished + f.running >= f.target


# In the order a user should read them: what blocks everything first, the plain
# consequences of the budget last.
RULES: tuple[Rule, ...] = (
    Rule(
        "NotReconciled",
        lambda f: f.phase == "Pending",
        lambda f: (
            "the operator has not reconciled the study yet: is it running and "
            "watching this namespace?"
        ),
    ),
    Rule(
        "LrRangeTestRunning",
        lambda f: f.phase == "LrRangeTest",
        lambda f: "the LR range test runs first; trials start when it ends",
    ),
    Rule(
        "TrialsStuck",
        lambda f: bool(f.stuck),
        lambda f: f"{_trials(len(f.stuck))} cannot start: " + "; ".join(f.stuck),
    ),
    Rule(
        "TrialsStarting",
        lambda f: f.starting > 0,
        lambda f: f"{_trials(f.starting)} launched, waiting for a pod to be scheduled and start",
    ),
    Rule(
        "ParallelismFull",
        _slots_full,
        lambda f: (
            f"every parallel slot is busy (budget.parallelism={f.parallelism}); "
            "the next trial starts when one ends"
        ),
    ),
    Rule(
        "MaxTrialsLaunched",
        _all_launched,
        lambda f: (
            f"every trial of the budget is launched (budget.maxTrials={f.target}); "
            f"waiting for the last {_trials(f.running)} to end"
        ),
    ),
)


def why_waiting(facts: WaitFacts, rules: Sequence[Rule] = RULES) -> list[Reason]:
    """Every reason that holds, in rule order; empty for a study that has ended."""
    if facts.phase in TERMINAL:
        return []
    return [Reason(r.name, r.message(facts)) for r in rules if r.applies(facts)]


def join_stuck(why: Mapping[int, str]) -> str:
    """The TrialsStuck condition's message for trials whose pods cannot start."""
    return "; ".join(f"trial {n}: {text}" for n, text in sorted(why.items()))


def split_stuck(message: str) -> dict[int, str]:
    """:func:`join_stuck` read back: trial number -> its part of the message."""
    found: dict[int, str] = {}
    for part in _STUCK_PART.split(message):
        match = _STUCK_NUMBER.match(part)
        if match:
            found[int(match[1])] = part
    return found
