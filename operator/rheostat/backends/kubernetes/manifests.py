"""Pure builders of every object the operator creates: no I/O, easy to test.

Names are deterministic (`<study>-t<number>`, `<study>-lr-range-test`), so creating
an object that already exists is how the operator learns it did that step before a
restart. Ownership chains study -> trial -> Job, so deleting a study removes
everything it made through the garbage collector.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from rheostat.backends.kubernetes.queueing import enqueue
from rheostat.contract import LR_RANGE_TEST_NUMBER, MODE_LR_RANGE_TEST, trial_env
from rheostat.engine import TrialRecord
from rheostat.spec import API_GROUP, GROUP_VERSION, Scalar, StudySpec

Manifest = dict[str, Any]

LABEL_STUDY = f"{API_GROUP}/study"
LABEL_TRIAL = f"{API_GROUP}/trial"
LABEL_ROLE = f"{API_GROUP}/role"
ROLE_TRIAL = "trial"
ROLE_LR_RANGE_TEST = "lr-range-test"


def trial_name(study: str, number: int) -> str:
    return f"{study}-t{number}"


def lr_test_name(study: str) -> str:
    return f"{study}-lr-range-test"


def owner_reference(owner: Mapping[str, Any]) -> Manifest:
    """An owner reference that makes `owner`'s deletion cascade to the child."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def labels(study: str, role: str, number: int | None = None) -> dict[str, str]:
    result = {LABEL_STUDY: study, LABEL_ROLE: role}
    if number is not None:
        result[LABEL_TRIAL] = str(number)
    return result


def trial_object(study: Mapping[str, Any], record: TrialRecord) -> Manifest:
    """The TuningTrial that records one trial: parameters in spec, progress in status."""
    name = study["metadata"]["name"]
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "TuningTrial",
        "metadata": {
            "name": trial_name(name, record.number),
            "namespace": study["metadata"]["namespace"],
            "labels": labels(name, ROLE_TRIAL, record.number),
            "ownerReferences": [owner_reference(study)],
        },
        "spec": {"study": name, "number": record.number, "params": dict(record.params)},
        "status": trial_status(record),
    }


def trial_status(record: TrialRecord) -> Manifest:
    """A TuningTrial's status: enough to rebuild the Optuna trial after a restart."""
    status: Manifest = {
        "state": record.state.capitalize(),
        "kind": record.kind,
        "attempt": record.attempt,
        # Keys are strings in JSON; at most one entry per reported step.
        "intermediate": {str(k): v for k, v in sorted(record.intermediate.items())[-200:]},
    }
    if record.value is not None:
        status["value"] = record.value
        # For `kubectl get`'s VALUE column; `value` stays exact.
        status["display"] = {"value": f"{record.value:.4g}"}
    if record.values is not None:
        # Several objectives, in the spec's order; `value` is the first of them.
        status["values"] = list(record.values)
        status["display"] = {"value": " / ".join(f"{v:.4g}" for v in record.values)}
    if record.reason:
        status["reason"] = record.reason
    if record.started_at:
        status["startedAt"] = record.started_at
    if record.last_step is not None:  # how far it ran, which reads may have missed
        status["lastStep"] = record.last_step
    return status


def record_from_trial(trial: Mapping[str, Any]) -> TrialRecord:
    """Read a TuningTrial back into the engine's record."""
    status = trial.get("status") or {}
    state = str(status.get("state", "Running")).lower()
    return TrialRecord(
        number=int(trial["spec"]["number"]),
        params=dict(trial["spec"]["params"]),
        state=state if state in {"running", "complete", "pruned", "failed"} else "running",  # type: ignore[arg-type]
        kind=str(status.get("kind", "counted")),
        value=status.get("value"),
        values=tuple(float(v) for v in status["values"]) if status.get("values") else None,
        reason=status.get("reason"),
        attempt=int(status.get("attempt", 1)),
        intermediate={int(k): float(v) for k, v in (status.get("intermediate") or {}).items()},
        started_at=float(status.get("startedAt", 0.0)),
        last_step=int(status["lastStep"]) if status.get("lastStep") is not None else None,
    )


