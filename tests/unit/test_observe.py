"""The Job/pod classifier, case by case: who ended a trial decides before how it exited."""

from __future__ import annotations

import time
from typing import Any

import pytest

from rheostat.backends.kubernetes.observe import (
    InfrastructureLost,
    JobState,
    Missing,
    Pending,
    Queued,
    Running,
    Succeeded,
    TrainingFailed,
    job_state,
    timestamp,
)
from rheostat.backends.kubernetes.observe_ranks import trial_state

NOW = timestamp("2026-01-01T00:10:00Z") or 0.0
TIMEOUT = 60.0


def job(conditions: list[dict[str, str]] | None = None, created: str = "2026-01-01T00:00:00Z"):  # type: ignore[no-untyped-def]
    return {
        "metadata": {"name": "s-t0", "creationTimestamp": created},
        "status": {"conditions": conditions or []},
    }


def container(name: str, state: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "state": state}


def terminated(code: int, finished: str = "2026-01-01T00:05:00Z", **extra: Any) -> dict[str, Any]:
    return {"terminated": {"exitCode": code, "finishedAt": finished, **extra}}


RUNNING = {"running": {"startedAt": "2026-01-01T00:01:00Z"}}


def pod(
    *statuses: dict[str, Any],
    containers: tuple[str, ...] = ("trainer",),
    deleted: str | None = None,
    conditions: list[dict[str, Any]] | None = None,
    **status: Any,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "s-t0-abcde", "creationTimestamp": "2026-01-01T00:00:01Z"}
    if deleted:
        metadata["deletionTimestamp"] = deleted
    return {
        "metadata": metadata,
        "spec": {"containers": [{"name": n} for n in containers]},
        "status": {
            "podIP": "10.0.0.7",
            "conditions": conditions or [],
            "containerStatuses": list(statuses),
            **status,
        },
    }


def state_of(*pods: dict[str, Any], of_job: dict[str, Any] | None = None) -> JobState:
    return job_state(of_job or job(), list(pods), NOW, TIMEOUT)


def test_no_job_is_missing() -> None:
    assert job_state(None, [], NOW, TIMEOUT) == Missing()


def test_a_running_trainer_reports_when_it_started() -> None:
    assert state_of(pod(container("trainer", RUNNING))) == Running(
        "10.0.0.7", timestamp("2026-01-01T00:01:00Z") or 0.0
    )


def test_a_pod_deleted_while_the_trainer_ran_is_lost_even_if_the_exit_shows_first() -> None:
    """The race that failed CI: SIGTERM's exit 143 is visible before the pod is gone."""
    deleted = pod(
        container("trainer", terminated(143, finished="2026-01-01T00:05:01Z")),
        deleted="2026-01-01T00:05:00Z",
    )
    assert isinstance(state_of(deleted), InfrastructureLost)


def test_a_trainer_that_catches_sigterm_and_finishes_is_not_a_success() -> None:
    graceful = pod(
        container("trainer", terminated(0, finished="2026-01-01T00:05:02Z")),
        deleted="2026-01-01T00:05:00Z",
    )
    assert isinstance(state_of(graceful), InfrastructureLost)


def test_a_pod_deleted_after_its_trainer_had_finished_keeps_the_result() -> None:
    done = pod(
        container("trainer", terminated(0, finished="2026-01-01T00:04:00Z", message='{"a":1}')),
        deleted="2026-01-01T00:05:00Z",
    )
    assert state_of(done) == Succeeded('{"a":1}')


def test_a_deleted_pod_still_running_is_lost() -> None:
    assert isinstance(
        state_of(pod(container("trainer", RUNNING), deleted="2026-01-01T00:05:00Z")),
        InfrastructureLost,
    )


