"""A cluster study read back by the CLI reports exactly as a local run does.

The cluster side is fed the objects the operator writes (TuningTrials from
`manifests.trial_object`, a status from the engine plus the operator's extras), the
local side is the engine itself; every report must come out the same.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from datetime import UTC, datetime
from typing import Any

import optuna
import pytest
from rich.console import Console

from rheostat import lr_phase
from rheostat.backends.kubernetes.export import StorageError, export_to_storage
from rheostat.backends.kubernetes.manifests import trial_object
from rheostat.backends.kubernetes.present import best_text, study_lines
from rheostat.backends.kubernetes.read import (
    ClusterStudy,
    StudyRow,
    age,
    study_results,
    study_row,
)
from rheostat.backends.local.report import StudyResults, print_summary, results_document
from rheostat.engine import Engine, TrialRecord
from rheostat.spec import StudySpec, study_from_mapping
from tests.bad_specs import good_study

START, FINISH = 1_700_000_000.0, 1_700_000_042.5


def _curve() -> dict[str, list[float]]:
    """A loss that falls to a valley near lr=1e-2 and blows up after it."""
    lrs = [10 ** (-6 + 7 * i / 79) for i in range(80)]
    losses = [2.0 - 1.5 * math.exp(-((math.log10(lr) + 2) ** 2)) for lr in lrs]
    losses = [v if lr < 0.3 else v + (lr - 0.3) * 20 for v, lr in zip(losses, lrs, strict=True)]
    return {"lrs": lrs, "losses": losses}


def _records(spec: StudySpec, curve: dict[str, list[float]]) -> list[TrialRecord]:
    result = lr_phase.analyse(spec, curve["lrs"], curve["losses"]).result
    assert result is not None
    lr = result.suggested_lr

    def params(momentum: float, optimizer: str = "sgd") -> dict[str, Any]:
        return {"lr": lr, "momentum": momentum, "layers": 2, "optimizer": optimizer}

    return [
        TrialRecord(0, params(0.1), "complete", value=0.812345678, intermediate={0: 0.5, 1: 0.7}),
        TrialRecord(1, params(0.2), "pruned", value=0.3, intermediate={0: 0.2, 1: 0.3}),
        TrialRecord(2, params(0.3), "failed", kind="retry", reason="evicted"),
        # number 3 is a skipped duplicate proposal: no TuningTrial at all
        TrialRecord(4, params(0.3), "failed", reason="exit 1: boom", attempt=2),
        TrialRecord(5, params(0.9, "adam"), "complete", value=0.912345678),
        TrialRecord(6, params(0.5), "running", intermediate={0: 0.4}, started_at=START),
    ]


def _both() -> tuple[StudyResults, StudyResults, ClusterStudy]:
    document = good_study()
    spec = study_from_mapping(document).spec
    curve = _curve()
    records = _records(spec, curve)
    engine = Engine.rebuild(spec, records, curve)
    status = engine.status()
    status["lrRangeTest"]["curve"] = curve
    status["conditions"] = [{"type": "Complete", "status": "False"}]
    status["display"] = {"best": "0.9123"}
    body = {
        **document,
        "metadata": {"name": "good", "namespace": "ns", "uid": "u-1", "generation": 1},
        "status": status,
    }
    # The API server hands objects back with their keys sorted.
    status["bestTrial"]["params"] = dict(sorted(status["bestTrial"]["params"].items()))
    trials = []
    for record in records:
        trial = trial_object(body, record)
        trial["spec"]["params"] = dict(sorted(trial["spec"]["params"].items()))
        trial["status"]["startedAt"] = START
        if record.state != "running":
            # A local trial created from a record starts and ends at one instant.
            trial["status"]["finishedAt"] = START
        trials.append(trial)
    # The operator's in-memory study has no name; a local run's is the study's.
    local = dataclasses.replace(StudyResults.from_engine(engine), name="good")
    return local, study_results(body, trials), ClusterStudy(body=body, trials=trials)


def test_results_json_of_a_cluster_study_is_a_local_runs() -> None:
    local, cluster, _ = _both()
    # As text: the same keys in the same order (parameters in the spec's order).
    assert json.dumps(results_document(cluster)) == json.dumps(results_document(local))
    document = results_document(cluster)
    assert [t["number"] for t in document["trials"]] == [0, 1, 4, 5, 6]  # no retry
    assert document["status"]["bestTrial"]["number"] == 5
    assert "curve" not in document["status"]["lrRangeTest"]
    assert document["lrRangeTest"]["smoothed"]  # re-analysed from the stored curve


def test_the_results_table_of_a_cluster_study_is_a_local_runs() -> None:
    local, cluster, _ = _both()

    def table(results: StudyResults) -> str:
        out = io.StringIO()
        print_summary(results, Console(file=out, width=160))
        return out.getvalue()

    text = table(cluster)
    assert text == table(local)
    assert "Best trial #5: accuracy=0.91235" in text
    assert "LR range test: minimum suggestion" in text


def test_a_study_not_yet_reconciled_counts_its_trials() -> None:
    local, _, study = _both()
    body = {**study.body, "status": {}}
    results = study_results(body, study.trials)
    assert results.phase == "Pending"
    assert results.status["trials"] == {**local.status["trials"], "target": 4}
    assert results.lr_result is None


def test_get_lists_the_best_value_to_four_significant_digits() -> None:
    row = StudyRow("ns", "good", "Succeeded", 4, 4, 0.912345678, 0.0123456, None)
    lines = study_lines([row], namespaces=True).splitlines()
    header = ["NAMESPACE", "NAME", "PHASE", "DONE", "TOTAL", "BEST", "LR", "ETA", "AGE"]
    assert lines[0].split() == header
    assert lines[1].split() == [
        "ns",
        "good",
        "Succeeded",
        "4",
        "4",
        "0.9123",
        "0.0123",
        "<none>",
        "<unknown>",
    ]
    assert best_text(123456.7) == "1.235e+05"
    assert best_text(None) == "<none>"


def test_get_shows_a_running_studys_eta_from_its_status() -> None:
    body = {
        "metadata": {"name": "busy", "namespace": "ns"},
        "spec": {"budget": {"maxTrials": 10}},
        "status": {"phase": "Running", "trials": {"finished": 4, "target": 10}, "etaSeconds": 400},
    }
    lines = study_lines([study_row(body)], namespaces=False).splitlines()
    shown = dict(zip(lines[0].split(), lines[1].split(), strict=True))
    assert shown["ETA"] == "6m40s"
    assert (shown["PHASE"], shown["DONE"], shown["TOTAL"]) == ("Running", "4", "10")


def test_export_replays_every_trial_into_an_optuna_storage() -> None:
    _, _, study = _both()
    storage = optuna.storages.InMemoryStorage()
    export_to_storage(study, storage)
    exported = export_to_storage(study, storage)  # a second export replaces the first
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["good"]
    assert exported.metric_names == ["accuracy"]
    assert exported.direction == optuna.study.StudyDirection.MAXIMIZE
    trials = exported.get_trials(deepcopy=False)
    assert [t.number for t in trials] == [0, 1, 2, 3, 4, 5, 6]
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE", "PRUNED", "FAIL", "FAIL", "FAIL", "COMPLETE", "RUNNING"]
    assert trials[0].value == pytest.approx(0.812345678)
    assert trials[0].intermediate_values == {0: 0.5, 1: 0.7}
    assert trials[2].user_attrs["rheostat:kind"] == "retry"
    assert trials[3].user_attrs["rheostat:kind"] == "duplicate"
    assert trials[4].user_attrs["rheostat:reason"] == "exit 1: boom"
    assert trials[5].params["optimizer"] == "adam"
    assert set(trials[5].distributions) == {"lr", "momentum", "layers", "optimizer"}
    lr = trials[5].distributions["lr"]
    assert isinstance(lr, optuna.distributions.FloatDistribution)
    assert lr.log
    assert lr.low > 1e-5  # the range the LR range test narrowed, not the user's
    started, completed = trials[0].datetime_start, trials[0].datetime_complete
    assert started is not None
    assert completed is not None
    assert started.timestamp() == START  # the TuningTrial's times, not the export's
    assert (completed - started).total_seconds() == 0.0
    assert exported.best_trial.number == 5
    assert "rheostat:lrRangeTest" in exported.user_attrs


def test_a_storage_that_cannot_be_opened_is_one_clear_error() -> None:
    _, _, study = _both()
    with pytest.raises(StorageError, match="cannot write to the storage notaurl: Could not parse"):
        export_to_storage(study, "notaurl")


def test_age_reads_like_kubectls() -> None:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    at = created.timestamp()
    assert [age(created, at + s) for s in (-5, 45, 190, 3 * 3600, 5 * 86400)] == [
        "0s",
        "45s",
        "3m10s",
        "3h",
        "5d",
    ]
    assert age(None) == "<unknown>"
