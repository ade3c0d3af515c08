"""Read a trial's Job and pod into what happened to it: pure functions over dicts.

The distinction that matters is whose fault a failure was. A non-zero exit is the
trainer's (counted against maxFailedTrials, never retried); an eviction, a lost node,
a deleted pod, or a pod that never got going (unschedulable, its image not pulled,
its config missing, refused by admission) is the cluster's (the same parameters are
retried, up to maxRetries). OOMKilled counts as the trainer's: retrying the same
parameters would run out of memory again.

The order of the checks is deliberate: *who* ended a pod (the node, a user deleting
it, the Job's deadline) is decided before *how* its container exited, because a
trainer that dies of the SIGTERM a deletion sends exits non-zero (or, if it catches
the signal and finishes early, zero) and would otherwise read as its own failure or
success.
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
# Container waiting reasons that do not clear by themselves soon: the pod will not
# start until someone fixes the image, the config or the registry.
STUCK_WAITING_REASONS = {
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
}
# How long a Job may show no pod before it is reported as stuck (FailedCreate). An idle
# Job controller creates pods within milliseconds, but a busy one is rate-limited by
# its client QPS: 50 studies at once on the test cluster kept Jobs podless for over
# 10 s, and each false alarm cost a TrialsStuck flip and an Events lookup. Capped at
# half the stuck timeout, so a short timeout still reports before it gives up.
NO_POD_GRACE_SECONDS = 30.0


@dataclass(frozen=True)
class Pending:
    """Not running yet; `reason`/`message` say why, when it is stuck rather than on its way."""

    reason: str | None = None
    message: str = ""


@dataclass(frozen=True)
class Running:
    pod_ip: str | None
    started_at: float


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
class Queued:
    """Suspended with no live pod: waiting for a queue (Kueue) to admit or re-admit it.

    A state, not a fault: it has no stuck timer. A Job suspended after it ran was
    preempted; its pods are deleted by the Job controller and never speak for it.
    """


@dataclass(frozen=True)
class Missing:
    """No Job: never created (a restart between two steps) or deleted by someone."""


JobState = Pending | Queued | Running | Succeeded | TrainingFailed | InfrastructureLost | Missing


def timestamp(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def trainer_status(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    """The trainer's container status: the template's first container, found by name.

    A kubelet sorts `containerStatuses` by container name, so the first status is
    the trainer's only by chance; a helper container next to it must not speak for it.
    """
    containers = (pod.get("spec") or {}).get("containers") or []
    name = containers[0].get("name") if containers else None
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == name:
            return dict(status)
    return {}


def _latest(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    if not pods:
        return None
    return max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")


def job_state(
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    now: float,
    stuck_timeout: float,
) -> JobState:
    """What a trial's Job and its newest pod say about the trial.

    `stuck_timeout` (the study's unschedulableTimeout) bounds how long a pod may stay
    stuck before the attempt counts as lost to the cluster.
    """
    if job is None:
        return Missing()
    job_conditions = _conditions(job)
    failed = job_conditions.get("Failed")
    job_failed = failed is not None and failed.get("status") == "True"
    if job_failed and failed is not None and failed.get("reason") == "DeadlineExceeded":
        # The Job controller deletes the pod itself: ask the Job, not the pod, why.
        return TrainingFailed(-1, "the Job's activeDeadlineSeconds ran out")
    if _queued(job, job_conditions, pods):
        return Queued()
    pods = current_pods(job, pods)
    pod = _latest(pods)
    if pod is not None:
        state = _pod_state(pod, now, stuck_timeout)
        if not isinstance(state, Pending) or not job_failed:
            return state
    complete = job_conditions.get("Complete") or job_conditions.get("SuccessCriteriaMet")
    if complete is not None and complete.get("status") == "True":
        return Succeeded("")
    if job_failed and failed is not None:
        return InfrastructureLost(
            f"the Job failed with no pod to show why ({failed.get('reason')})"
        )
    created = _started(job) or now
    if pod is None and now - created > min(NO_POD_GRACE_SECONDS, stuck_timeout / 2):
        return _stuck("FailedCreate", "the Job has created no pod", now - created, stuck_timeout)
    return Pending()


def waits_in_queue(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the Job is suspended (queued or preempted by Kueue) with no live pod:
    a state of the trial, whatever the pods of an earlier run are doing."""
    return _queued(job, _conditions(job), pods)


def _queued(
    job: Mapping[str, Any],
    conditions: Mapping[str, Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
) -> bool:
    """A suspended Job that has not ended and has no pod left running (pods of a
    preempted run are being deleted; their ending is not the trial's)."""
    if not (job.get("spec") or {}).get("suspend"):
        return False
    if any((conditions.get(kind) or {}).get("status") == "True" for kind in ("Complete", "Failed")):
        return False
    return not any(
        not p["metadata"].get("deletionTimestamp")
        and (p.get("status") or {}).get("phase") not in {"Succeeded", "Failed"}
        for p in pods
    )


def _started(job: Mapping[str, Any]) -> float | None:
    """When the Job's current run began: its creation, or its latest resume.

    The Job controller resets `status.startTime` when a suspended Job resumes.
    """
    created = timestamp(job["metadata"].get("creationTimestamp"))
    started = timestamp((job.get("status") or {}).get("startTime"))
    return max((t for t in (created, started) if t is not None), default=None)


def current_pods(
    job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The pods of the Job's current run, without those of a run that was preempted.

    A pod being deleted that was created before the Job's latest start belongs to a
    run Kueue suspended: it never speaks for the trial. Both conditions, because
    the Job controller may write `startTime` a sync after it created the pod (its
    first status write lost to a conflict), and a live pod of the current run must
    never be dropped for that.
    """
    started = timestamp((job.get("status") or {}).get("startTime"))
    if started is None:
        return list(pods)
    return [p for p in pods if not _of_an_earlier_run(p, started)]


def _of_an_earlier_run(pod: Mapping[str, Any], started: float) -> bool:
    created = timestamp(pod["metadata"].get("creationTimestamp"))
    deleted = pod["metadata"].get("deletionTimestamp")
    return bool(deleted) and created is not None and created < started


def _pod_state(pod: Mapping[str, Any], now: float, stuck_timeout: float) -> JobState:
    status = pod.get("status") or {}
    conditions = _conditions(pod)
    disruption = conditions.get("DisruptionTarget")
    if status.get("reason") in INFRA_POD_REASONS or (
        disruption is not None and disruption.get("status") == "True"
    ):
        detail = status.get("message") or (disruption or {}).get("message") or status.get("reason")
        return InfrastructureLost(f"pod {status.get('reason') or 'disrupted'}: {detail}")
    trainer = trainer_status(pod)
    state = trainer.get("state") or {}
    terminated = state.get("terminated")
    deleted = deletion_requested(pod)
    if deleted is not None and not _ended_before(terminated, deleted):
        return InfrastructureLost("the trial's pod was deleted while it ran")
    if isinstance(terminated, Mapping):
        code = int(terminated.get("exitCode", 1))
        message = str(terminated.get("message") or "")
        if code == 0:
            return Succeeded(message)
        reason = str(terminated.get("reason") or "Error")
        return TrainingFailed(code, f"{reason}: {message}".strip() if message else reason)
    running = state.get("running")
    if isinstance(running, Mapping):
        return Running(status.get("podIP"), timestamp(running.get("startedAt")) or now)
    return _waiting_state(pod, conditions, now, stuck_timeout)


def deletion_requested(pod: Mapping[str, Any]) -> float | None:
    """When the pod's deletion was asked for, or None if it was not.

    The API server sets `deletionTimestamp` to the end of the grace period (request
    time + `deletionGracePeriodSeconds`, 30 s by default), not to the request: a
    trainer killed by the SIGTERM a deletion sends ends before that deadline.
    """
    metadata = pod["metadata"]
    deadline = timestamp(metadata.get("deletionTimestamp"))
    if deadline is None:
        return None
    return deadline - float(metadata.get("deletionGracePeriodSeconds") or 0)


def _ended_before(terminated: Any, deleted: float) -> bool:
    """Whether the trainer had already exited when its pod was deleted.

    Container times have one-second resolution, so an exit in the same second as the
    deletion counts as caused by it: retrying costs a run, while counting a killed
    trainer as failed (or its early finish as complete) would be a lie.
    """
    if not isinstance(terminated, Mapping):
        return False
    finished = timestamp(terminated.get("finishedAt"))
    return finished is not None and finished < deleted


def _waiting_state(
    pod: Mapping[str, Any], conditions: Mapping[str, Mapping[str, Any]], now: float, limit: float
) -> JobState:
    status = pod.get("status") or {}
    scheduled = conditions.get("PodScheduled")
    if scheduled is not None and scheduled.get("status") == "False":
        message = str(scheduled.get("message") or scheduled.get("reason") or "unschedulable")
        since = timestamp(scheduled.get("lastTransitionTime")) or now
        return _stuck("Unschedulable", message, now - since, limit)
    for container in [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_WAITING_REASONS:
            since_scheduled = timestamp((scheduled or {}).get("lastTransitionTime"))
            since = since_scheduled or timestamp(pod["metadata"].get("creationTimestamp")) or now
            detail = f"container {container.get('name')}: {waiting.get('message') or ''}".strip()
            return _stuck(str(waiting["reason"]), detail.rstrip(":"), now - since, limit)
    return Pending()


def _stuck(reason: str, message: str, waited: float, limit: float) -> JobState:
    if waited > limit:
        what = "unschedulable" if reason == "Unschedulable" else f"stuck in {reason}"
        return InfrastructureLost(f"{what} for more than {limit:.0f}s: {message}")
    return Pending(reason, message)


def pod_state(pod: Mapping[str, Any], now: float, stuck_timeout: float) -> JobState:
    """One pod read as job_state reads a trial's newest pod (for the ranks of a trial)."""
    return _pod_state(pod, now, stuck_timeout)
