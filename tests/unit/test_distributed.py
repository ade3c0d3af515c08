"""Multi-pod trials: the Indexed Job and headless Service a pass creates, and what they say.

The reconcile runs for real over the in-memory API server (fake_kube), so the
Kubernetes client serialises the Service and the Job as it would for a cluster.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from rheostat.backends.kubernetes import distributed
from rheostat.backends.kubernetes import manifests as build
from rheostat.backends.kubernetes.kube import NameTakenError
from rheostat.backends.local.runner import spec_fingerprint
from rheostat.spec import study_from_mapping
from tests.studies import synthetic_study
from tests.unit.fake_kube import controller_uid
from tests.unit.test_reconcile import JOBS, NS, STUDIES, TRIALS, Operator

SERVICES = "services"


def distributed_study(replicas: int = 2, **budget: Any) -> dict[str, Any]:
    document = synthetic_study("syn", budget={"maxTrials": 1, "parallelism": 1, **budget})
    document["spec"]["trialTemplate"]["replicas"] = replicas
    return document


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def run_ranks(op: Operator, job_name: str, replicas: int) -> None:
    """The Job controller's pods `<job>-<index>`, annotated with their index, running."""
    for index in range(replicas):
        pod = op.server.run_pod(job_name, NS, ip=f"10.0.0.{10 + index}")
        del op.server.objects[("pods", NS, f"{job_name}-pod")]
        pod["metadata"]["name"] = f"{job_name}-{index}-x"
        pod["metadata"]["annotations"] = {distributed.INDEX_ANNOTATION: str(index)}
        op.server.add("pods", pod)


def end_rank(op: Operator, job_name: str, index: int, code: int, message: str = "") -> None:
    pod = op.server.objects[("pods", NS, f"{job_name}-{index}-x")]
    pod["status"]["containerStatuses"][0]["state"] = {
        "terminated": {"exitCode": code, "message": message, "finishedAt": "1970-01-12T13:46:40Z"}
    }


