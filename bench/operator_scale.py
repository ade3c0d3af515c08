"""How fast the operator reacts, and what it costs, on the real test control plane.

Studies of an instant trainer run with parallelism 1 on the loopback cluster (real
kube-apiserver, controller-manager, scheduler; pods as local processes). The
per-trial control latency is the gap from one trial's container exit to the next
trial's Job, both timed in milliseconds on this process's clock as its own watches
deliver them (Kubernetes timestamps have one-second resolution). It includes the
Job controller, the operator noticing, Optuna sampling and the API writes.

Measured: that latency for one study alone and with many studies at once; the
operator's CPU seconds and peak RSS (from /proc); the API requests its reconcile
sent, by verb (its own `rheostat_api_requests_total`; Kopf's watches are extra and
long-lived). Run: `python -m bench.operator_scale` (full) or `--smoke` (CI).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from prometheus_client.parser import text_string_to_metric_families
from tests.cluster.harness import LocalCluster, session_state_dir
from tests.integration.operator_support import (
    OperatorProcess,
    create_study,
    install_crds,
    synthetic_study,
)

RESULTS = Path(__file__).parent / "results"
CLOCK_TICKS = 100  # USER_HZ on Linux


class Recorder:
    """Watches a namespace's trial pods and Jobs; notes when each event arrived."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.exited: dict[tuple[str, int], float] = {}
        self.job_created: dict[tuple[str, int], float] = {}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._pods, daemon=True),
            threading.Thread(target=self._jobs, daemon=True),
        ]

    def __enter__(self) -> Recorder:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()

    def _stream(self, method: Any) -> Any:
        """Events without gaps: each reconnect resumes from the last resourceVersion."""
        version = None
        while not self._stop.is_set():
            stream = watch.Watch()
            options = {"resource_version": version} if version else {}
            for event in stream.stream(
                method,
                self.namespace,
                label_selector="rheostat.dev/role=trial",
                timeout_seconds=30,
                **options,
            ):
                version = event["object"].metadata.resource_version
                yield event

    def _pods(self) -> None:
        core = client.CoreV1Api(self.api)
        for event in self._stream(core.list_namespaced_pod):
            seen = time.monotonic()
            pod = event["object"]
            key = _trial_key(pod.metadata.labels)
            for status in pod.status.container_statuses or []:
                if status.name == "trainer" and status.state.terminated is not None:
                    self.exited.setdefault(key, seen)

    def _jobs(self) -> None:
        batch = client.BatchV1Api(self.api)
        for event in self._stream(batch.list_namespaced_job):
            if event["type"] == "ADDED":
                key = _trial_key(event["object"].metadata.labels)
                self.job_created.setdefault(key, time.monotonic())

    def latencies(self) -> list[float]:
        """Exit of trial n → Job of trial n+1, per study, in seconds."""
        gaps = []
        for (study, number), exited in self.exited.items():
            created = self.job_created.get((study, number + 1))
            if created is not None:
                gaps.append(created - exited)
        return gaps


def _trial_key(labels: dict[str, str]) -> tuple[str, int]:
    return labels["rheostat.dev/study"], int(labels["rheostat.dev/trial"])


def _proc_usage(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS in MB) of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return cpu, peak


def _api_requests(port: int) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    counts: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "rheostat_api_requests_total":
                counts[f"{sample.labels['verb']} {sample.labels['resource']}"] += sample.value
    return dict(sorted(counts.items()))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = max(0, math.ceil(q * len(ordered)) - 1)
    return ordered[index]


