"""The cluster as a read-only Optuna storage: optuna-dashboard with no copy, no database.

`rheostat export --storage` writes a snapshot that goes stale; this storage answers
Optuna's reads from the TuningStudies and TuningTrials themselves, as a watch keeps
them in an :class:`ObjectCache` (see :mod:`rheostat.backends.kubernetes.watch`), so a
page refreshed while a study runs shows its running trials' intermediate values,
and one refreshed after it ended shows its final best value.

A study's Optuna trials are built by the same replay `rheostat export` and the
operator use (:func:`export.optuna_trials`), recomputed only when one of the
study's objects changed. Ids are this process's own: a study gets one the first
time it is seen (by uid: a study deleted and re-applied is another study), and a
trial's id is its study's id times :data:`TRIAL_ID_STRIDE` plus its number.

Every write raises :class:`ReadOnlyStorageError`, an HTTP 403 that optuna-dashboard
shows the user as it is (any other exception becomes "internal server error").
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Container, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from bottle import HTTPError
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

from rheostat import objectives
from rheostat.backends.kubernetes.export import optuna_trials, study_user_attrs
from rheostat.backends.kubernetes.manifests import LABEL_STUDY
from rheostat.backends.kubernetes.read import ClusterStudy, ReadError
from rheostat.lr_range import LrRangeResult

LOGGER = logging.getLogger(__name__)

TRIAL_ID_STRIDE = 1_000_000  # trial id = study id * stride + trial number
ATTR_SOURCE = "rheostat:source"  # "namespace/name" of the TuningStudy
ATTR_READ_ONLY = "rheostat:readOnly"
# optuna-dashboard keeps a study's note in its system attributes under these keys
# (optuna_dashboard/_note.py: note_ver_key(None), note_str_key_prefix(None)).
NOTE_VERSION_KEY = "dashboard:note_ver"
NOTE_TEXT_KEY = "dashboard:note_str:"
NOTE_CHUNK = 2045  # optuna's SYSTEM_ATTR_MAX_LENGTH, the dashboard's chunk size
METRIC_NAMES_KEY = "study:metric_names"  # Optuna's own key (optuna/study/study.py)

STUDIES_KIND = "tuningstudies"
TRIALS_KIND = "tuningtrials"


class ReadOnlyStorageError(HTTPError):  # type: ignore[misc]  # bottle is untyped
    """A write to the cluster storage; optuna-dashboard shows the message as it is."""

    def __init__(self, what: str) -> None:
        message = (
            f"{what}: this dashboard is read-only. It shows the cluster's TuningStudies and "
            "TuningTrials; change a study with kubectl (or a local run with its study.db)."
        )
        super().__init__(403, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ObjectCache:
    """The latest TuningStudies and TuningTrials, by kind and uid, as the watches saw them.

    Thread-safe: the watch threads write, the server's request threads read. `version`
    grows with every change, so a reader can tell cheaply that nothing moved.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[str, dict[str, Mapping[str, Any]]] = {
            STUDIES_KIND: {},
            TRIALS_KIND: {},
        }
        self.version = 0

    def put(self, kind: str, obj: Mapping[str, Any]) -> None:
        with self._lock:
            self._objects[kind][str(obj["metadata"]["uid"])] = obj
            self.version += 1

    def delete(self, kind: str, obj: Mapping[str, Any]) -> None:
        with self._lock:
            self._objects[kind].pop(str(obj["metadata"]["uid"]), None)
            self.version += 1

    def replace(self, kind: str, objects: Sequence[Mapping[str, Any]]) -> None:
        """All objects of a kind at once: a watch's (re-)LIST."""
        with self._lock:
            self._objects[kind] = {str(o["metadata"]["uid"]): o for o in objects}
            self.version += 1

    def snapshot(self) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
        """(studies, trials) as they are now; the objects themselves are never mutated."""
        with self._lock:
            return list(self._objects[STUDIES_KIND].values()), list(
                self._objects[TRIALS_KIND].values()
            )


@dataclass
class _StudyView:
    """One TuningStudy as Optuna sees it, and what it was computed from."""

    frozen: FrozenStudy
    trials: list[FrozenTrial]
    fingerprint: Hashable = None
    by_number: dict[int, FrozenTrial] = field(default_factory=dict)


