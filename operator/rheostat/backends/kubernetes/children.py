"""A study's children: what the watches saw under its name, narrowed to what its uid owns.

The operator's indexes key children by (namespace, study name), because a label is
all a watch can select on. But a study deleted and re-applied under the same name
(the documented way to change a study) is a new object with a new uid, and until the
garbage collector has removed its predecessor's TuningTrials, Jobs and pods, those
carry the same labels. Ownership, not the name, decides what is the study's: a
TuningTrial whose controller is the study, a Job whose controller is one of those
TuningTrials (or the study itself, for the LR range test), a pod whose controller is
one of those Jobs. Anything else is ignored, never adopted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rheostat.backends.kubernetes import manifests as build


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    """The uid of the object's controller (its owner reference with controller: true)."""
    for reference in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if reference.get("controller"):
            return str(reference.get("uid"))
    return None


def _uid(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"].get("uid"))


@dataclass(frozen=True)
class Children:
    """A study's children as the watches last saw them (plain dicts)."""

    jobs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # by name
    pods: Sequence[Mapping[str, Any]] = ()
    trials: Sequence[Mapping[str, Any]] = ()
    # TuningTrials of spec.warmStart.fromStudy (same namespace): told, never run.
    seeds: Sequence[Mapping[str, Any]] = ()
    # That study's (first) objective, {"metric", "direction"}, while it exists: its
    # values are told as this study's, so what it optimised must be the same.
    seed_objective: Mapping[str, Any] | None = None

    def owned_trials(self, study_uid: str) -> Children:
        """Only the TuningTrials the study owns (Jobs and pods as they were)."""
        trials = [t for t in self.trials if controller_uid(t) == study_uid]
        return Children(self.jobs, self.pods, trials, self.seeds, self.seed_objective)

    def owned_by(self, study_uid: str, trial_uids: Iterable[str] = ()) -> Children:
        """Only what the study owns, directly or through its trials and their Jobs.

        `trial_uids` adds trials this process created whose watch event has not come
        yet, so their Jobs are not taken for strangers meanwhile.
        """
        trials = [t for t in self.trials if controller_uid(t) == study_uid]
        owners = {study_uid, *trial_uids, *(_uid(t) for t in trials)}
        jobs = {name: j for name, j in self.jobs.items() if controller_uid(j) in owners}
        job_uids = {_uid(j) for j in jobs.values()}
        pods = [p for p in self.pods if controller_uid(p) in job_uids]
        return Children(jobs, pods, trials, self.seeds, self.seed_objective)

    def pods_by_owner(self) -> dict[str, list[Mapping[str, Any]]]:
        """Pods by their trial (`t<number>`) or role (`lr-range-test`)."""
        grouped: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for pod in self.pods:
            labels = pod["metadata"].get("labels") or {}
            if labels.get(build.LABEL_ROLE) == build.ROLE_TRIAL:
                grouped[f"t{labels.get(build.LABEL_TRIAL)}"].append(pod)
            else:
                grouped[str(labels.get(build.LABEL_ROLE))].append(pod)
        return grouped
