"""A multi-pod trial's state: the first pod to end decides, and index 0 speaks for it.

When one rank of a distributed job dies, the others die after it, of the SIGTERM the
Job controller sends or of a collective-communication error (exit 1, "connection
reset by peer"). Their endings are consequences, not causes: reading any of them as
the trial's outcome would count a rank evicted by the cluster as a training failure
(charged against maxFailedTrials, never retried) or the other way round. So the
endings of all ranks are put in time order and the first one decides:

- a disruption (eviction, node loss, preemption) at the time its condition was set;
- rank 0's success (its termination message carries the result);
- a trainer's own non-zero exit (OOMKilled included), at its finishedAt;
- a deletion while the trainer ran (a user, or the Job controller stopping the other
  ranks after the first failure), at the time it was asked for.

At the same second, that order breaks the tie: a consequence is never earlier than
its cause, and container times have one-second resolution. A rank other than 0
exiting 0 decides nothing (rank 0 may still be writing the result). A terminating pod
never speaks for the trial: not as running, not by its exit. One-pod trials keep
observe.job_state unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rheostat.backends.kubernetes.distributed import INDEX_ANNOTATION
from rheostat.backends.kubernetes.observe import (
    INFRA_POD_REASONS,
    InfrastructureLost,
    JobState,
    Pending,
    Queued,
    Running,
    Succeeded,
    TrainingFailed,
    current_pods,
    deletion_requested,
    job_state,
    pod_state,
    timestamp,
    trainer_status,
    waits_in_queue,
)

# Tie-break within one second: cause before consequence (module docstring).
_DISRUPTED, _RANK0_DONE, _EXITED, _DELETED = range(4)


@dataclass(frozen=True)
class _End:
    at: float
    order: int
    index: int
    state: JobState


def trial_state(
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    now: float,
    stuck_timeout: float,
) -> JobState:
    """observe.job_state for a trial of one pod or of many (an Indexed Job)."""
    if job is None or (job.get("spec") or {}).get("completionMode") != "Indexed":
        return job_state(job, pods, now, stuck_timeout)
    return indexed_job_state(job, pods, now, stuck_timeout)


def pod_index(pod: Mapping[str, Any]) -> int | None:
    """A pod's completion index (its rank among the trial's pods), from its annotation."""
    metadata = pod.get("metadata") or {}
    value = (metadata.get("annotations") or {}).get(INDEX_ANNOTATION) or (
        metadata.get("labels") or {}
    ).get(INDEX_ANNOTATION)
    return int(value) if value is not None and str(value).isdigit() else None


def indexed_job_state(
    job: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    now: float,
    stuck_timeout: float,
) -> JobState:
    """What an Indexed Job's pods say about the trial they run together."""
    conditions = {c["type"]: c for c in (job.get("status") or {}).get("conditions") or []}
    failed = conditions.get("Failed") or {}
    if failed.get("status") == "True" and failed.get("reason") == "DeadlineExceeded":
        return job_state(job, [], now, stuck_timeout)  # the Job's deadline, as for one pod
    if waits_in_queue(job, pods):
        return Queued()  # queued, or preempted by Kueue: its ranks' deaths are not the trial's
    pods = current_pods(job, pods)  # a resumed Job: the preempted run's ranks never speak
    ends = sorted(
        (end for pod in pods if (end := _end(pod, now, stuck_timeout)) is not None),
        key=lambda e: (e.at, e.order, e.index),
    )
    for end in ends:
        if isinstance(end.state, Succeeded) and end.index != 0:
            continue  # only rank 0's success is the trial's
        return end.state
    speaking = [p for p in pods if deletion_requested(p) is None]
    for pod in speaking:
        state = pod_state(pod, now, stuck_timeout)
        if isinstance(state, Pending) and state.reason:
            return _ranked(state, pod_index(pod))  # one rank that cannot start holds all
    rank0 = [p for p in speaking if pod_index(p) == 0]
    if rank0:
        state = pod_state(rank0[0], now, stuck_timeout)
        if isinstance(state, Running):
            return state
    if not pods or any(
        c.get("status") == "True" for c in (failed, conditions.get("Complete") or {})
    ):
        return job_state(job, [], now, stuck_timeout)
    return Pending()


def _end(pod: Mapping[str, Any], now: float, stuck_timeout: float) -> _End | None:
    """How and when one rank ended, or None while it has not (running or waiting)."""
    state = pod_state(pod, now, stuck_timeout)
    if isinstance(state, Running | Pending):
        return None
    index = pod_index(pod)
    terminated = (trainer_status(pod).get("state") or {}).get("terminated") or {}
    finished = timestamp(terminated.get("finishedAt"))
    if isinstance(state, InfrastructureLost):
        status = pod.get("status") or {}
        disruption = next(
            (
                c
                for c in status.get("conditions") or []
                if c.get("type") == "DisruptionTarget" and c.get("status") == "True"
            ),
            None,
        )
        if disruption is not None or status.get("reason") in INFRA_POD_REASONS:
            at = timestamp((disruption or {}).get("lastTransitionTime")) or finished or now
            return _End(at, _DISRUPTED, _rank(index), _ranked(state, index))
        deleted = deletion_requested(pod)
        return _End(deleted or now, _DELETED, _rank(index), _ranked(state, index))
    order = _RANK0_DONE if isinstance(state, Succeeded) else _EXITED
    return _End(finished or now, order, _rank(index), _ranked(state, index))


def _rank(index: int | None) -> int:
    return index if index is not None else -1


def _ranked(state: JobState, index: int | None) -> JobState:
    """The state with the rank it came from in its message (rank 0's result unchanged)."""
    who = f"rank {index}" if index is not None else "a pod without an index"
    if isinstance(state, TrainingFailed):
        return TrainingFailed(state.exit_code, f"{who}: {state.message}")
    if isinstance(state, InfrastructureLost):
        return InfrastructureLost(f"{who}: {state.reason}")
    if isinstance(state, Pending) and state.reason:
        return Pending(state.reason, f"{who}: {state.message}")
    return state