def test_a_multi_pod_trial_is_an_indexed_job_and_a_headless_service_owned_by_its_trial() -> None:
    op = Operator()
    op.apply(distributed_study(replicas=3))
    op.reconcile()

    trial = op.trial(0)
    job = op.server.get(JOBS, NS, "syn-t0")
    service = op.server.get(SERVICES, NS, "syn-t0")
    assert job is not None
    assert service is not None
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 3
    assert spec["backoffLimit"] == 0
    assert spec["podReplacementPolicy"] == "Failed"
    assert spec["successPolicy"] == {"rules": [{"succeededIndexes": "0"}]}
    assert spec["template"]["spec"]["subdomain"] == "syn-t0"
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    env = env_of(job)
    assert env["MASTER_ADDR"] == "syn-t0-0.syn-t0"
    assert env["MASTER_PORT"] == "29500"
    assert env["WORLD_SIZE"] == env["NNODES"] == "3"
    assert env["NODE_RANK"] == {
        "fieldRef": {
            "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        }
    }
    assert env["RHEOSTAT_TRIAL"] == "0"  # the usual contract is still there
    assert controller_uid(service) == trial["metadata"]["uid"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    pod_labels = spec["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["selector"][build.LABEL_TRIAL] == "0"
    # Created before the Job, so rank 0's name resolves when the pods start.
    creates = [plural for method, plural in op.server.requests if method == "POST"]
    assert creates.index(SERVICES) < creates.index(JOBS)


def test_an_existing_service_of_ours_is_success_and_a_strangers_is_not_adopted() -> None:
    op = Operator()
    op.apply(distributed_study())
    op.reconcile()
    service = op.server.get(SERVICES, NS, "syn-t0")
    assert service is not None
    kube = op.server.kube()
    assert kube.create_service(service) is False  # "already exists" is success
    stranger = copy.deepcopy(service)
    stranger["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    with pytest.raises(NameTakenError, match="Service syn-t0 exists and is not this study's"):
        kube.create_service(stranger)


def test_one_pod_trials_are_unchanged() -> None:
    op = Operator()
    op.apply(distributed_study(replicas=1))
    op.reconcile()
    job = op.server.get(JOBS, NS, "syn-t0")
    assert job is not None
    assert "completionMode" not in job["spec"]
    assert "MASTER_ADDR" not in env_of(job)
    assert op.server.of(SERVICES, NS) == []


def test_rank_zero_reports_the_trial_and_a_deleted_study_leaves_no_service() -> None:
    op = Operator()
    op.apply(distributed_study())
    op.reconcile()
    run_ranks(op, "syn-t0", 2)
    op.reconcile()
    assert op.trial(0)["status"]["state"] == "Running"
    end_rank(op, "syn-t0", 1, 0)  # rank 1 done first: not the trial's result
    op.reconcile()
    assert op.trial(0)["status"]["state"] == "Running"
    end_rank(op, "syn-t0", 0, 0, json.dumps({"metrics": {"loss": 0.125}}))
    op.reconcile()
    final = op.reconcile()
    assert op.trial(0)["status"]["state"] == "Complete"
    assert final["bestTrial"]["value"] == 0.125

    op.server.delete(STUDIES, NS, "syn")
    op.server.collect_garbage()
    assert op.server.of(TRIALS, NS) == []
    assert op.server.of(JOBS, NS) == []
    assert op.server.of(SERVICES, NS) == []


def test_a_rank_that_fails_first_fails_the_trial_by_its_own_exit() -> None:
    op = Operator()
    op.apply(distributed_study(maxFailedTrials=5))
    op.reconcile()
    run_ranks(op, "syn-t0", 2)
    end_rank(op, "syn-t0", 1, 137)
    op.reconcile()
    status = op.trial(0)["status"]
    assert status["state"] == "Failed"
    assert status["kind"] == "counted"  # the trainer's failure, not retried
    assert status["reason"] == "trainer exited with code 137: rank 1: Error"


def test_a_rank_deleted_first_is_retried_though_rank_zero_then_fails() -> None:
    op = Operator()
    op.apply(distributed_study(maxRetries=1))
    op.reconcile()
    run_ranks(op, "syn-t0", 2)
    rank1 = op.server.objects[("pods", NS, "syn-t0-1-x")]
    rank1["metadata"] |= {
        "deletionTimestamp": "1970-01-12T13:47:10Z",  # now + the 30 s grace
        "deletionGracePeriodSeconds": 30,
    }
    end_rank(op, "syn-t0", 0, 1)  # gloo: "Connection closed by peer", a second later
    rank0 = op.server.objects[("pods", NS, "syn-t0-0-x")]
    rank0["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"] = (
        "1970-01-12T13:46:41Z"
    )
    op.reconcile()
    status = op.trial(0)["status"]
    assert status["state"] == "Failed"
    assert status["kind"] == "retry", status  # the cluster's: retried with the same params
    assert status["reason"].startswith("rank 1: "), status
    assert op.server.get(JOBS, NS, "syn-t0") is None  # every rank stops with its Job
    op.reconcile()
    assert op.trial(1)["spec"]["params"] == op.trial(0)["spec"]["params"]


def test_the_lr_range_test_of_a_multi_pod_template_is_one_pod_in_a_world_of_one() -> None:
    document = distributed_study(replicas=4)
    document["metadata"] |= {"namespace": NS, "uid": "u-1"}
    spec = study_from_mapping(document).spec
    job = distributed.lr_test_job(document, spec, {"lr": 0.1}, ("lr", 1e-5, 1.0, 50))
    assert "completionMode" not in job["spec"]
    env = env_of(job)
    assert (env["WORLD_SIZE"], env["NNODES"], env["NODE_RANK"]) == ("1", "1", "0")
    assert env["MASTER_ADDR"] == "127.0.0.1"


def test_names_that_start_with_a_digit_get_a_service_name_that_does_not() -> None:
    assert distributed.service_name("9lives-t0") == "r9lives-t0"
    assert distributed.service_name("lives-t0") == "lives-t0"
    job = {"metadata": {"name": "9lives-t0"}, "spec": {"template": {"spec": {"containers": [{}]}}}}
    indexed = distributed.make_indexed(job, 2, 9090)
    assert indexed["spec"]["template"]["spec"]["subdomain"] == "r9lives-t0"
    assert env_of(indexed)["MASTER_ADDR"] == "9lives-t0-0.r9lives-t0"
    # A metrics port on torchrun's default moves the rendezvous port aside.
    assert distributed.master_port(29500) == 29501


def test_a_local_study_db_from_before_replicas_existed_still_resumes() -> None:
    """The local resume check hashes the spec; the new field's default must not move it.

    fb5e379ca7f16401 is what the code before `replicas` computed for this study.
    """
    document = synthetic_study("syn")
    assert spec_fingerprint(study_from_mapping(document)) == "fb5e379ca7f16401"
    document["spec"]["trialTemplate"]["replicas"] = 1
    assert spec_fingerprint(study_from_mapping(document)) == "fb5e379ca7f16401"


def test_a_stopped_multi_pod_trial_takes_every_rank_with_its_job() -> None:
    """A trial the tuner stops (pruned, or here timed out) loses its Job; with it, by
    the garbage collector, every rank's pod: none runs on after its trial ended."""
    op = Operator()
    op.apply(distributed_study(replicas=3, trialTimeout=100))
    op.reconcile()
    run_ranks(op, "syn-t0", 3)
    op.reconcile()
    op.server.now += 150
    op.reconcile()
    assert op.server.get(JOBS, NS, "syn-t0") is None
    op.server.collect_garbage()
    assert [p["metadata"]["name"] for p in op.server.of("pods", NS)] == []
    assert op.trial(0)["status"]["state"] == "Failed"
