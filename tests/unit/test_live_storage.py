"""The cluster's objects as a read-only Optuna storage, over plain dicts (no cluster).

The objects are those the operator writes (`manifests.trial_object`, an engine's
status); the storage must show them as `rheostat export` does, follow every change
the cache sees, and refuse every write with a message the dashboard can show.
"""

from __future__ import annotations

import copy
import io
import json
import math
import wsgiref.util
from pathlib import Path
from typing import Any

import optuna
import optuna_dashboard
import pytest
from optuna.trial import TrialState
from optuna_dashboard._note import get_note_from_system_attrs

from rheostat import lr_phase
from rheostat.backends.kubernetes.live import (
    NOTE_TEXT_KEY,
    NOTE_VERSION_KEY,
    STUDIES_KIND,
    TRIAL_ID_STRIDE,
    TRIALS_KIND,
    ClusterStorage,
    ObjectCache,
    ReadOnlyStorageError,
)
from rheostat.backends.kubernetes.manifests import trial_object
from rheostat.cli import main
from rheostat.engine import Engine, TrialRecord
from rheostat.spec import study_from_mapping
from tests.bad_specs import good_study

START = 1_700_000_000.0


def _curve() -> dict[str, list[float]]:
    lrs = [10 ** (-6 + 7 * i / 79) for i in range(80)]
    losses = [2.0 - 1.5 * math.exp(-((math.log10(lr) + 2) ** 2)) for lr in lrs]
    losses = [v if lr < 0.3 else v + (lr - 0.3) * 20 for v, lr in zip(losses, lrs, strict=True)]
    return {"lrs": lrs, "losses": losses}


def _study(
    name: str, uid: str, document: dict[str, Any] | None = None, version: str = "1"
) -> dict[str, Any]:
    document = document or good_study()
    return {
        **document,
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": uid,
            "resourceVersion": version,
            "creationTimestamp": f"2026-01-01T00:00:0{uid[-1]}Z",
        },
        "status": {},
    }


def _trial(study: dict[str, Any], record: TrialRecord, version: str = "1") -> dict[str, Any]:
    trial = trial_object(study, record)
    trial["metadata"]["uid"] = f"{study['metadata']['uid']}-t{record.number}"
    trial["metadata"]["resourceVersion"] = version
    trial["status"]["startedAt"] = START
    if record.state != "running":
        trial["status"]["finishedAt"] = START + 10
    return trial


def _lr_study() -> tuple[dict[str, Any], list[TrialRecord]]:
    """The `good` study after its LR range test, with every kind of trial."""
    document = good_study()
    spec = study_from_mapping(document).spec
    curve = _curve()
    result = lr_phase.analyse(spec, curve["lrs"], curve["losses"]).result
    assert result is not None

    def params(momentum: float) -> dict[str, Any]:
        return {"lr": result.suggested_lr, "momentum": momentum, "layers": 2, "optimizer": "sgd"}

    records = [
        TrialRecord(0, params(0.1), "complete", value=0.8, intermediate={0: 0.5, 1: 0.7}),
        TrialRecord(1, params(0.2), "pruned", value=0.3, intermediate={0: 0.2, 1: 0.3}),
        TrialRecord(2, params(0.3), "failed", reason="exit 1: boom"),
        TrialRecord(3, params(0.5), "running", intermediate={0: 0.4, 1: 0.45}, started_at=START),
    ]
    status = Engine.rebuild(spec, records, curve).status()
    status["lrRangeTest"]["curve"] = curve
    body = _study("good", "u-1")
    body["status"] = status
    return body, records


def _storage(*objects: tuple[str, dict[str, Any]], namespaced: bool = True) -> ClusterStorage:
    cache = ObjectCache()
    for kind, obj in objects:
        cache.put(kind, obj)
    return ClusterStorage(cache, namespaced=namespaced)


def test_a_running_study_reads_as_optuna_reads_a_storage() -> None:
    body, records = _lr_study()
    storage = _storage((STUDIES_KIND, body), *((TRIALS_KIND, _trial(body, r)) for r in records))
    [frozen] = storage.get_all_studies()
    assert frozen.study_name == "good"
    study = optuna.load_study(study_name="good", storage=storage)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert study.metric_names == ["accuracy"]
    trials = study.get_trials()
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.FAIL,
        TrialState.RUNNING,
    ]
    assert trials[3].intermediate_values == {0: 0.4, 1: 0.45}  # live, while it runs
    assert trials[1].intermediate_values == {0: 0.2, 1: 0.3}
    assert trials[2].user_attrs["rheostat:reason"] == "exit 1: boom"
    assert study.best_trial.number == 0
    assert trials[0].datetime_start is not None
    assert trials[0].datetime_start.timestamp() == START
    # Ids are stable and lead back to the trial.
    assert trials[3]._trial_id == frozen._study_id * TRIAL_ID_STRIDE + 3
    assert storage.get_trial(trials[3]._trial_id).number == 3
    assert storage.get_trial_id_from_study_id_trial_number(frozen._study_id, 2) == (
        trials[2]._trial_id
    )
    assert storage.get_n_trials(frozen._study_id, TrialState.RUNNING) == 1


