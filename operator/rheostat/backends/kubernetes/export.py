"""Write a cluster study into an Optuna storage, for optuna-dashboard and friends.

The TuningTrials are the study's records; replaying them into an Optuna study is
what the operator does after a restart (`Engine.rebuild`), here into a storage a
user names (`sqlite:///study.db`, a PostgreSQL URL). The result has the shape of a
local run's `study.db`: the same trial numbers (a skipped duplicate proposal is a
FAIL placeholder there too), parameters with their distributions, values,
intermediate values, states and Rheostat's bookkeeping in user attributes.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial
from sqlalchemy.exc import SQLAlchemyError

from rheostat import ledger, lr_phase, objectives, warm_start
from rheostat.backends.kubernetes.manifests import record_from_trial
from rheostat.backends.kubernetes.read import ClusterStudy, ReadError
from rheostat.space import build_space

ATTR_NAMESPACE = "rheostat:namespace"


class StorageError(ReadError):
    """The storage named cannot be written; the message says why, in one line."""


def export_to_storage(
    study: ClusterStudy, storage: str | optuna.storages.BaseStorage, name: str | None = None
) -> optuna.Study:
    """Write `study` into `storage` (a URL or a storage object) as Optuna study `name`
    (default: the study's own name).

    An earlier export of the same name is replaced: an export is a snapshot, and
    re-running it after more trials finished must not leave two copies.
    """
    spec = study.spec
    name = name or str(study.body["metadata"]["name"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with contextlib.suppress(KeyError):  # KeyError: nothing exported under this name yet
            optuna.delete_study(study_name=name, storage=storage)
        target = optuna.create_study(
            storage=storage, study_name=name, directions=objectives.directions(spec)
        )
    except SQLAlchemyError as error:  # a URL it cannot parse, a file it cannot open
        reason = str(error).splitlines()[0]
        raise StorageError(f"cannot write to the storage {storage}: {reason}") from None
    with warnings.catch_warnings():
        # Naming the objective is "experimental" in Optuna, and shown by the dashboard.
        warnings.simplefilter("ignore", ExperimentalWarning)
        target.set_metric_names([g.metric for g in spec.goals])
    for key, value in study_user_attrs(study).items():
        target.set_user_attr(key, value)
    for trial in optuna_trials(study):
        target.add_trial(trial)
    return target


def study_user_attrs(study: ClusterStudy) -> dict[str, Any]:
    """The study's own attributes: its namespace and, once run, its LR range test."""
    attrs: dict[str, Any] = {ATTR_NAMESPACE: str(study.body["metadata"].get("namespace", ""))}
    lr_result = study.results().lr_result
    if lr_result is not None:
        attrs[ledger.ATTR_LR_RANGE] = lr_result.to_dict()
    return attrs


def optuna_trials(
    study: ClusterStudy, seeds: Sequence[Mapping[str, Any]] = ()
) -> list[FrozenTrial]:
    """The study's Optuna trials, numbered as the operator numbers them.

    This is the operator's own replay (`Engine.rebuild`): `seeds`, the TuningTrials
    of `spec.warmStart.fromStudy`, are told first and marked `rheostat:kind=seeded`;
    then every TuningTrial by number, a number with no record (a skipped duplicate
    proposal) filled by a FAIL placeholder. Start and end times come from the
    TuningTrials' status. Pure: the scratch study lives in memory and is dropped.
    """
    spec = study.spec
    results = study.results()
    override = lr_phase.override(spec, results.lr_result) if results.lr_result else None
    space = build_space(spec.parameters, override, grid=spec.algorithm.name == "grid")
    scratch = optuna.create_study(directions=objectives.directions(spec))
    by_number = {r.number: r for r in study.records()}
    own_first = min(by_number) if by_number else None
    warm_start.reseed(scratch, spec, space, [record_from_trial(t) for t in seeds], own_first)
    times = {int(t["spec"]["number"]): t.get("status") or {} for t in study.trials}
    for number in range(len(scratch.trials), max(by_number, default=-1) + 1):
        record = by_number.get(number)
        if record is None:
            scratch.add_trial(ledger.placeholder())
            continue
        trial = ledger.frozen(record, space)
        started, finished = times[number].get("startedAt"), times[number].get("finishedAt")
        if started:
            trial.datetime_start = datetime.fromtimestamp(float(started))
        if finished and record.state != "running":
            trial.datetime_complete = datetime.fromtimestamp(float(finished))
        scratch.add_trial(trial)
    return scratch.get_trials(deepcopy=False)