def test_the_jobs_deadline_wins_over_the_pod_it_deleted() -> None:
    deadline = job([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}])
    killed = pod(container("trainer", terminated(143)), deleted="2026-01-01T00:05:00Z")
    assert state_of(killed, of_job=deadline) == TrainingFailed(
        -1, "the Job's activeDeadlineSeconds ran out"
    )


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        # A helper exiting 0 next to a running trainer: still running.
        ([container("aux-log-shipper", terminated(0)), container("trainer", RUNNING)], Running),
        # A crashed trainer next to a running helper: failed.
        (
            [container("aux-log-shipper", RUNNING), container("trainer", terminated(1))],
            TrainingFailed,
        ),
    ],
)
def test_the_trainer_is_found_by_name_not_by_position(
    statuses: list[dict[str, Any]], expected: type
) -> None:
    # A kubelet sorts statuses by name; the trainer is the template's first container.
    two = pod(*statuses, containers=("trainer", "aux-log-shipper"))
    assert isinstance(state_of(two), expected)


def test_oom_is_the_trainers_failure() -> None:
    oom = pod(container("trainer", terminated(137, reason="OOMKilled")))
    assert state_of(oom) == TrainingFailed(137, "OOMKilled")


def test_eviction_is_the_clusters() -> None:
    evicted = pod(container("trainer", terminated(137)), reason="Evicted", message="low memory")
    assert isinstance(state_of(evicted), InfrastructureLost)


def test_a_disruption_target_is_the_clusters() -> None:
    condition = {"type": "DisruptionTarget", "status": "True", "message": "preempted"}
    preempted = pod(container("trainer", terminated(143)), conditions=[condition])
    assert isinstance(state_of(preempted), InfrastructureLost)


def _waiting(reason: str) -> dict[str, Any]:
    return container("trainer", {"waiting": {"reason": reason, "message": "details"}})


def _scheduled(at: str) -> list[dict[str, Any]]:
    return [{"type": "PodScheduled", "status": "True", "lastTransitionTime": at}]


@pytest.mark.parametrize(
    "reason", ["ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError", "InvalidImageName"]
)
def test_a_pod_that_cannot_start_is_reported_then_lost(reason: str) -> None:
    recent = pod(_waiting(reason), conditions=_scheduled("2026-01-01T00:09:30Z"))
    assert state_of(recent) == Pending(reason, "container trainer: details")
    old = pod(_waiting(reason), conditions=_scheduled("2026-01-01T00:08:00Z"))
    lost = state_of(old)
    assert isinstance(lost, InfrastructureLost)
    assert f"stuck in {reason} for more than 60s" in lost.reason


def test_an_ordinary_wait_is_plain_pending() -> None:
    creating = pod(_waiting("ContainerCreating"), conditions=_scheduled("2026-01-01T00:00:02Z"))
    assert state_of(creating) == Pending()


def test_an_unschedulable_pod_is_reported_then_lost() -> None:
    def unschedulable(since: str) -> dict[str, Any]:
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/3 nodes have a free nvidia.com/gpu",
            "lastTransitionTime": since,
        }
        return pod(conditions=[condition])

    assert state_of(unschedulable("2026-01-01T00:09:30Z")) == Pending(
        "Unschedulable", "0/3 nodes have a free nvidia.com/gpu"
    )
    lost = state_of(unschedulable("2026-01-01T00:08:00Z"))
    assert isinstance(lost, InfrastructureLost)
    assert "unschedulable for more than 60s" in lost.reason


def test_a_job_whose_pods_the_api_refuses_is_reported_then_lost() -> None:
    fresh = job(created="2026-01-01T00:09:55Z")
    assert job_state(fresh, [], NOW, TIMEOUT) == Pending()  # the controller is on its way
    # A busy Job controller is rate-limited: no alarm within half the stuck timeout.
    slow = job(created="2026-01-01T00:09:35Z")
    assert job_state(slow, [], NOW, TIMEOUT) == Pending()
    refused = job(created="2026-01-01T00:09:20Z")
    assert job_state(refused, [], NOW, TIMEOUT) == Pending(
        "FailedCreate", "the Job has created no pod"
    )
    assert isinstance(job_state(job(), [], NOW, TIMEOUT), InfrastructureLost)


def test_a_failed_job_with_no_pod_left_is_the_clusters() -> None:
    gone = job([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}])
    assert isinstance(job_state(gone, [], NOW, TIMEOUT), InfrastructureLost)