def lr_range_note(result: LrRangeResult, policy: str) -> str:
    """The LR range test as a Markdown study note: suggestion, range and curve."""
    lines = [
        "## Learning-rate range test",
        "",
        f"Suggested learning rate: **{result.suggested_lr:.3g}** (rule `{result.rule}`); "
        f"policy `{policy}`; range tuned: **[{result.lower:.3g}, {result.upper:.3g}]**.",
        "",
        "| rule | suggested lr |",
        "| --- | --- |",
        *(f"| {rule} | {lr:.3g} |" for rule, lr in sorted(result.suggestions.items())),
        "",
        "| lr | loss | smoothed loss |",
        "| --- | --- | --- |",
    ]
    step = max(1, len(result.lrs) // 20)  # at most ~20 rows of the curve
    for i in range(0, len(result.lrs), step):
        lines.append(f"| {result.lrs[i]:.3g} | {result.losses[i]:.4g} | {result.smoothed[i]:.4g} |")
    return "\n".join(lines) + "\n"


def note_attrs(body: str) -> dict[str, Any]:
    """A note in optuna-dashboard's storage format (its `save_note` without a write)."""
    attrs: dict[str, Any] = {NOTE_VERSION_KEY: 1}
    for i in range(0, max(len(body), 1), NOTE_CHUNK):
        attrs[f"{NOTE_TEXT_KEY}{i // NOTE_CHUNK}"] = body[i : i + NOTE_CHUNK]
    return attrs


def study_view(
    body: Mapping[str, Any],
    trials: Sequence[Mapping[str, Any]],
    seeds: Sequence[Mapping[str, Any]],
    study_id: int,
    name: str,
) -> _StudyView:
    """A TuningStudy, its TuningTrials and its warm-start seeds as an Optuna study."""
    cluster = ClusterStudy(body=body, trials=trials)
    spec = cluster.spec
    user_attrs = study_user_attrs(cluster)
    metadata = body["metadata"]
    user_attrs[ATTR_SOURCE] = f"{metadata.get('namespace', '')}/{metadata['name']}"
    user_attrs[ATTR_READ_ONLY] = True
    system_attrs: dict[str, Any] = {METRIC_NAMES_KEY: [g.metric for g in spec.goals]}
    lr_result = cluster.results().lr_result
    if lr_result is not None and spec.lr_range_test is not None:
        policy = spec.lr_range_test.apply
        system_attrs.update(note_attrs(lr_range_note(lr_result, policy)))
    directions = [
        StudyDirection.MAXIMIZE if d == "maximize" else StudyDirection.MINIMIZE
        for d in objectives.directions(spec)
    ]
    frozen = FrozenStudy(
        study_name=name,
        direction=None,
        directions=directions,
        user_attrs=user_attrs,
        system_attrs=system_attrs,
        study_id=study_id,
    )
    replayed = optuna_trials(cluster, seeds)
    for trial in replayed:
        trial._trial_id = study_id * TRIAL_ID_STRIDE + trial.number
    return _StudyView(frozen, replayed, by_number={t.number: t for t in replayed})


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    """A child of the study with this uid (objects without owners are kept: older ones)."""
    owners = obj["metadata"].get("ownerReferences") or []
    return not owners or any(o.get("uid") == uid for o in owners)


def _fingerprint(*objects: Sequence[Mapping[str, Any]]) -> Hashable:
    return tuple(
        tuple(sorted((o["metadata"]["uid"], o["metadata"].get("resourceVersion")) for o in group))
        for group in objects
    )


class ClusterStorage(BaseStorage):
    """Optuna's storage API over an :class:`ObjectCache`; reads only.

    `namespaced`: study names are the TuningStudies' names (one namespace); otherwise
    `namespace/name`, so studies of the same name in two namespaces stay apart.
    """

    def __init__(self, cache: ObjectCache, *, namespaced: bool) -> None:
        self.cache = cache
        self.namespaced = namespaced
        self._lock = threading.Lock()
        self._ids: dict[str, int] = {}  # study uid -> study id
        self._views: dict[str, _StudyView] = {}  # study uid -> view
        self._skipped: set[str] = set()  # uids of studies with an invalid spec, logged once
        self._seen_version = -1
        self._current: list[_StudyView] = []

    # ----- the views, kept current --------------------------------------------------

    def _refresh(self) -> list[_StudyView]:
        with self._lock:
            if self.cache.version == self._seen_version:
                return self._current
            version = self.cache.version
            studies, trials = self.cache.snapshot()
            by_study: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
            for trial in trials:
                labels = trial["metadata"].get("labels") or {}
                key = (str(trial["metadata"].get("namespace", "")), str(labels.get(LABEL_STUDY)))
                by_study.setdefault(key, []).append(trial)
            uids_by_name = {
                (str(s["metadata"].get("namespace", "")), str(s["metadata"]["name"])): str(
                    s["metadata"]["uid"]
                )
                for s in studies
            }
            current = []
            for body in sorted(studies, key=lambda s: str(s["metadata"].get("creationTimestamp"))):
                view = self._view(body, by_study, uids_by_name)
                if view is not None:
                    current.append(view)
            live = {str(s["metadata"]["uid"]) for s in studies}
            self._views = {uid: v for uid, v in self._views.items() if uid in live}
            self._current = sorted(current, key=lambda v: v.frozen._study_id)
            self._seen_version = version
            return self._current

    def _view(
        self,
        body: Mapping[str, Any],
        by_study: Mapping[tuple[str, str], list[Mapping[str, Any]]],
        uids_by_name: Mapping[tuple[str, str], str],
    ) -> _StudyView | None:
        metadata = body["metadata"]
        uid, namespace = str(metadata["uid"]), str(metadata.get("namespace", ""))
        own = [t for t in by_study.get((namespace, metadata["name"]), []) if _owned_by(t, uid)]
        source = ((body.get("spec") or {}).get("warmStart") or {}).get("fromStudy")
        source_uid = uids_by_name.get((namespace, str(source)), "")
        seeds = [t for t in by_study.get((namespace, str(source)), []) if _owned_by(t, source_uid)]
        fingerprint = _fingerprint([body], own, seeds)
        known = self._views.get(uid)
        if known is not None and known.fingerprint == fingerprint:
            return known
        study_id = self._ids.setdefault(uid, len(self._ids))
        name = str(metadata["name"]) if self.namespaced else f"{namespace}/{metadata['name']}"
        try:
            view = study_view(body, own, seeds, study_id, name)
        except (ReadError, KeyError, TypeError, ValueError) as error:
            # One study that cannot be read (an invalid spec, a hand-edited trial)
            # must not take the others off the dashboard.
            if uid not in self._skipped:
                LOGGER.warning("study %s not shown: %s", name, error)
                self._skipped.add(uid)
            return None
        view.fingerprint = fingerprint
        self._views[uid] = view
        return view

    def _study(self, study_id: int) -> _StudyView:
        for view in self._refresh():
            if view.frozen._study_id == study_id:
                return view
        raise KeyError(f"no study with id {study_id} (deleted, or not readable)")

    # ----- reads --------------------------------------------------------------------

    def get_all_studies(self) -> list[FrozenStudy]:
        return [copy.deepcopy(v.frozen) for v in self._refresh()]

    def get_study_id_from_name(self, study_name: str) -> int:
        for view in self._refresh():
            if view.frozen.study_name == study_name:
                return view.frozen._study_id
        raise KeyError(f"no study named {study_name}")

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._study(study_id).frozen.study_name

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return list(self._study(study_id).frozen.directions)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return copy.deepcopy(self._study(study_id).frozen.user_attrs)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return copy.deepcopy(self._study(study_id).frozen.system_attrs)

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        trials = self._study(study_id).trials
        if states is not None:
            trials = [t for t in trials if t.state in states]
        return copy.deepcopy(trials) if deepcopy else list(trials)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        study_id, number = divmod(trial_id, TRIAL_ID_STRIDE)
        try:
            return copy.deepcopy(self._study(study_id).by_number[number])
        except KeyError:
            raise KeyError(f"no trial with id {trial_id}") from None

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        if trial_number not in self._study(study_id).by_number:
            raise KeyError(f"no trial {trial_number} in study {study_id}")
        return study_id * TRIAL_ID_STRIDE + trial_number

    def get_trial_number_from_id(self, trial_id: int) -> int:
        return self.get_trial(trial_id).number

    # ----- writes: refused ----------------------------------------------------------

    def create_new_study(
        self, directions: Sequence[StudyDirection], study_name: str | None = None
    ) -> NoReturn:
        raise ReadOnlyStorageError("cannot create a study")

    def delete_study(self, study_id: int) -> NoReturn:
        raise ReadOnlyStorageError("cannot delete a study")

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> NoReturn:
        raise ReadOnlyStorageError("cannot change a study's attributes")

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> NoReturn:
        raise ReadOnlyStorageError("cannot save a note or change a study")

    def create_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None = None
    ) -> NoReturn:
        raise ReadOnlyStorageError("cannot add a trial")

    def set_trial_param(
        self, trial_id: int, param_name: str, param_value_internal: float, distribution: Any
    ) -> NoReturn:
        raise ReadOnlyStorageError("cannot change a trial")

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> NoReturn:
        raise ReadOnlyStorageError("cannot change a trial's state or value")

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> NoReturn:
        raise ReadOnlyStorageError("cannot report a value")

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> NoReturn:
        raise ReadOnlyStorageError("cannot change a trial's attributes")

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> NoReturn:
        raise ReadOnlyStorageError("cannot save a note or change a trial")
