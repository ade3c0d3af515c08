"""Read a cluster study back for the command line: `rheostat get|describe|plot|export`.

A user's kubeconfig (the same one kubectl uses) is the way in. The study and its
TuningTrials are read once and turned into the structures a local run reports
from (:class:`StudyResults`, engine trial records), so a cluster study gets the
same table, plots and files as a local one. The conversion is pure and tested
without a cluster; only :class:`ClusterReader` talks to the API.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from rheostat import lr_phase
from rheostat.backends.kubernetes.kube import STUDIES, TRIALS, api_message
from rheostat.backends.kubernetes.manifests import (
    LABEL_ROLE,
    LABEL_STUDY,
    LABEL_TRIAL,
    ROLE_TRIAL,
    record_from_trial,
)
from rheostat.backends.local.report import StudyResults
from rheostat.engine import TrialRecord, TrialView
from rheostat.spec import API_GROUP, API_VERSION, InvalidStudyError, StudySpec, study_from_mapping

# The keys of a study's status that the engine computes; the rest (conditions, the
# stored curve, Kopf's bookkeeping, display strings) is the operator's business.
ENGINE_STATUS_KEYS = ("phase", "trials", "bestTrial", "paretoFront", "lrRangeTest", "reason")
COUNTED_STATES = ("running", "complete", "pruned", "failed")


class ReadError(Exception):
    """A study that cannot be read; the message is for the user."""


@dataclass(frozen=True)
class ClusterStudy:
    """A TuningStudy and its TuningTrials as the API returned them (plain dicts)."""

    body: Mapping[str, Any]
    trials: Sequence[Mapping[str, Any]]
    events: Sequence[client.CoreV1Event] = field(default_factory=list)
    # For describe: the phase of each trial pod (by trial number), to tell a trial
    # whose pod has not started yet from one that runs.
    pod_phases: Mapping[int, str] = field(default_factory=dict)

    @property
    def spec(self) -> StudySpec:
        return study_spec(self.body)

    def records(self) -> list[TrialRecord]:
        """Every trial as the engine stores it (retries and duplicates included)."""
        return sorted((record_from_trial(t) for t in self.trials), key=lambda r: r.number)

    def results(self) -> StudyResults:
        return study_results(self.body, self.trials)


def study_spec(body: Mapping[str, Any]) -> StudySpec:
    """The study's spec, validated as the operator validates it."""
    document = {
        "apiVersion": body.get("apiVersion", f"{API_GROUP}/{API_VERSION}"),
        "kind": body.get("kind", "TuningStudy"),
        "metadata": {"name": body["metadata"]["name"]},
        "spec": dict(body["spec"]),
    }
    try:
        return study_from_mapping(document).spec
    except InvalidStudyError as error:
        raise ReadError(f"study {body['metadata']['name']} has an invalid spec: {error}") from None


def in_spec_order(params: Mapping[str, Any], spec: StudySpec) -> dict[str, Any]:
    """Parameters in the order the spec lists them, as a local run shows them.

    The API server hands objects back with their keys sorted, which would reorder
    every parameter list against the local table.
    """
    names = [p.name for p in spec.parameters]
    ordered = {n: params[n] for n in names if n in params}
    return {**ordered, **{k: v for k, v in params.items() if k not in ordered}}


def trial_view(trial: Mapping[str, Any], spec: StudySpec) -> TrialView | None:
    """A TuningTrial as a user counts it; None for retried attempts and duplicates."""
    record = record_from_trial(trial)
    if record.kind != "counted":
        return None
    status = trial.get("status") or {}
    started, finished = status.get("startedAt"), status.get("finishedAt")
    duration = float(finished) - float(started) if started and finished else None
    return TrialView(
        number=record.number,
        state=record.state,
        params=in_spec_order(record.params, spec),
        value=record.value if record.state in {"complete", "pruned"} else None,
        reason=record.reason,
        intermediate=dict(record.intermediate),
        duration=duration,
        values=record.values if record.state == "complete" else None,
    )


def study_results(body: Mapping[str, Any], trials: Sequence[Mapping[str, Any]]) -> StudyResults:
    """A cluster study in the form a local run reports from.

    The status is the operator's (phase, counts, best trial: what the cluster
    decided); the LR range test is re-analysed from the curve the status keeps,
    exactly as a restarted operator does, to get the smoothed curve back.
    """
    spec = study_spec(body)
    views = sorted(
        (v for v in (trial_view(t, spec) for t in trials) if v is not None),
        key=lambda v: v.number,
    )
    stored = dict(body.get("status") or {})
    status: dict[str, Any] = {k: stored[k] for k in ENGINE_STATUS_KEYS if k in stored}
    if isinstance(status.get("bestTrial"), Mapping):
        best = dict(status["bestTrial"])
        best["params"] = in_spec_order(best.get("params") or {}, spec)
        status["bestTrial"] = best
    status.setdefault("phase", "Pending")
    if "trials" not in status:  # not reconciled yet: count what exists
        tally = {s: sum(1 for v in views if v.state == s) for s in COUNTED_STATES}
        tally["finished"] = tally["complete"] + tally["pruned"] + tally["failed"]
        tally["target"] = spec.budget.max_trials
        status["trials"] = tally
    lr = dict(status.get("lrRangeTest") or {})
    curve = lr.pop("curve", None)
    if lr:
        status["lrRangeTest"] = lr
    outcome = lr_phase.restore(spec, curve) if isinstance(curve, Mapping) else None
    return StudyResults(
        name=str(body["metadata"]["name"]),
        spec=spec,
        status=status,
        trials=views,
        lr_result=outcome.result if outcome else None,
    )


