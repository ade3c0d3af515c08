"""Sampling at admission time under real Kueue: how long a GPU sits idle between trials.

A quota of 2 `nvidia.com/gpu` (a Kueue ClusterQueue), a study of 20 one-GPU trials of
about 5 s each at parallelism 4 and the default queueDepth 1, on the test control
plane with Kueue v0.17.0 running beside it (tests/cluster/kueue.py) and the
operator as a process. Two watches time every step on this machine's clock:

- a trial *ends* when its pod is seen Succeeded;
- a trial is *admitted* when its Job is seen unsuspended (Kueue's doing).

The idle gap pairs each admission after the first two with the earliest end not yet
paired before it: the time a freed GPU waited for the next trial. Since one trial
already waits in the queue, the gap is Kueue's (Workload finished -> next admitted)
and the watch latency, not the sampler's. Also: total wall against the ideal
(20 trials x 5 s / 2 GPUs = 50 s), and how many samples were taken while another
trial of the study waited (at most queueDepth per admission).

    python -m bench.kueue        # writes bench/results/kueue.json and kueue.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from tests.cluster.harness import LocalCluster, session_state_dir
from tests.cluster.kueue import FLAVOR, NAMESPACE_LABEL, Kueue, apply_objects, quota_objects
from tests.integration.operator_support import (
    OperatorProcess,
    create_study,
    get_study,
    install_crds,
    synthetic_study,
)

RESULTS = Path(__file__).parent / "results"
TRIALS, SECONDS, GPUS, PARALLELISM = 20, 5.0, 2, 4
STEPS = 10
NAMESPACE = "bench-kueue"


class Timeline:
    """When each trial's Job was seen admitted and its pod seen Succeeded (time.time())."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.created: dict[str, float] = {}
        self.admitted: dict[str, float] = {}
        self.completed: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.watches = [watch.Watch(), watch.Watch()]
        self.threads = [
            threading.Thread(target=self._jobs, daemon=True),
            threading.Thread(target=self._pods, daemon=True),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        for w in self.watches:
            w.stop()

    def _jobs(self) -> None:
        batch = client.BatchV1Api(self.api)
        with contextlib.suppress(Exception):  # the stream ends with the cluster
            for event in self.watches[0].stream(batch.list_namespaced_job, NAMESPACE):
                job, now = event["object"], time.time()
                self.created.setdefault(job.metadata.name, now)
                if not job.spec.suspend:
                    self.admitted.setdefault(job.metadata.name, now)
                if any(c.type == "Complete" for c in job.status.conditions or []):
                    self.completed.setdefault(job.metadata.name, now)

    def _pods(self) -> None:
        core = client.CoreV1Api(self.api)
        with contextlib.suppress(Exception):
            for event in self.watches[1].stream(core.list_namespaced_pod, NAMESPACE):
                pod = event["object"]
                job = (pod.metadata.labels or {}).get("job-name")
                if job and pod.status.phase == "Succeeded":
                    self.ended.setdefault(job, time.time())


def idle_gaps(admitted: list[float], ended: list[float], free_at_start: int) -> list[float]:
    """Each admission after the first `free_at_start`, less the earliest unpaired end."""
    gaps, ends = [], sorted(ended)
    for at in sorted(admitted)[free_at_start:]:
        before = [e for e in ends if e <= at]
        if not before:
            continue
        ends.remove(before[0])
        gaps.append(at - before[0])
    return gaps


def run(workdir: Path) -> dict[str, Any]:
    cluster = LocalCluster(workdir)
    info = cluster.start()
    kueue = Kueue(info.kubeconfig, workdir / "kueue")
    kueue.start()
    operator: OperatorProcess | None = None
    try:
        api = config.new_client_from_config(config_file=str(info.kubeconfig))
        install_crds(api)
        client.CoreV1Api(api).create_namespace(
            {"metadata": {"name": NAMESPACE, "labels": {NAMESPACE_LABEL: "true"}}}
        )
        apply_objects(info.kubeconfig, FLAVOR, *quota_objects("bench", "gpus", NAMESPACE, GPUS))
        operator = OperatorProcess(info.kubeconfig, NAMESPACE, workdir / "operator.log")
        operator.start()
        timeline = Timeline(api)
        timeline.start()
        document = synthetic_study(
            "bench",
            budget={"maxTrials": TRIALS, "parallelism": PARALLELISM},
            resources={"limits": {"nvidia.com/gpu": 1}},
            args=["--steps", str(STEPS), "--step-seconds", str(SECONDS / STEPS)],
        )
        document["spec"]["queue"] = "gpus"
        started = time.time()
        create_study(api, NAMESPACE, document)
        while True:
            status = get_study(api, NAMESPACE, "bench").get("status") or {}
            if status.get("phase") in {"Succeeded", "Failed"}:
                break
            if time.time() - started > 900:
                raise RuntimeError(f"the study did not end: {status}\n{operator.log_tail()}")
            time.sleep(0.5)
        wall = time.time() - started
        timeline.stop()
        found = client.CustomObjectsApi(api).list_namespaced_custom_object(
            "rheostat.dev", "v1alpha1", NAMESPACE, "tuningtrials"
        )["items"]
        outcomes = {
            t["metadata"]["name"]: [t["status"].get("state"), t["status"].get("reason")]
            for t in found
            if t["status"].get("state") != "Complete"
        }
    finally:
        if operator is not None:
            operator.stop()
        kueue.stop()
        cluster.stop()
    gaps = idle_gaps(list(timeline.admitted.values()), list(timeline.ended.values()), GPUS)
    # The parts of a gap: pod Succeeded -> Job Complete (the Job controller), Job
    # Complete -> next Job unsuspended (Kueue), and admission -> the next trial's Job
    # created (the operator sampling the trial that will wait next).
    to_complete = [
        timeline.completed[j] - timeline.ended[j] for j in timeline.ended if j in timeline.completed
    ]
    kueue_part = idle_gaps(
        list(timeline.admitted.values()), list(timeline.completed.values()), GPUS
    )
    created = sorted(timeline.created.values())
    sampling = [
        min(c for c in created if c > at) - at
        for at in timeline.admitted.values()
        if any(c > at for c in created)
    ]
    sampled = (status.get("queue") or {}).get("sampledWhileWaiting", 0)
    ideal = TRIALS * SECONDS / GPUS
    return {
        "trials": TRIALS,
        "trialSeconds": SECONDS,
        "gpus": GPUS,
        "parallelism": PARALLELISM,
        "queueDepth": 1,
        "phase": status.get("phase"),
        "complete": (status.get("trials") or {}).get("complete"),
        "failed": (status.get("trials") or {}).get("failed"),
        "pruned": (status.get("trials") or {}).get("pruned"),
        "not_complete": outcomes,
        "idle_gap_p50_s": round(statistics.median(gaps), 3) if gaps else None,
        "idle_gap_max_s": round(max(gaps), 3) if gaps else None,
        "idle_gaps": len(gaps),
        "pod_end_to_job_complete_p50_s": _p50(to_complete),
        "job_complete_to_next_admission_p50_s": _p50(kueue_part),
        "admission_to_next_trial_created_p50_s": _p50(sampling),
        "wall_s": round(wall, 1),
        "ideal_wall_s": ideal,
        "wall_over_ideal": round(wall / ideal, 2),
        "sampled_while_waiting": sampled,
        "sampled_while_waiting_per_admission": round(sampled / TRIALS, 2),
        "kueue_startup_s": round(kueue.startup_seconds, 2),
    }


def _p50(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _markdown(result: dict[str, Any]) -> str:
    return "\n".join(
        [
            "# Sampling at admission time under Kueue",
            "",
            f"{result['trials']} one-GPU trials of ~{result['trialSeconds']:.0f} s behind a "
            f"quota of {result['gpus']} GPUs (Kueue v0.17.0), parallelism "
            f"{result['parallelism']}, queueDepth {result['queueDepth']}; see bench/kueue.py.",
            "",
            "| measure | value |",
            "| --- | --- |",
            f"| idle gap, trial end -> next admission, p50 | {result['idle_gap_p50_s']} s |",
            f"| idle gap, max | {result['idle_gap_max_s']} s ({result['idle_gaps']} gaps) |",
            f"| of which pod end -> Job Complete (Job controller), p50 | "
            f"{result['pod_end_to_job_complete_p50_s']} s |",
            f"| of which Job Complete -> next admission (Kueue), p50 | "
            f"{result['job_complete_to_next_admission_p50_s']} s |",
            f"| admission -> next trial's Job created (operator), p50 | "
            f"{result['admission_to_next_trial_created_p50_s']} s |",
            f"| total wall | {result['wall_s']} s |",
            f"| ideal wall ({result['trials']} x {result['trialSeconds']:.0f} s / "
            f"{result['gpus']}) | {result['ideal_wall_s']:.0f} s |",
            f"| wall / ideal | {result['wall_over_ideal']} |",
            f"| samples taken while another trial waited | {result['sampled_while_waiting']} "
            f"({result['sampled_while_waiting_per_admission']} per admission) |",
            f"| outcome | {result['phase']}, {result['complete']} complete, "
            f"{result['failed']} failed, {result['pruned']} pruned |",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = run(session_state_dir())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kueue.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "kueue.md").write_text(_markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main()