def run_case(
    api: client.ApiClient, kubeconfig: Path, workdir: Path, *, studies: int, trials: int
) -> dict[str, Any]:
    """`studies` studies of `trials` instant trials each, at once, under one operator."""
    namespace = f"scale-{studies}x{trials}-{int(time.time()) % 100000}"
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    core.create_namespace({"metadata": {"name": namespace}})
    operator = OperatorProcess(kubeconfig, namespace, workdir / f"operator-{namespace}.log")
    operator.start()
    assert operator.process is not None
    try:
        with Recorder(api, namespace) as recorder:
            time.sleep(1.0)  # let the watches open before the first Job
            cpu_before, _ = _proc_usage(operator.process.pid)  # start-up is not per trial
            started = time.monotonic()
            for index in range(studies):
                document = synthetic_study(
                    f"s{index}",
                    algorithm="tpe",
                    args=["--steps", "1"],
                    budget={"maxTrials": trials, "parallelism": 1},
                )
                create_study(api, namespace, document)
            deadline = started + 120 + studies * trials * 5
            phases: dict[str, str] = {}
            while time.monotonic() < deadline:
                found = custom.list_namespaced_custom_object(
                    "rheostat.dev", "v1alpha1", namespace, "tuningstudies"
                )["items"]
                phases = {
                    s["metadata"]["name"]: (s.get("status") or {}).get("phase") for s in found
                }
                if len(phases) == studies and all(
                    p in {"Succeeded", "Failed"} for p in phases.values()
                ):
                    break
                time.sleep(0.5)
            wall = time.monotonic() - started
            cpu_after, peak = _proc_usage(operator.process.pid)
            cpu = cpu_after - cpu_before
            requests = _api_requests(operator.metrics_port)
            gaps = recorder.latencies()
        finished = studies * trials
        writes = sum(v for k, v in requests.items() if not k.startswith(("get", "list")))
        return {
            "studies": studies,
            "trialsPerStudy": trials,
            "succeeded": sum(1 for p in phases.values() if p == "Succeeded"),
            "wallSeconds": round(wall, 2),
            "latency": {
                "n": len(gaps),
                "p50_s": round(statistics.median(gaps), 4) if gaps else None,
                "p99_s": round(_percentile(gaps, 0.99), 4) if gaps else None,
                "max_s": round(max(gaps), 4) if gaps else None,
            },
            "operatorCpuSeconds": round(cpu, 2),
            "operatorCpuPerTrialMs": round(1000 * cpu / finished, 1),
            "operatorPeakRssMb": round(peak, 1),
            "apiRequests": requests,
            "apiWritesPerTrial": round(writes / finished, 2),
            "lists": sum(v for k, v in requests.items() if k.startswith("list")),
        }
    finally:
        custom.delete_collection_namespaced_custom_object(
            "rheostat.dev", "v1alpha1", namespace, "tuningstudies"
        )
        operator.stop()
        core.delete_namespace(namespace)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a small run for CI")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    cases = [(1, 4), (3, 3)] if args.smoke else [(1, 30), (20, 5)]
    state = session_state_dir()
    cluster = LocalCluster(state)
    info = cluster.start()
    try:
        api = config.new_client_from_config(config_file=str(info.kubeconfig))
        install_crds(api)
        rows = [run_case(api, info.kubeconfig, state, studies=s, trials=t) for s, t in cases]
    finally:
        cluster.stop()
    alone = rows[0]["latency"]
    document = {
        "p50_s": alone["p50_s"],
        "p99_s": alone["p99_s"],
        "smoke": args.smoke,
        "cases": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = "operator_scale_smoke" if args.smoke else "operator_scale"
    (args.out / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
    lines = [
        "# Operator: reaction latency and cost",
        "",
        "Instant synthetic trials, parallelism 1 per study, one operator, loopback test "
        "cluster (2 cores shared by the control plane, the node agent, the trials and the "
        "operator). Latency = trial container exit → next trial's Job, from this "
        "benchmark's own watch events (ms clock).",
        "",
        "| studies x trials | latency p50 / p99 / max (ms) | wall (s) | operator CPU (s) | "
        "CPU per trial (ms) | peak RSS (MB) | API writes per trial | LISTs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lat = row["latency"]

        def ms(value: float | None) -> str:
            return "—" if value is None else f"{value * 1000:.0f}"

        lines.append(
            f"| {row['studies']} x {row['trialsPerStudy']} | {ms(lat['p50_s'])} / "
            f"{ms(lat['p99_s'])} / {ms(lat['max_s'])} | {row['wallSeconds']} | "
            f"{row['operatorCpuSeconds']} | {row['operatorCpuPerTrialMs']} | "
            f"{row['operatorPeakRssMb']} | {row['apiWritesPerTrial']} | {row['lists']:.0f} |"
        )
    lines += ["", "API requests by verb and resource (reconcile only; events are Kopf's):", ""]
    for row in rows:
        lines.append(f"- {row['studies']} x {row['trialsPerStudy']}: {row['apiRequests']}")
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