# ----- Kueue: a suspended Job waits for a queue; a resumed one forgets its old pods -------


def suspended(**status: Any) -> dict[str, Any]:
    queued = job()
    queued["spec"] = {"suspend": True}
    queued["status"].update(status)
    return queued


def test_a_suspended_job_with_no_pod_is_queued_with_no_stuck_timer() -> None:
    """Long past the no-pod grace and the stuck timeout: waiting for quota is no fault."""
    assert state_of(of_job=suspended()) == Queued()


def test_a_job_suspended_while_its_pod_terminates_is_queued_not_lost() -> None:
    """Kueue's preemption: the Job controller deletes the pod; its death is not the trial's."""
    preempted = pod(container("trainer", terminated(0)), deleted="2026-01-01T00:04:59Z")
    assert state_of(preempted, of_job=suspended()) == Queued()
    killed = pod(container("trainer", terminated(143)), deleted="2026-01-01T00:05:30Z")
    assert state_of(killed, of_job=suspended()) == Queued()


def test_a_suspended_job_whose_pod_still_runs_is_read_from_its_pod() -> None:
    """Suspension seen before the pod's deletion: the pod still speaks until it goes."""
    assert isinstance(state_of(pod(container("trainer", RUNNING)), of_job=suspended()), Running)


def test_a_suspended_job_that_had_completed_is_complete() -> None:
    done = suspended(conditions=[{"type": "Complete", "status": "True"}])
    assert state_of(of_job=done) == Succeeded("")


def test_pods_created_before_a_resume_never_speak_for_the_trial() -> None:
    """After Kueue re-admits it, the Job's startTime is the resume: older pods are gone runs."""
    resumed = job()
    resumed["status"]["startTime"] = "2026-01-01T00:09:50Z"
    old = pod(container("trainer", terminated(143)), deleted="2026-01-01T00:05:00Z")
    assert state_of(old, of_job=resumed) == Pending()
    new = pod(container("trainer", {"running": {"startedAt": "2026-01-01T00:09:55Z"}}))
    new["metadata"]["creationTimestamp"] = "2026-01-01T00:09:51Z"
    assert state_of(old, new, of_job=resumed) == Running(
        "10.0.0.7", timestamp("2026-01-01T00:09:55Z") or 0.0
    )


def test_a_live_pod_older_than_a_late_written_start_time_still_speaks() -> None:
    """The Job controller may write startTime a sync after it created the pod."""
    late = job()
    late["status"]["startTime"] = "2026-01-01T00:00:05Z"
    done = pod(container("trainer", terminated(0, message='{"metrics": {"loss": 1}}')))
    assert state_of(done, of_job=late) == Succeeded('{"metrics": {"loss": 1}}')


def test_the_no_pod_grace_counts_from_the_latest_resume_not_the_creation() -> None:
    resumed = job()  # created ten minutes ago, waited in the queue, resumed 5 s ago
    resumed["status"]["startTime"] = "2026-01-01T00:09:55Z"
    assert state_of(of_job=resumed) == Pending()
    assert isinstance(state_of(of_job=job()), InfrastructureLost)  # no resume: stuck too long


def test_a_sigterm_exit_inside_the_deletion_grace_is_still_the_deletions() -> None:
    """deletionTimestamp is the end of the grace period, not the moment of the request."""
    killed = pod(
        container("trainer", terminated(143, finished="2026-01-01T00:05:02Z")),
        deleted="2026-01-01T00:05:30Z",
    )
    killed["metadata"]["deletionGracePeriodSeconds"] = 30
    assert isinstance(state_of(killed), InfrastructureLost)


# ----- trials of several pods (an Indexed Job): the first pod to end decides ------------