def _pod_template(
    study: Mapping[str, Any],
    spec: StudySpec,
    env: Mapping[str, str],
    pod_labels: Mapping[str, str],
) -> Manifest:
    template: Manifest = copy.deepcopy(dict(study["spec"]["trialTemplate"]))
    template.pop("replicas", None)  # the Job's business (distributed.py), not the pod's
    metadata = template.setdefault("metadata", {})
    metadata["labels"] = {**metadata.get("labels", {}), **pod_labels}
    metadata["annotations"] = {
        **metadata.get("annotations", {}),
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(spec.metrics.port),
        "prometheus.io/path": "/metrics",
    }
    pod = template["spec"]
    pod.setdefault("restartPolicy", "Never")
    for container in pod["containers"]:
        _quantities_as_strings(container)
    trainer = pod["containers"][0]
    # The user's command and args are never touched: parameters travel as env vars.
    extra: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in env.items()]
    extra.append({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    known = {e["name"] for e in extra}
    trainer["env"] = [e for e in trainer.get("env", []) if e["name"] not in known] + extra
    ports = trainer.setdefault("ports", [])
    if not any(p.get("containerPort") == spec.metrics.port for p in ports):
        ports.append({"name": "metrics", "containerPort": spec.metrics.port})
    return template


def _quantities_as_strings(container: dict[str, Any]) -> None:
    """YAML lets users write `nvidia.com/gpu: 1`; the API's Quantity type is a string."""
    resources = container.get("resources") or {}
    for block in ("limits", "requests"):
        if isinstance(resources.get(block), dict):
            resources[block] = {k: str(v) for k, v in resources[block].items()}


def _job(
    study: Mapping[str, Any],
    name: str,
    template: Manifest,
    *,
    owner: Mapping[str, Any],
    job_labels: Mapping[str, str],
    deadline: int | None,
) -> Manifest:
    job_spec: Manifest = {
        # Retries are the tuner's decision (training error vs. lost pod), not the Job's.
        "backoffLimit": 0,
        "template": template,
    }
    if deadline is not None:
        job_spec["activeDeadlineSeconds"] = deadline
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": study["metadata"]["namespace"],
            "labels": dict(job_labels),
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": job_spec,
    }


def trial_job(
    study: Mapping[str, Any],
    spec: StudySpec,
    trial: Mapping[str, Any],
    params: Mapping[str, Scalar],
    lr_schedule: tuple[float, float] | None = None,
) -> Manifest:
    """The batch/v1 Job that runs one trial, owned by its TuningTrial."""
    name = study["metadata"]["name"]
    number = int(trial["spec"]["number"])
    goals = [goal.metric for goal in spec.goals]
    env = trial_env(
        name, number, params, spec.metrics.port, objectives=goals, lr_schedule=lr_schedule
    )
    job_labels = labels(name, ROLE_TRIAL, number)
    template = _pod_template(study, spec, env, job_labels)
    timeout = spec.budget.trial_timeout
    # The engine times trials out itself; the deadline is the backstop if it cannot.
    deadline = timeout + 60 if timeout is not None else None
    job = _job(
        study,
        trial_name(name, number),
        template,
        owner=trial,
        job_labels=job_labels,
        deadline=deadline,
    )
    return enqueue(job, spec)


def lr_test_job(
    study: Mapping[str, Any],
    spec: StudySpec,
    params: Mapping[str, Scalar],
    sweep: tuple[str, float, float, int],
) -> Manifest:
    """The LR range test's Job: the trial template in lr-range-test mode."""
    name = study["metadata"]["name"]
    env = trial_env(
        name,
        LR_RANGE_TEST_NUMBER,
        params,
        spec.metrics.port,
        mode=MODE_LR_RANGE_TEST,
        lr_sweep=sweep,
    )
    job_labels = labels(name, ROLE_LR_RANGE_TEST)
    template = _pod_template(study, spec, env, job_labels)
    job = _job(
        study,
        lr_test_name(name),
        template,
        owner=study,
        job_labels=job_labels,
        deadline=spec.budget.trial_timeout,
    )
    return enqueue(job, spec)