def test_the_lr_range_test_is_a_study_note_and_attribute() -> None:
    body, _ = _lr_study()
    storage = _storage((STUDIES_KIND, body))
    study_id = storage.get_study_id_from_name("good")
    attrs = storage.get_study_system_attrs(study_id)
    assert attrs[NOTE_VERSION_KEY] == 1
    note = "".join(v for k, v in sorted(attrs.items()) if k.startswith(NOTE_TEXT_KEY))
    suggested = body["status"]["lrRangeTest"]["suggestedLr"]
    assert f"Suggested learning rate: **{suggested:.3g}**" in note
    assert "policy `narrow`" in note
    assert "| lr | loss | smoothed loss |" in note
    # optuna-dashboard's own reader finds it where it keeps notes.
    assert get_note_from_system_attrs(attrs, None)["body"] == note
    lr = storage.get_study_user_attrs(study_id)["rheostat:lrRangeTest"]
    assert lr["suggestedLr"] == suggested
    assert lr["lower"] < suggested < lr["upper"]


def test_a_change_the_watch_saw_is_read_at_once() -> None:
    body, records = _lr_study()
    cache = ObjectCache()
    cache.put(STUDIES_KIND, body)
    for record in records:
        cache.put(TRIALS_KIND, _trial(body, record))
    storage = ClusterStorage(cache, namespaced=True)
    study_id = storage.get_study_id_from_name("good")
    assert storage.get_all_trials(study_id)[3].state == TrialState.RUNNING
    done = TrialRecord(3, records[3].params, "complete", value=0.95, intermediate={0: 0.4})
    cache.put(TRIALS_KIND, _trial(body, done, version="2"))
    assert storage.get_all_trials(study_id)[3].state == TrialState.COMPLETE
    assert storage.get_best_trial(study_id).value == 0.95
    # A study deleted and re-applied is another study, with another id.
    cache.delete(STUDIES_KIND, body)
    assert storage.get_all_studies() == []
    with pytest.raises(KeyError):
        storage.get_all_trials(study_id)
    again = _study("good", "u-2")
    cache.put(STUDIES_KIND, again)
    assert storage.get_study_id_from_name("good") != study_id
    # The old study's trials are owned by the old uid: the new one starts clean.
    assert storage.get_all_trials(storage.get_study_id_from_name("good")) == []


def test_failed_pruned_and_several_objectives() -> None:
    document = good_study()
    document["spec"].pop("lrRangeTest")
    document["spec"].pop("objective")
    document["spec"]["objectives"] = [
        {"metric": "accuracy", "direction": "maximize"},
        {"metric": "latency", "direction": "minimize"},
    ]
    document["spec"]["earlyStopping"] = {"pruner": "none"}
    body = _study("front", "u-3", document)
    params = {"lr": 0.01, "momentum": 0.5, "layers": 2, "optimizer": "sgd"}
    records = [
        TrialRecord(0, params, "complete", value=0.9, values=(0.9, 3.0)),
        TrialRecord(1, {**params, "layers": 3}, "complete", value=0.8, values=(0.8, 1.0)),
        TrialRecord(2, {**params, "layers": 4}, "complete", value=0.7, values=(0.7, 5.0)),
        TrialRecord(3, {**params, "layers": 1}, "failed", reason="OOMKilled"),
    ]
    storage = _storage((STUDIES_KIND, body), *((TRIALS_KIND, _trial(body, r)) for r in records))
    study = optuna.load_study(study_name="front", storage=storage)
    assert study.directions == [
        optuna.study.StudyDirection.MAXIMIZE,
        optuna.study.StudyDirection.MINIMIZE,
    ]
    assert study.metric_names == ["accuracy", "latency"]
    assert sorted(t.number for t in study.best_trials) == [0, 1]  # the front
    assert study.trials[3].state == TrialState.FAIL