def indexed_job(conditions: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {**job(conditions), "spec": {"completionMode": "Indexed", "completions": 3}}


def rank(index: int, *statuses: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Pod `index` of the trial's Indexed Job, as the Job controller names and annotates it."""
    made = pod(*statuses, **kwargs)
    made["metadata"]["name"] = f"s-t0-{index}-abcde"
    made["metadata"]["annotations"] = {"batch.kubernetes.io/job-completion-index": str(index)}
    made["status"]["podIP"] = f"10.0.0.{10 + index}"
    return made


def job_controller_deleted(made: dict[str, Any], at: str) -> dict[str, Any]:
    """A rank the Job controller is stopping: deleted at `at` with the default 30 s grace."""
    deadline = (timestamp(at) or 0.0) + 30
    made["metadata"]["deletionTimestamp"] = time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(deadline)
    )
    made["metadata"]["deletionGracePeriodSeconds"] = 30
    return made


def ranks_state(*pods: dict[str, Any], of_job: dict[str, Any] | None = None) -> JobState:
    return trial_state(of_job or indexed_job(), list(pods), NOW, TIMEOUT)


def test_all_ranks_running_is_rank_zeros_running() -> None:
    later = {"running": {"startedAt": "2026-01-01T00:02:00Z"}}
    state = ranks_state(
        rank(1, container("trainer", later)),
        rank(0, container("trainer", RUNNING)),
        rank(2, container("trainer", RUNNING)),
    )
    # Metrics are scraped from rank 0's IP.
    assert state == Running("10.0.0.10", timestamp("2026-01-01T00:01:00Z") or 0.0)


def test_rank_zero_succeeds_while_the_others_are_terminating() -> None:
    """The successPolicy ends the Job at rank 0's success; the others die of SIGTERM."""
    result = '{"metrics": {"accuracy": 0.9}}'
    complete = indexed_job([{"type": "SuccessCriteriaMet", "status": "True"}])
    state = ranks_state(
        rank(0, container("trainer", terminated(0, "2026-01-01T00:05:00Z", message=result))),
        job_controller_deleted(
            rank(1, container("trainer", terminated(143, "2026-01-01T00:05:02Z"))),
            "2026-01-01T00:05:01Z",
        ),
        job_controller_deleted(rank(2, container("trainer", RUNNING)), "2026-01-01T00:05:01Z"),
        of_job=complete,
    )
    assert state == Succeeded(result)


def test_a_rank_other_than_zero_exiting_zero_decides_nothing() -> None:
    state = ranks_state(
        rank(1, container("trainer", terminated(0, "2026-01-01T00:05:00Z"))),
        rank(0, container("trainer", RUNNING)),
    )
    assert isinstance(state, Running)


def test_rank_one_oomkilled_first_is_a_training_failure_not_the_others_errors() -> None:
    """Rank 0 then dies of a gloo error and rank 2 of the Job controller's SIGTERM."""
    failed = indexed_job([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}])
    state = ranks_state(
        rank(0, container("trainer", terminated(1, "2026-01-01T00:05:01Z", reason="Error"))),
        rank(1, container("trainer", terminated(137, "2026-01-01T00:05:00Z", reason="OOMKilled"))),
        job_controller_deleted(
            rank(2, container("trainer", terminated(143, "2026-01-01T00:05:03Z"))),
            "2026-01-01T00:05:02Z",
        ),
        of_job=failed,
    )
    assert state == TrainingFailed(137, "rank 1: OOMKilled")


def test_a_rank_evicted_first_is_the_clusters_though_the_others_exit_non_zero() -> None:
    """The others' non-zero exits are consequences: the trial is retried, not charged."""
    evicted = rank(
        2,
        container("trainer", terminated(137, "2026-01-01T00:05:01Z")),
        reason="Evicted",
        message="The node was low on resource: memory.",
        conditions=[
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "TerminationByKubelet",
                "lastTransitionTime": "2026-01-01T00:05:00Z",
            }
        ],
    )
    # Rank 0's collective error lands in the same second as the eviction: still second.
    state = ranks_state(
        rank(0, container("trainer", terminated(1, "2026-01-01T00:05:00Z"))),
        rank(1, container("trainer", terminated(1, "2026-01-01T00:05:02Z"))),
        evicted,
    )
    assert isinstance(state, InfrastructureLost)
    assert state.reason.startswith("rank 2: pod Evicted"), state


