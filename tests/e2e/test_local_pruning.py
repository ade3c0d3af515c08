"""Pruning on metrics read every scrapeInterval from a trainer that reports as fast.

The synthetic trainer's curve is known: step t reports loss + 1/(t+1). So for each
pruned trial the true median of the completed trials at its step can be computed,
and a trial pruned although it was no worse than that median is a wrong prune.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from optuna.trial import TrialState

from rheostat.backends.local.runner import LocalRunner, RunOptions
from rheostat.spec import study_from_mapping
from tests.studies import synthetic_study


def test_no_trial_is_pruned_that_was_no_worse_than_the_completed_trials(tmp_path: Path) -> None:
    document = synthetic_study(
        "fast",
        algorithm="random",
        args=["--steps", "12", "--step-seconds", "0.2"],
        budget={"maxTrials": 12, "parallelism": 3},
        pruner="median",
        scrape_interval=0.2,
        seed=2,
    )
    document["spec"]["earlyStopping"]["settings"] = {"n_startup_trials": 3}
    options = RunOptions(workdir=tmp_path, show_progress=False)
    with LocalRunner(study_from_mapping(document), options) as runner:
        trials = runner.run().study.get_trials()
    wrong = []
    pruned_trials = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned_trials, "nothing was pruned: the test says nothing"
    for pruned in pruned_trials:
        step = pruned.last_step
        assert step is not None
        assert pruned.datetime_complete is not None
        completed = [
            t.value + 1 / (step + 1)
            for t in trials
            if t.state == TrialState.COMPLETE
            and t.value is not None
            and t.datetime_complete is not None
            and t.datetime_complete < pruned.datetime_complete
        ]
        true_median = statistics.median(completed)
        if pruned.intermediate_values[step] <= true_median:
            wrong.append((pruned.number, step, pruned.intermediate_values[step], true_median))
    assert wrong == []
