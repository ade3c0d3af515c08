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
import os
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

    def latencies(self) -> list[tuple[str, float]]:
        """(study, seconds from the exit of trial n to the Job of trial n+1)."""
        gaps = []
        for (study, number), exited in self.exited.items():
            created = self.job_created.get((study, number + 1))
            if created is not None:
                gaps.append((study, created - exited))
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


def _tree_rss_mb(pid: int) -> float:
    """Resident MB of a process and all its descendants (the operator's ask workers)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parents[int(stat.parent.name)] = int(fields[1])
    tree, grew = {pid}, True
    while grew:
        found = {child for child, parent in parents.items() if parent in tree}
        grew = bool(found - tree)
        tree |= found
    total = 0.0
    for member in tree:
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(x.split()[1]) for x in lines if x.startswith("VmRSS:")) / 1024
    return total


class TreePeak:
    """The largest RSS of the operator's process tree, sampled each second."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            self.peak = max(self.peak, _tree_rss_mb(self.pid))


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


def _object_sizes(custom: client.CustomObjectsApi, namespace: str) -> dict[str, int]:
    """The largest TuningStudy and TuningTrial as stored (JSON bytes); etcd's limit is 1.5 MB."""
    sizes = {}
    for plural in ("tuningstudies", "tuningtrials"):
        items = custom.list_namespaced_custom_object("rheostat.dev", "v1alpha1", namespace, plural)[
            "items"
        ]
        sizes[plural] = max((len(json.dumps(item)) for item in items), default=0)
    return sizes


def _wait_finished(
    custom: client.CustomObjectsApi, namespace: str, names: set[str], deadline: float
) -> dict[str, str]:
    phases: dict[str, str] = {}
    while time.monotonic() < deadline:
        found = custom.list_namespaced_custom_object(
            "rheostat.dev", "v1alpha1", namespace, "tuningstudies"
        )["items"]
        phases = {
            s["metadata"]["name"]: (s.get("status") or {}).get("phase")
            for s in found
            if s["metadata"]["name"] in names
        }
        if len(phases) == len(names) and all(p in {"Succeeded", "Failed"} for p in phases.values()):
            break
        time.sleep(0.5)
    return phases


def _finished_trials(custom: client.CustomObjectsApi, namespace: str, name: str) -> int:
    study = custom.get_namespaced_custom_object(
        "rheostat.dev", "v1alpha1", namespace, "tuningstudies", name
    )
    return int(((study.get("status") or {}).get("trials") or {}).get("finished", 0))


def _sampler_seconds(port: int) -> dict[str, float]:
    """The operator's sampler histogram: how many asks, their mean and total seconds."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    total = count = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "rheostat_sampler_duration_seconds_sum":
                total = sample.value
            elif sample.name == "rheostat_sampler_duration_seconds_count":
                count = sample.value
    return {
        "asks": count,
        "totalSeconds": round(total, 2),
        "meanSeconds": round(total / count, 4) if count else 0.0,
    }


def _ask_worker(port: int) -> dict[str, float]:
    """The operator's ask-worker metrics: asks answered there, their mean, fallbacks."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    total = count = fallbacks = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "rheostat_ask_worker_seconds_sum":
                total = sample.value
            elif sample.name == "rheostat_ask_worker_seconds_count":
                count = sample.value
            elif sample.name == "rheostat_ask_fallbacks_total":
                fallbacks += sample.value
    return {
        "asks": count,
        "meanSeconds": round(total / count, 4) if count else 0.0,
        "fallbacks": fallbacks,
    }


