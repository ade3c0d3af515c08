"""Pruning compares a trial with every completed trial at the same step.

The tuner reads a trial's metrics every scrapeInterval, so the steps it records
differ from trial to trial. Optuna's median at step k is over the completed trials
that have a value at exactly k; here each completed trial that reached k is
represented by its value at its latest recorded step at or before k.
"""

from __future__ import annotations

import optuna

from rheostat.engine import Engine, Finished, Progress, StopTrial
from tests.unit.test_engine import make_spec, open_engine, starts

# Completed trials as the tuner recorded them: the same curves, read at different steps.
RECORDED = [
    {0: 1.0, 2: 0.8, 4: 0.50, 6: 0.45},  # trial 0: read at even steps
    {1: 0.9, 3: 0.70, 5: 0.60, 6: 0.58},  # trial 1: read at odd steps
    {0: 1.0, 3: 0.72, 6: 0.65},  # trial 2: read at steps 0, 3 and 6
]


def _engine_with_completed(curves: list[dict[int, float]], ran_to: int | None = None) -> Engine:
    """Completed trials read as `curves`; `ran_to`: the step their termination
    messages name (None: no message step), which reads may have missed."""
    spec = make_spec(
        budget={"maxTrials": 6, "parallelism": 1},
        earlyStopping={"pruner": "median", "settings": {"n_startup_trials": len(curves)}},
    )
    engine = open_engine(spec)
    for curve in curves:
        (trial,) = starts(engine.next_actions(0.0))
        for step, value in curve.items():
            assert engine.observe(Progress(trial.number, step, value), 0.0) == []
        engine.observe(Finished(trial.number, 0, {"loss": curve[max(curve)]}, step=ran_to), 1.0)
    return engine


def _report(engine: Engine, step: int, value: float) -> list[object]:
    (trial,) = starts(engine.next_actions(0.0))
    return list(engine.observe(Progress(trial.number, step, value), 0.0))


def test_a_trial_better_than_the_median_of_all_completed_trials_is_kept() -> None:
    """At step 4 the completed trials stand at 0.50, 0.70 and 0.72: the median is 0.70.

    Only trial 0 was read at step 4 itself; compared with it alone (0.50), a trial at
    0.60 would be pruned although it is better than the median.
    """
    engine = _engine_with_completed(RECORDED)
    assert _report(engine, 4, 0.60) == []


def test_a_trial_worse_than_that_median_is_still_pruned() -> None:
    engine = _engine_with_completed(RECORDED)
    [stop] = _report(engine, 4, 0.71)
    assert isinstance(stop, StopTrial)
    assert stop.reason == "pruned"


def test_completed_trials_that_never_reached_the_step_do_not_count() -> None:
    """A trial whose last recorded step is before k says nothing about step k."""
    short = [{0: 0.1, 1: 0.1}, {0: 0.1, 2: 0.1}, *RECORDED[:1]]
    engine = _engine_with_completed(short)
    # Only trial 2 reached step 4 (0.50); the short ones (0.1) would prune 0.3.
    assert _report(engine, 4, 0.3) == []


def test_the_completed_trials_are_left_as_they_were_recorded() -> None:
    engine = _engine_with_completed(RECORDED)
    _report(engine, 4, 0.60)
    completed = engine.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert [t.intermediate_values for t in completed] == RECORDED


def test_no_verdict_at_a_step_some_completed_trial_was_first_read_after() -> None:
    """Trial 1 was first read at step 1: at step 0 only two of three are known."""
    engine = _engine_with_completed(RECORDED)
    (trial,) = starts(engine.next_actions(0.0))
    assert engine.observe(Progress(trial.number, 0, 5.0), 0.0) == []
    [stop] = engine.observe(Progress(trial.number, 1, 5.0), 0.0)
    assert isinstance(stop, StopTrial)


def test_completed_trials_count_up_to_the_step_their_message_names() -> None:
    """All three ran to step 8, though their last read was at step 6: at step 8 they
    stand at 0.45, 0.58 and 0.65 (median 0.58)."""
    engine = _engine_with_completed(RECORDED, ran_to=8)
    assert _report(engine, 8, 0.55) == []
    engine = _engine_with_completed(RECORDED, ran_to=8)
    [stop] = _report(engine, 8, 0.60)
    assert isinstance(stop, StopTrial)


def test_how_far_a_trial_ran_survives_a_rebuild_from_its_records() -> None:
    """The operator rebuilds the study from stored records after a restart."""
    engine = _engine_with_completed(RECORDED, ran_to=8)
    records = [engine.record(n) for n in range(len(RECORDED))]
    assert [r.last_step for r in records] == [8, 8, 8]
    rebuilt = Engine.rebuild(engine.spec, records)
    [stop] = _report(rebuilt, 8, 0.60)
    assert isinstance(stop, StopTrial)
