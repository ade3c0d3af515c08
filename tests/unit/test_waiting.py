"""`rheostat describe` says why a study waits: one test per reason, and their order."""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest
from rich.console import Console

from rheostat.backends.kubernetes import manifests as build
from rheostat.backends.kubernetes.present import describe, wait_facts
from rheostat.backends.kubernetes.read import ClusterStudy
from rheostat.waiting import RULES, Reason, Rule, WaitFacts, join_stuck, split_stuck, why_waiting
from tests.unit.test_reconcile import JOBS, NS, TRIALS, Operator, study


def facts(**changes: Any) -> WaitFacts:
    """A running study with 3 of 10 trials done, 1 of 4 slots in use: nothing holds it."""
    base = {"phase": "Running", "running": 1, "finished": 3, "target": 10, "parallelism": 4}
    return WaitFacts(**{**base, **changes})


def names(found: list[Reason]) -> list[str]:
    return [r.name for r in found]


def test_a_study_with_free_slots_and_budget_left_is_not_waiting() -> None:
    assert why_waiting(facts()) == []


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_an_ended_study_waits_for_nothing(phase: str) -> None:
    assert why_waiting(facts(phase=phase, running=4, stuck=("trial 1: x",))) == []


def test_a_study_the_operator_has_not_seen() -> None:
    (reason,) = why_waiting(facts(phase="Pending", running=0, finished=0))
    assert reason.name == "NotReconciled"
    assert "operator has not reconciled" in reason.message


def test_the_lr_range_test_runs_first() -> None:
    (reason,) = why_waiting(facts(phase="LrRangeTest", running=0, finished=0))
    assert reason == Reason(
        "LrRangeTestRunning", "the LR range test runs first; trials start when it ends"
    )


def test_stuck_trials_are_named_with_the_reason_their_pods_cannot_start() -> None:
    stuck = ("trial 4: Unschedulable: 0/3 nodes have a free nvidia.com/gpu",)
    (reason,) = why_waiting(facts(stuck=stuck))
    assert reason.name == "TrialsStuck"
    assert reason.message == f"1 trial cannot start: {stuck[0]}"


def test_trials_whose_pods_have_not_started_are_starting() -> None:
    (reason,) = why_waiting(facts(running=2, starting=2))
    assert reason.name == "TrialsStarting"
    assert reason.message.startswith("2 trials launched, waiting for a pod")


def test_every_parallel_slot_busy() -> None:
    (reason,) = why_waiting(facts(running=4))
    assert reason.name == "ParallelismFull"
    assert reason.message == (
        "every parallel slot is busy (budget.parallelism=4); the next trial starts when one ends"
    )


def test_every_trial_of_the_budget_launched() -> None:
    (reason,) = why_waiting(facts(running=2, finished=8))
    assert reason.name == "MaxTrialsLaunched"
    assert reason.message == (
        "every trial of the budget is launched (budget.maxTrials=10); "
        "waiting for the last 2 trials to end"
    )


def test_reasons_come_in_rule_order_and_all_that_hold_are_said() -> None:
    found = why_waiting(facts(running=4, finished=6, starting=1, stuck=("trial 9: x",)))
    assert names(found) == ["TrialsStuck", "TrialsStarting", "MaxTrialsLaunched"]
    assert names(why_waiting(facts(running=4, starting=4))) == [
        "TrialsStarting",
        "ParallelismFull",
    ]


def test_a_new_reason_is_one_more_rule_in_the_list() -> None:
    """How Kueue's queue will plug in: a rule placed where it should be read."""
    queued = Rule("Queued", lambda f: f.running == 4, lambda f: "waiting for quota")
    rules = (*RULES[:2], queued, *RULES[2:])
    assert names(why_waiting(facts(running=4), rules)) == ["Queued", "ParallelismFull"]


def test_the_stuck_message_reads_back_by_trial_even_with_semicolons_inside() -> None:
    why = {12: "Unschedulable: a; b", 3: "ErrImagePull: no such image"}
    message = join_stuck(why)
    assert message == "trial 3: ErrImagePull: no such image; trial 12: Unschedulable: a; b"
    assert split_stuck(message) == {3: f"trial 3: {why[3]}", 12: f"trial 12: {why[12]}"}
    assert split_stuck("no trial pod is stuck") == {}


# ----- the facts as describe reads them from a cluster study -------------------------------


def _cluster_study(op: Operator, pod_phases: dict[int, str] | None = None) -> ClusterStudy:
    body = copy.deepcopy(op.study())
    trials = [copy.deepcopy(t) for t in op.server.of(TRIALS, NS)]
    return ClusterStudy(body=body, trials=trials, pod_phases=pod_phases or {})


def test_describe_reads_full_slots_and_starting_pods_from_status_and_pods() -> None:
    op = Operator()
    op.apply(study(maxTrials=6, parallelism=2))
    op.reconcile()

    found = why_waiting(wait_facts(_cluster_study(op, {0: "Pending", 1: "Running"})))

    assert names(found) == ["TrialsStarting", "ParallelismFull"]
    assert found[0].message.startswith("1 trial launched")


def test_describe_prints_the_reasons_under_waiting() -> None:
    op = Operator()
    op.apply(study(maxTrials=6, parallelism=2))
    op.reconcile()
    out = io.StringIO()

    describe(_cluster_study(op, {0: "Pending", 1: "Running"}), Console(file=out, width=200))

    lines = out.getvalue().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("Waiting:"))
    assert lines[at].split()[:2] == ["Waiting:", "TrialsStarting:"]
    assert lines[at + 1].split()[0] == "ParallelismFull:"
    assert lines[at - 1].startswith("Phase:")


def test_describe_reads_stuck_trials_from_the_operators_condition() -> None:
    op = Operator()
    op.apply(study(maxTrials=2, parallelism=2))
    op.reconcile()
    op.server.run_pod(build.trial_name("syn", 1), NS)
    op.server.now += 600  # trial 0's Job never made a pod: past the grace, it is stuck
    status = op.reconcile()
    assert op.server.get(JOBS, NS, "syn-t0") is not None
    stuck = next(c for c in status["conditions"] if c["type"] == "TrialsStuck")
    assert stuck["status"] == "True", stuck

    found = why_waiting(wait_facts(_cluster_study(op, {0: "Pending", 1: "Running"})))

    # Trial 0 is stuck, so not also "starting"; both trials are launched.
    assert names(found) == ["TrialsStuck", "MaxTrialsLaunched"]
    assert found[0].message.startswith("1 trial cannot start: trial 0: FailedCreate")