def run_case(
    api: client.ApiClient,
    kubeconfig: Path,
    workdir: Path,
    *,
    studies: int,
    trials: int,
    parallelism: int = 1,
    neighbour: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """`studies` TPE studies of `trials` instant trials each, at once, under one operator.

    With ``neighbour=(gp_trials, head_start)`` a Gaussian-process study of ``gp_trials``
    runs first (parallelism 4); the TPE studies start once it has finished
    ``head_start`` trials, so their latency is measured while its asks are at their
    slowest. Latency is then the TPE studies' only.
    """
    namespace = f"scale-{studies}x{trials}-{int(time.time()) % 100000}"
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    core.create_namespace({"metadata": {"name": namespace}})
    operator = OperatorProcess(kubeconfig, namespace, workdir / f"operator-{namespace}.log")
    operator.start()
    assert operator.process is not None
    load_before = os.getloadavg()
    try:
        with Recorder(api, namespace) as recorder, TreePeak(operator.process.pid) as tree:
            time.sleep(1.0)  # let the watches open before the first Job
            cpu_before, _ = _proc_usage(operator.process.pid)  # start-up is not per trial
            gp_finished = 0
            if neighbour is not None:
                gp_trials, head_start = neighbour
                gp = synthetic_study(
                    "gp",
                    algorithm="bayesian",
                    args=["--steps", "1"],
                    budget={"maxTrials": gp_trials, "parallelism": 4},
                )
                create_study(api, namespace, gp)
                while _finished_trials(custom, namespace, "gp") < head_start:
                    time.sleep(2.0)
                gp_finished = _finished_trials(custom, namespace, "gp")
            started = time.monotonic()
            names = {f"s{index}" for index in range(studies)}
            for name in sorted(names):
                document = synthetic_study(
                    name,
                    algorithm="tpe",
                    args=["--steps", "1"],
                    budget={"maxTrials": trials, "parallelism": parallelism},
                )
                create_study(api, namespace, document)
            deadline = started + 120 + studies * trials * 5
            phases = _wait_finished(custom, namespace, names, deadline)
            wall = time.monotonic() - started
            cpu_after, peak = _proc_usage(operator.process.pid)
            cpu = cpu_after - cpu_before
            requests = _api_requests(operator.metrics_port)
            sampler = _sampler_seconds(operator.metrics_port)
            worker = _ask_worker(operator.metrics_port)
            # Exit of n → Job of n+1 is the reaction only when trials run one at a time.
            gaps = [g for study, g in recorder.latencies() if study in names and parallelism == 1]
            sizes = _object_sizes(custom, namespace)
            if neighbour is not None:
                gp_finished = _finished_trials(custom, namespace, "gp") - gp_finished
        finished = studies * trials
        writes = sum(v for k, v in requests.items() if not k.startswith(("get", "list")))
        return {
            "studies": studies,
            "trialsPerStudy": trials,
            "parallelism": parallelism,
            "gpNeighbour": (
                None
                if neighbour is None
                else {
                    "maxTrials": neighbour[0],
                    "headStart": neighbour[1],
                    "finishedMeanwhile": gp_finished,
                }
            ),
            "samplerAsks": sampler,
            "askWorker": worker,
            # The machine is shared: 1-, 5- and 15-minute load averages around the case.
            "loadAverage": {
                "start": [round(x, 2) for x in load_before],
                "end": [round(x, 2) for x in os.getloadavg()],
            },
            "largestObjectBytes": sizes,
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
            "operatorTreePeakRssMb": round(tree.peak, 1),
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
    parser.add_argument(
        "--only", type=int, nargs="*", help="run only these case numbers (0-based, full mode)"
    )
    args = parser.parse_args()
    cases: list[dict[str, Any]] = (
        [{"studies": 1, "trials": 4}, {"studies": 3, "trials": 3}]
        if args.smoke
        else [
            {"studies": 1, "trials": 30},
            {"studies": 20, "trials": 5},
            {"studies": 50, "trials": 20},
            {"studies": 1, "trials": 1000, "parallelism": 10},
            {"studies": 10, "trials": 10, "neighbour": (500, 400)},
        ]
    )
    if args.only:
        cases = [cases[i] for i in args.only]
    state = session_state_dir()
    cluster = LocalCluster(state)
    info = cluster.start()
    try:
        api = config.new_client_from_config(config_file=str(info.kubeconfig))
        install_crds(api)
        rows = [run_case(api, info.kubeconfig, state, **case) for case in cases]
    finally:
        cluster.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    name = "operator_scale_smoke" if args.smoke else "operator_scale"
    path = args.out / f"{name}.json"
    if args.only and path.exists():  # a partial run replaces its own cases only
        kept = {_label(r): r for r in json.loads(path.read_text())["cases"]}
        kept.update({_label(r): r for r in rows})
        rows = list(kept.values())
    alone = rows[0]["latency"]
    document = {
        "p50_s": alone["p50_s"],
        "p99_s": alone["p99_s"],
        "smoke": args.smoke,
        "cases": rows,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(_markdown(rows))
    print(_markdown(rows))


def _label(row: dict[str, Any]) -> str:
    label = f"{row['studies']} x {row['trialsPerStudy']}"
    if row.get("parallelism", 1) > 1:
        label += f" (parallelism {row['parallelism']})"
    if row.get("gpNeighbour"):
        label += f" next to a {row['gpNeighbour']['maxTrials']}-trial GP study"
    return label


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value * 1000:.0f}"


def _markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "# Operator: reaction latency and cost",
        "",
        "Instant synthetic TPE trials, one operator, loopback test cluster (2 cores shared "
        "by the control plane, the node agent, the trials and the operator). Latency = trial "
        "container exit → next trial's Job of the same study, from this benchmark's own "
        "watch events (ms clock); measured where studies run one trial at a time.",
        "",
        "| case | latency p50 / p99 / max (ms) | wall (s) | operator CPU (s) | "
        "CPU per trial (ms) | peak RSS (MB) | API writes per trial | LISTs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lat = row["latency"]
        lines.append(
            f"| {_label(row)} | {_ms(lat['p50_s'])} / {_ms(lat['p99_s'])} / "
            f"{_ms(lat['max_s'])} | {row['wallSeconds']} | {row['operatorCpuSeconds']} | "
            f"{row['operatorCpuPerTrialMs']} | {row['operatorPeakRssMb']} | "
            f"{row['apiWritesPerTrial']} | {row['lists']:.0f} |"
        )
    lines += [
        "",
        "Largest stored objects (JSON bytes; etcd refuses objects over 1.5 MB), sampler asks:",
        "",
    ]
    for row in rows:
        sizes = row.get("largestObjectBytes") or {}
        asks = row.get("samplerAsks") or {}
        line = (
            f"- {_label(row)}: TuningStudy {sizes.get('tuningstudies', '—')} B, "
            f"TuningTrial {sizes.get('tuningtrials', '—')} B; "
            f"{asks.get('asks', '—')} asks, mean {asks.get('meanSeconds', '—')} s"
        )
        worker = row.get("askWorker") or {}
        if worker.get("asks") or worker.get("fallbacks"):
            line += (
                f"; in the ask worker {worker['asks']:.0f}, mean {worker['meanSeconds']} s, "
                f"{worker['fallbacks']:.0f} fallbacks"
            )
        if "operatorTreePeakRssMb" in row:
            line += (
                f"; operator and workers peak RSS {row['operatorTreePeakRssMb']} MB (1-s samples)"
            )
        if "loadAverage" in row:
            load = row["loadAverage"]
            line += f"; load average {load['start'][0]} → {load['end'][0]}"
        lines.append(line)
    lines += ["", "API requests by verb and resource (reconcile only; events are Kopf's):", ""]
    for row in rows:
        lines.append(f"- {_label(row)}: {row['apiRequests']}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
