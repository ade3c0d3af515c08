"""Reading an earlier local study for `spec.warmStart.fromStudy`.

The core seeds a study from plain :class:`TrialRecord`s; this module is the local
I/O that produces them, from either file a local run leaves behind: its
results.json (every counted trial, portable) or its study.db (the Optuna store).
Only counted trials are read: an earlier study's retried attempts, skipped
duplicates and its own seeds are not its findings.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from rheostat.backends.local.storage import StudyFileError, open_storage
from rheostat.engine import TrialRecord
from rheostat.ledger import ATTR_GOALS, ATTR_KIND
from rheostat.spec import StudySpec
from rheostat.warm_start import mismatch


class SeedError(ValueError):
    """The earlier study cannot be read; the run stops before touching anything."""


def load_seeds(spec: StudySpec) -> list[TrialRecord]:
    """The earlier study's trials, or [] when the spec names none.

    `fromStudy` is a path to a results.json or study.db, or, as on a cluster, a
    study's name: then the study.db in its default work folder (runs/<name>/).
    """
    source = spec.warm_start.from_study if spec.warm_start else None
    if source is None:
        return []
    path = Path(source)
    if not path.is_file() and "/" not in source:
        # A study name, as on a cluster: the earlier run's default work folder.
        path = Path("runs") / source / "study.db"
    if not path.is_file():
        raise SeedError(
            f"spec.warmStart.fromStudy: {source} is neither a results.json or study.db "
            f"file nor a study run here (no {path})"
        )
    if path.suffix == ".json":
        return _from_results(path, spec)
    return _from_database(path, spec)


def _from_results(path: Path, spec: StudySpec) -> list[TrialRecord]:
    try:
        document = json.loads(path.read_text())
        trials: list[dict[str, Any]] = document["trials"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SeedError(f"spec.warmStart.fromStudy: {path} is no results.json: {error}") from None
    if "objective" not in document:
        # Several objectives: no one value per trial to tell a single-objective sampler.
        raise SeedError(
            f"spec.warmStart.fromStudy: {path} is a study with several objectives; "
            "it cannot seed a study with one"
        )
    objective = document["objective"] or {}
    problem = mismatch(spec, str(path), objective.get("metric"), objective.get("direction", ""))
    if problem is not None:
        raise SeedError(problem)
    return [
        TrialRecord(
            number=int(t["number"]),
            params=t["params"],
            state=t["state"],
            value=t.get("value"),
            intermediate={int(k): float(v) for k, v in (t.get("intermediate") or {}).items()},
        )
        for t in trials
    ]


def _from_database(path: Path, spec: StudySpec) -> list[TrialRecord]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = open_storage(path)
    except StudyFileError as error:
        raise SeedError(
            f"spec.warmStart.fromStudy: {path} {error}; give a results.json or study.db"
        ) from None
    try:
        summaries = optuna.get_all_study_summaries(storage)
        if len(summaries) != 1:
            raise SeedError(
                f"spec.warmStart.fromStudy: {path} holds {len(summaries)} studies, not one"
            )
        study = optuna.load_study(study_name=summaries[0].study_name, storage=storage)
        if len(study.directions) > 1:
            raise SeedError(
                f"spec.warmStart.fromStudy: {path} is a study with several objectives; "
                "it cannot seed a study with one"
            )
        goals = study.user_attrs.get(ATTR_GOALS) or [{"metric": None}]
        direction = study.direction.name.lower()
        problem = mismatch(spec, str(path), goals[0].get("metric"), direction)
        if problem is not None:
            raise SeedError(problem)
        if goals[0].get("metric") is None:  # a store from before the goals were kept
            report_skipped([f"from {path}: its metric is not recorded; it must be the same"])
        trials = study.get_trials(deepcopy=False)
    finally:
        storage.remove_session()
        storage.engine.dispose()
    states = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}
    return [
        TrialRecord(
            number=t.number,
            params=t.params,
            state=states[t.state],  # type: ignore[arg-type]
            value=t.value,
            intermediate=dict(t.intermediate_values),
        )
        for t in trials
        if t.state in states and t.user_attrs.get(ATTR_KIND, "counted") == "counted"
    ]


def report_skipped(warnings: list[str]) -> None:
    """Seeds the space cannot hold are not fatal; the user still hears of each."""
    for warning in warnings:
        print(f"warning: warm start {warning}", file=sys.stderr)
