"""Kueue, read and written as plain dicts: which queue a Job joins, and why it waits.

On a shared cluster Kueue admits Jobs against quota: a Job labelled with a LocalQueue
is created suspended and Kueue unsuspends it when its ClusterQueue has room, or
suspends it again to preempt it for higher-priority work. Kueue may also take a Job
we did not label (a namespace LocalQueue named `default`, or the cluster's
`manageJobsWithoutQueueName`), so waiting is read from the Job (`spec.suspend`), never
assumed from the spec. Why a Job waits is on its Workload (Kueue's own object, found
by the Job's uid), which this module reads; the operator needs only `get`/`list` on
`workloads.kueue.x-k8s.io` and works without the CRD (no reason is then shown).
Pure: no I/O; the one lookup is `Kube.workload_of_job`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rheostat.spec import StudySpec

LABEL_QUEUE = "kueue.x-k8s.io/queue-name"
LABEL_PRIORITY = "kueue.x-k8s.io/priority-class"
LABEL_JOB_UID = "kueue.x-k8s.io/job-uid"
WORKLOADS = ("kueue.x-k8s.io", "v1beta2", "workloads")
# Install-wide defaults (chart values kueue.defaultQueue / kueue.defaultPriorityClass).
ENV_DEFAULT_QUEUE = "RHEOSTAT_DEFAULT_QUEUE"
ENV_DEFAULT_PRIORITY = "RHEOSTAT_DEFAULT_PRIORITY_CLASS"


def queue_name(spec: StudySpec) -> str | None:
    """The LocalQueue the study's Jobs join: its own, else the operator's default."""
    return spec.queue or os.environ.get(ENV_DEFAULT_QUEUE) or None


def priority_class(spec: StudySpec) -> str | None:
    return spec.priority_class or os.environ.get(ENV_DEFAULT_PRIORITY) or None


def enqueue(job: dict[str, Any], spec: StudySpec) -> dict[str, Any]:
    """Label `job` for its queue and priority; with a queue, create it suspended.

    Suspended from the start so that no pod runs before Kueue admits it (Kueue's
    webhook would suspend it too, but the operator works without the webhook).
    """
    metadata_labels = job["metadata"].setdefault("labels", {})
    queue = queue_name(spec)
    if queue is not None:
        metadata_labels[LABEL_QUEUE] = queue
        job["spec"]["suspend"] = True
    priority = priority_class(spec)
    if priority is not None:
        metadata_labels[LABEL_PRIORITY] = priority
    return job


@dataclass(frozen=True)
class Wait:
    """Why a suspended Job waits, from its Workload.

    `hopeless` when Kueue cannot admit it as things are (Inadmissible: no such
    LocalQueue or ClusterQueue, or deactivated): it would stay suspended forever
    (kueue#4471), so the wait is bounded by budget.queueTimeout from `since`.
    """

    reason: str
    message: str
    hopeless: bool = False
    since: float | None = None


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def wait_of(workload: Mapping[str, Any] | None, timestamp: Any) -> Wait:
    """What a queued Job's Workload says; `timestamp` parses RFC 3339 (observe's)."""
    if workload is None:
        return Wait("WaitingForQuota", "suspended, waiting to be admitted")
    conditions = _conditions(workload)
    reserved = conditions.get("QuotaReserved") or {}
    evicted = conditions.get("Evicted") or {}
    if (workload.get("spec") or {}).get("active") is False:
        message = str(evicted.get("message") or "the Workload is deactivated (spec.active=false)")
        since = timestamp(evicted.get("lastTransitionTime"))
        return Wait("Deactivated", message, hopeless=True, since=since)
    message = str(reserved.get("message") or "waiting to be admitted")
    if reserved.get("reason") == "Inadmissible":
        since = timestamp(reserved.get("lastTransitionTime"))
        return Wait("Inadmissible", message, hopeless=True, since=since)
    if evicted.get("status") == "True" and reserved.get("status") != "False":
        return Wait(str(evicted.get("reason") or "Evicted"), str(evicted.get("message") or ""))
    return Wait("WaitingForQuota", message)
