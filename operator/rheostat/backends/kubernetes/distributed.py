"""Multi-pod trials with what every cluster has: an Indexed Job plus a headless Service.

No PyTorchJob or TrainJob controller: `completionMode: Indexed` numbers the pods 0..N-1
(`JOB_COMPLETION_INDEX`, and the annotation the downward API reads), gives each the
hostname `<job>-<index>`, and a headless Service named in the pods' `subdomain` makes
`<job>-0.<service>` resolve to rank 0, so `torchrun --nnodes=$NNODES
--node_rank=$NODE_RANK --master_addr=$MASTER_ADDR --master_port=$MASTER_PORT` runs
unchanged. Pure builders, like manifests.py: no I/O.

Failure handling stays the tuner's: `backoffLimit: 0` fails the Job at the first failed
pod (one dead rank hangs or kills the rest anyway), `podReplacementPolicy: Failed`
never starts a replacement beside a pod still terminating, and the `successPolicy`
ends the Job when index 0 (the rank that reports) has succeeded, so ranks that block
in a final barrier are stopped rather than waited for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rheostat.backends.kubernetes import manifests as build
from rheostat.backends.kubernetes.manifests import Manifest, owner_reference
from rheostat.spec import Scalar, StudySpec

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
# torchrun's default rendezvous port; another when the metrics port already holds it.
MASTER_PORT = 29500


def service_name(job_name: str) -> str:
    """The headless Service of a trial: its Job's name when that is a DNS-1035 label.

    Service names must start with a letter; a study name may start with a digit.
    """
    return job_name if job_name[:1].isalpha() else f"r{job_name}"


def master_port(metrics_port: int) -> int:
    return MASTER_PORT if metrics_port != MASTER_PORT else MASTER_PORT + 1


def rank_env(job_name: str, replicas: int, metrics_port: int) -> list[dict[str, Any]]:
    """What a launcher needs to find its peers: rank 0's address, the size, this rank."""
    return [
        {"name": "MASTER_ADDR", "value": f"{job_name}-0.{service_name(job_name)}"},
        {"name": "MASTER_PORT", "value": str(master_port(metrics_port))},
        {"name": "WORLD_SIZE", "value": str(replicas)},
        {"name": "NNODES", "value": str(replicas)},
        {
            "name": "NODE_RANK",
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}},
        },
    ]


def make_indexed(job: Manifest, replicas: int, metrics_port: int) -> Manifest:
    """Turn a one-pod trial Job (manifests.trial_job) into an N-pod Indexed Job, in place."""
    name = job["metadata"]["name"]
    spec = job["spec"]
    spec |= {
        "completionMode": "Indexed",
        "completions": replicas,
        "parallelism": replicas,
        "backoffLimit": 0,
        "podReplacementPolicy": "Failed",
        "successPolicy": {"rules": [{"succeededIndexes": "0"}]},
    }
    pod = spec["template"]["spec"]
    pod["subdomain"] = service_name(name)
    trainer = pod["containers"][0]
    extra = rank_env(name, replicas, metrics_port)
    known = {e["name"] for e in extra}
    trainer["env"] = [e for e in trainer.get("env", []) if e["name"] not in known] + extra
    ports = trainer.setdefault("ports", [])
    port = master_port(metrics_port)
    if not any(p.get("containerPort") == port for p in ports):
        ports.append({"name": "rendezvous", "containerPort": port})
    return job


def headless_service(
    job: Mapping[str, Any], trial: Mapping[str, Any], metrics_port: int
) -> Manifest:
    """The Service that names a trial's pods, owned by its TuningTrial (gone with it).

    It selects the Job's pods by the labels every trial pod carries; headless
    (`clusterIP: None`) and publishing not-ready addresses, so rank 0's name resolves
    as soon as it has an IP, before any readiness probe could pass.
    """
    name = job["metadata"]["name"]
    port = master_port(metrics_port)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(name),
            "namespace": job["metadata"]["namespace"],
            "labels": dict(job["metadata"]["labels"]),
            "ownerReferences": [owner_reference(trial)],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": dict(job["metadata"]["labels"]),
            "ports": [{"name": "rendezvous", "port": port, "targetPort": port}],
        },
    }


def trial_children(
    study: Mapping[str, Any],
    spec: StudySpec,
    trial: Mapping[str, Any],
    params: Mapping[str, Scalar],
    lr_schedule: tuple[float, float] | None = None,
) -> tuple[Manifest, Manifest | None]:
    """A trial's Job and, when it spans several pods, the Service its pods need first."""
    job = build.trial_job(study, spec, trial, params, lr_schedule)
    replicas = spec.trial_template.replicas
    if replicas == 1:
        return job, None
    make_indexed(job, replicas, spec.metrics.port)
    return job, headless_service(job, trial, spec.metrics.port)


def lr_test_job(
    study: Mapping[str, Any],
    spec: StudySpec,
    params: Mapping[str, Scalar],
    sweep: tuple[str, float, float, int],
) -> Manifest:
    """The LR range test's Job: one pod even for a multi-pod template.

    A sweep of one batch per step needs no peers. The same launcher variables say "a
    world of one on this host", so a template's `torchrun --nnodes=$NNODES ...`
    command runs the test unchanged.
    """
    job = build.lr_test_job(study, spec, params, sweep)
    if spec.trial_template.replicas == 1:
        return job
    trainer = job["spec"]["template"]["spec"]["containers"][0]
    alone = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(master_port(spec.metrics.port)),
        "WORLD_SIZE": "1",
        "NNODES": "1",
        "NODE_RANK": "0",
    }
    trainer["env"] = [e for e in trainer.get("env", []) if e["name"] not in alone] + [
        {"name": k, "value": v} for k, v in alone.items()
    ]
    return job
