"""A trial's final value read from what its trainer wrote: whatever it wrote, the
trial ends counted, with a reason, and the reader never raises.

A termination message is JSON, and JSON integers have no bound: `10**400` parses as a
Python int that no float can hold (issue 21, defect 4).
"""

from __future__ import annotations

import json
from typing import Any

import optuna
import pytest

from rheostat.contract import parse_termination_message
from rheostat.engine import Engine, Finished, StartTrial
from rheostat.events import Finished as FinishedEvent
from rheostat.objectives import final_value, final_values
from rheostat.spec import study_from_mapping
from tests.bad_specs import good_study, objectives_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

HUGE = 10**400  # valid JSON, beyond a float's range


def _huge_message() -> dict[str, Any] | None:
    return parse_termination_message(json.dumps({"metrics": {"loss": HUGE}}))


@pytest.mark.parametrize("raw", [HUGE, -HUGE], ids=["positive", "negative"])
def test_an_integer_too_large_for_a_float_is_no_value_with_a_reason(raw: int) -> None:
    value, reason = final_value("loss", FinishedEvent(0, 0, {"loss": raw}), None)
    assert value is None
    assert reason is not None
    assert "'loss'" in reason
    assert "too large" in reason


def test_a_huge_last_report_is_no_value_either() -> None:
    value, reason = final_value("loss", FinishedEvent(0, 0, None), HUGE)  # type: ignore[arg-type]
    assert value is None
    assert "too large" in str(reason)


def test_several_objectives_name_the_one_too_large() -> None:
    goals = study_from_mapping(objectives_study()).spec.goals
    metrics = {g.metric: 1.0 for g in goals} | {goals[-1].metric: HUGE}
    values, reason = final_values(goals, FinishedEvent(0, 0, metrics), {})
    assert values is None
    assert repr(goals[-1].metric) in str(reason)


def test_the_engine_counts_a_trial_whose_value_is_too_large_as_failed() -> None:
    document = good_study()
    spec = document["spec"]
    spec.pop("lrRangeTest")
    spec["objective"] = {"metric": "loss", "direction": "minimize"}
    spec["earlyStopping"] = {"pruner": "none"}
    spec["budget"] = {"maxTrials": 2, "parallelism": 2, "maxFailedTrials": 1}
    engine = Engine.open(study_from_mapping(document).spec, optuna.create_study())
    first, second = (a for a in engine.next_actions(0.0) if isinstance(a, StartTrial))

    message = _huge_message()
    assert message is not None  # the parser passes it through; the reader must cope
    engine.observe(Finished(first.number, 0, message["metrics"]), 1.0)
    engine.observe(Finished(second.number, 0, {"loss": 0.5}), 1.0)

    views = {t.number: t for t in engine.trials()}
    assert views[first.number].state == "failed"
    assert "too large" in str(views[first.number].reason)
    assert views[second.number].state == "complete"
    counts = engine.counts()
    assert (counts.complete, counts.failed, counts.running) == (1, 1, 0)
    assert engine.phase == "Succeeded"
