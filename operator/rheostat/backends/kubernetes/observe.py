"""Read a trial's Job and pod into what happened to it: pure functions over dicts.

The distinction that matters is whose fault a failure was. A non-zero exit is the
trainer's (counted against maxFailedTrials, never retried); an eviction, a lost node,
a pod that vanished or stayed unschedulable is the cluster's (the same parameters are
retried, up to maxRetries). OOMKilled counts as the trainer's: retrying the same
parameters would run out of memory again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

INFRA_POD_REASONS = {
    "Evicted",
    "NodeLost",
    "NodeShutdown",
    "Terminated",
    "UnexpectedAdmissionError",
}


@dataclass(frozen=True)
class Pending:
    """Not running yet; `unschedulable` carries the scheduler's reason, if any."""

    unschedulable: str | None = None


@dataclass(frozen=True)
class Running:
    pod_ip: str | None


@dataclass(frozen=True)
class Succeeded:
    termination_message: str


@dataclass(frozen=True)
class TrainingFailed:
    exit_code: int
    message: str


@dataclass(frozen=True)
class InfrastructureLost:
    reason: str


@dataclass(frozen=True)
class Missing:
    """No Job: never created (a restart between two steps) or deleted by someone."""


JobState = Pending | Running | Succeeded | TrainingFailed | InfrastructureLost | Missing


def timestamp(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def _terminated(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    if not statuses:
        return None
    state = statuses[0].get("state") or {}
    terminated = state.get("terminated")
    return terminated if isinstance(terminated, Mapping) else None


def _latest(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    if not pods:
        return None
    return max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")


def job_state(
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    now: float,
    unschedulable_timeout: float,
) -> JobState:
    """What a trial's Job and its newest pod say about the trial."""
    if job is None:
        return Missing()
    pod = _latest(pods)
    job_conditions = _conditions(job)
    if pod is not None:
        state = _pod_state(pod, now, unschedulable_timeout)
        if not isinstance(state, Pending) or "Failed" not in job_conditions:
            return state
    complete = job_conditions.get("Complete") or job_conditions.get("SuccessCriteriaMet")
    if complete is not None and complete.get("status") == "True":
        return Succeeded("")
    failed = job_conditions.get("Failed")
    if failed is not None and failed.get("status") == "True":
        if failed.get("reason") == "DeadlineExceeded":
            return TrainingFailed(-1, "the Job's activeDeadlineSeconds ran out")
        return InfrastructureLost(
            f"the Job failed with no pod to show why ({failed.get('reason')})"
        )
    return Pending()


def _pod_state(pod: Mapping[str, Any], now: float, unschedulable_timeout: float) -> JobState:
    status = pod.get("status") or {}
    conditions = _conditions(pod)
    disruption = conditions.get("DisruptionTarget")
    if status.get("reason") in INFRA_POD_REASONS or (
        disruption is not None and disruption.get("status") == "True"
    ):
        detail = status.get("message") or (disruption or {}).get("message") or status.get("reason")
        return InfrastructureLost(f"pod {status.get('reason') or 'disrupted'}: {detail}")
    terminated = _terminated(pod)
    if terminated is not None:
        code = int(terminated.get("exitCode", 1))
        message = str(terminated.get("message") or "")
        if code == 0:
            return Succeeded(message)
        reason = str(terminated.get("reason") or "Error")
        return TrainingFailed(code, f"{reason}: {message}".strip() if message else reason)
    if pod["metadata"].get("deletionTimestamp"):
        return InfrastructureLost("the trial's pod was deleted while it ran")
    if status.get("phase") == "Running":
        return Running(status.get("podIP"))
    scheduled = conditions.get("PodScheduled")
    if scheduled is not None and scheduled.get("status") == "False":
        message = str(scheduled.get("message") or scheduled.get("reason") or "unschedulable")
        since = timestamp(scheduled.get("lastTransitionTime")) or now
        if now - since > unschedulable_timeout:
            return InfrastructureLost(
                f"unschedulable for more than {unschedulable_timeout:.0f}s: {message}"
            )
        return Pending(unschedulable=message)
    return Pending()