@dataclass(frozen=True)
class StudyRow:
    """One line of `rheostat get`."""

    namespace: str
    name: str
    phase: str
    finished: int | None
    target: int | None
    best: float | None
    lr: float | None
    created: datetime | None
    front: int | None = None  # trials on the Pareto front (several objectives)
    eta: int | None = None  # seconds a running study still needs (status.etaSeconds)


def study_row(body: Mapping[str, Any]) -> StudyRow:
    status = body.get("status") or {}
    counts = status.get("trials") or {}
    metadata = body["metadata"]
    created = metadata.get("creationTimestamp")
    if isinstance(created, str):
        created = datetime.fromisoformat(created.replace("Z", "+00:00"))
    return StudyRow(
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata["name"]),
        phase=str(status.get("phase", "Pending")),
        finished=counts.get("finished"),
        target=counts.get("target", (body.get("spec") or {}).get("budget", {}).get("maxTrials")),
        best=(status.get("bestTrial") or {}).get("value"),
        lr=(status.get("lrRangeTest") or {}).get("suggestedLr"),
        created=created if isinstance(created, datetime) else None,
        front=(status.get("paretoFront") or {}).get("size"),
        eta=status.get("etaSeconds"),
    )


def connect(
    kubeconfig: str | None = None, context: str | None = None
) -> tuple[client.ApiClient, str]:
    """An API client from the kubeconfig (as kubectl finds it) and its namespace.

    The namespace is the context's own, or `default`, as kubectl would use. Inside
    a pod with no kubeconfig, the pod's service account and namespace are used.
    """
    try:
        # Both are untyped in the client.
        api = config.new_client_from_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except (ConfigException, OSError) as error:
        if kubeconfig is None and context is None:
            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except ConfigException:
                raise ReadError(f"no usable kubeconfig: {error}") from None
            return client.ApiClient(), _pod_namespace()
        raise ReadError(f"no usable kubeconfig: {error}") from None
    chosen = next((c for c in contexts if c["name"] == context), active) if context else active
    namespace = (chosen or {}).get("context", {}).get("namespace") or "default"
    return api, str(namespace)


def _pod_namespace() -> str:
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip() or "default"
    except OSError:
        return "default"


class ClusterReader:
    """The few reads the command line needs, with errors a user can act on."""

    def __init__(self, api: client.ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    def studies(self, namespace: str | None) -> list[Mapping[str, Any]]:
        """Every study in `namespace` (None: all namespaces), by namespace and name."""
        try:
            if namespace is None:
                found = self.custom.list_cluster_custom_object(API_GROUP, API_VERSION, STUDIES)
            else:
                found = self.custom.list_namespaced_custom_object(
                    API_GROUP, API_VERSION, namespace, STUDIES
                )
        except ApiException as error:
            raise ReadError(_explain(error, "tuningstudies")) from None
        items: list[Mapping[str, Any]] = _as_dict(found)["items"]
        return sorted(items, key=lambda s: (s["metadata"]["namespace"], s["metadata"]["name"]))

    def study(self, namespace: str, name: str, *, events: bool = False) -> ClusterStudy:
        """One study with its TuningTrials (and, for describe, its Events)."""
        try:
            body = _as_dict(
                self.custom.get_namespaced_custom_object(
                    API_GROUP, API_VERSION, namespace, STUDIES, name
                )
            )
            trials = _as_dict(
                self.custom.list_namespaced_custom_object(
                    API_GROUP,
                    API_VERSION,
                    namespace,
                    TRIALS,
                    label_selector=f"{LABEL_STUDY}={name}",
                )
            )["items"]
            found = (
                self.core.list_namespaced_event(
                    namespace,
                    field_selector=f"involvedObject.kind=TuningStudy,involvedObject.name={name}",
                ).items
                if events
                else []
            )
        except ApiException as error:
            if error.status == 404:
                raise ReadError(
                    f'tuningstudy "{name}" not found in namespace {namespace}'
                ) from None
            raise ReadError(_explain(error, "tuningstudies")) from None
        phases = self._pod_phases(namespace, name) if events else {}
        return ClusterStudy(body=body, trials=trials, events=found, pod_phases=phases)

    def _pod_phases(self, namespace: str, name: str) -> dict[int, str]:
        """Each trial pod's phase; empty where the user may not list pods (describe
        then says less about waiting, and nothing fails)."""
        selector = f"{LABEL_STUDY}={name},{LABEL_ROLE}={ROLE_TRIAL}"
        try:
            pods = self.core.list_namespaced_pod(namespace, label_selector=selector).items
        except ApiException:
            return {}
        phases: dict[int, str] = {}
        for pod in pods:
            labels = (pod.metadata.labels if pod.metadata else None) or {}
            number = labels.get(LABEL_TRIAL, "")
            if not number.isdigit() or pod.status is None:
                continue
            # Any running pod means the trial runs (an Indexed Job has several).
            if phases.get(int(number)) != "Running":
                phases[int(number)] = str(pod.status.phase)
        return phases


def _as_dict(found: object) -> dict[str, Any]:
    """The custom-objects API returns plain JSON dicts; its stubs say `object`."""
    assert isinstance(found, dict)
    return found


def _explain(error: ApiException, what: str) -> str:
    if error.status == 404:
        return f"the API server does not know {what}: are Rheostat's CRDs installed?"
    return f"cannot read {what}: {api_message(error)}"


def age(created: datetime | None, now: float | None = None) -> str:
    """kubectl's AGE: the largest unit or two ("45s", "3m12s", "5h", "12d")."""
    if created is None:
        return "<unknown>"
    seconds = int((time.time() if now is None else now) - created.timestamp())
    seconds = max(seconds, 0)
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"