def test_warm_start_seeds_are_shown_and_marked() -> None:
    source = _study("earlier", "u-4")
    source["spec"].pop("lrRangeTest")
    params = {"lr": 0.01, "momentum": 0.5, "layers": 2, "optimizer": "sgd"}
    earlier = [
        TrialRecord(0, params, "complete", value=0.6),
        TrialRecord(1, {**params, "layers": 3}, "complete", value=0.7),
    ]
    document = copy.deepcopy(source)
    document["spec"]["warmStart"] = {"fromStudy": "earlier"}
    body = _study("later", "u-5", document)
    # The operator numbers a seeded study's own trials after its seeds.
    own = TrialRecord(2, {**params, "layers": 4}, "running", intermediate={0: 0.1})
    storage = _storage(
        (STUDIES_KIND, source),
        (STUDIES_KIND, body),
        *((TRIALS_KIND, _trial(source, r)) for r in earlier),
        (TRIALS_KIND, _trial(body, own)),
        namespaced=False,
    )
    assert [s.study_name for s in storage.get_all_studies()] == ["ns/earlier", "ns/later"]
    trials = optuna.load_study(study_name="ns/later", storage=storage).trials
    assert [t.user_attrs["rheostat:kind"] for t in trials] == ["seeded", "seeded", "counted"]
    assert trials[0].user_attrs["rheostat:reason"] == "seeded from earlier"
    assert [t.value for t in trials[:2]] == [0.6, 0.7]
    assert trials[2].state == TrialState.RUNNING


def test_a_study_that_cannot_be_read_is_left_out() -> None:
    body, _ = _lr_study()
    broken = _study("broken", "u-6")
    broken["spec"]["parameters"] = []
    odd = _study("odd", "u-7")
    trial = _trial(odd, TrialRecord(0, {"lr": 0.01}, "complete", value=1.0))
    del trial["spec"]["number"]  # hand-edited
    storage = _storage(
        (STUDIES_KIND, body), (STUDIES_KIND, broken), (STUDIES_KIND, odd), (TRIALS_KIND, trial)
    )
    assert [s.study_name for s in storage.get_all_studies()] == ["good"]


def test_every_write_is_refused_with_a_message_the_dashboard_shows() -> None:
    body, records = _lr_study()
    storage = _storage((STUDIES_KIND, body), (TRIALS_KIND, _trial(body, records[0])))
    study_id = storage.get_study_id_from_name("good")
    trial_id = study_id * TRIAL_ID_STRIDE
    writes = [
        lambda: storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "new"),
        lambda: storage.delete_study(study_id),
        lambda: storage.set_study_user_attr(study_id, "k", 1),
        lambda: storage.set_study_system_attr(study_id, NOTE_VERSION_KEY, 2),
        lambda: storage.create_new_trial(study_id),
        lambda: storage.set_trial_state_values(trial_id, TrialState.FAIL),
        lambda: storage.set_trial_intermediate_value(trial_id, 1, 0.5),
        lambda: storage.set_trial_user_attr(trial_id, "k", 1),
        lambda: storage.set_trial_system_attr(trial_id, "k", 1),
        lambda: storage.set_trial_param(
            trial_id, "momentum", 0.1, optuna.distributions.FloatDistribution(0, 1)
        ),
    ]
    for write in writes:
        with pytest.raises(ReadOnlyStorageError, match="this dashboard is read-only") as caught:
            write()
        assert caught.value.status_code == 403


def _call(app: Any, method: str, path: str, body: bytes = b"") -> tuple[str, Any]:
    """One request to a WSGI app, in process (no socket)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    wsgiref.util.setup_testing_defaults(environ)
    seen: list[str] = []
    chunks = app(environ, lambda status, headers, *_: seen.append(status))
    return seen[0], json.loads(b"".join(chunks) or b"{}")


def test_the_dashboard_refuses_a_note_over_http() -> None:
    """Through optuna-dashboard's own app: a 403 whose reason is our message."""
    body, _ = _lr_study()
    storage = _storage((STUDIES_KIND, body))
    app = optuna_dashboard.wsgi(storage)
    study_id = storage.get_study_id_from_name("good")
    status, listed = _call(app, "GET", "/api/studies")
    assert status.startswith("200")
    assert [s["study_name"] for s in listed["study_summaries"]] == ["good"]
    note = json.dumps({"version": 2, "body": "mine"}).encode()
    status, answer = _call(app, "PUT", f"/api/studies/{study_id}/note", note)
    assert status.startswith("403")
    assert "this dashboard is read-only" in answer["reason"]


def test_dashboard_without_a_kubeconfig_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.yaml"
    assert main(["dashboard", "--kubeconfig", str(missing), "--port", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: no usable kubeconfig")