def test_all_ranks_deleted_is_the_clusters_whatever_their_exits() -> None:
    """`kubectl delete pods -l ...`: every rank terminating; none speaks for the trial."""
    state = ranks_state(
        job_controller_deleted(
            rank(0, container("trainer", terminated(0, "2026-01-01T00:05:02Z"))),
            "2026-01-01T00:05:00Z",
        ),
        job_controller_deleted(
            rank(1, container("trainer", terminated(143, "2026-01-01T00:05:01Z"))),
            "2026-01-01T00:05:00Z",
        ),
        job_controller_deleted(rank(2, container("trainer", RUNNING)), "2026-01-01T00:05:00Z"),
    )
    assert isinstance(state, InfrastructureLost)
    assert "deleted while it ran" in state.reason


def test_a_multi_pod_trial_preempted_by_kueue_is_queued_not_lost() -> None:
    """Kueue suspends the Indexed Job and the Job controller deletes every rank: the
    trial waits to resume in place; none of the ranks' deaths speaks for it."""
    preempted = indexed_job()
    preempted["spec"]["suspend"] = True
    state = ranks_state(
        job_controller_deleted(
            rank(0, container("trainer", terminated(143, "2026-01-01T00:05:01Z"))),
            "2026-01-01T00:05:00Z",
        ),
        job_controller_deleted(rank(1, container("trainer", RUNNING)), "2026-01-01T00:05:00Z"),
        of_job=preempted,
    )
    assert state == Queued()


def test_a_resumed_multi_pod_trial_forgets_the_preempted_runs_ranks() -> None:
    resumed = indexed_job()
    resumed["status"]["startTime"] = "2026-01-01T00:09:50Z"  # re-admitted after a preemption
    old = job_controller_deleted(
        rank(1, container("trainer", terminated(143, "2026-01-01T00:05:01Z"))),
        "2026-01-01T00:05:00Z",
    )
    new = rank(0, container("trainer", {"running": {"startedAt": "2026-01-01T00:09:55Z"}}))
    new["metadata"]["creationTimestamp"] = "2026-01-01T00:09:51Z"
    assert isinstance(ranks_state(old, new, of_job=resumed), Running)


def test_a_terminating_rank_zero_is_not_running() -> None:
    state = ranks_state(
        job_controller_deleted(rank(0, container("trainer", RUNNING)), "2026-01-01T00:09:59Z"),
        rank(1, container("trainer", RUNNING)),
    )
    assert isinstance(state, InfrastructureLost)


def test_one_rank_that_cannot_start_holds_the_trial_then_loses_it() -> None:
    stuck = {"waiting": {"reason": "ImagePullBackOff", "message": "details"}}
    recent = rank(1, container("trainer", stuck), conditions=_scheduled("2026-01-01T00:09:30Z"))
    zero = rank(0, container("trainer", RUNNING))
    assert ranks_state(zero, recent) == Pending(
        "ImagePullBackOff", "rank 1: container trainer: details"
    )
    old = rank(1, container("trainer", stuck), conditions=_scheduled("2026-01-01T00:08:00Z"))
    lost = ranks_state(zero, old)
    assert isinstance(lost, InfrastructureLost)
    assert lost.reason.startswith("rank 1: stuck in ImagePullBackOff"), lost


def test_an_indexed_job_past_its_deadline_is_the_trainers_as_for_one_pod() -> None:
    deadline = indexed_job([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}])
    killed = job_controller_deleted(
        rank(0, container("trainer", terminated(143))), "2026-01-01T00:05:00Z"
    )
    assert ranks_state(killed, of_job=deadline) == TrainingFailed(
        -1, "the Job's activeDeadlineSeconds ran out"
    )


def test_an_indexed_job_with_no_pods_yet_waits_then_reports_as_for_one_pod() -> None:
    assert ranks_state() == job_state(job(), [], NOW, TIMEOUT)
    assert isinstance(ranks_state(), InfrastructureLost)  # created ten minutes ago
