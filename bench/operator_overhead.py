"""Per-trial control overhead of the operator on the real test control plane.

A study with parallelism 1 and an instant trainer runs on the loopback cluster
(real kube-apiserver, controller-manager, scheduler; pods as local processes). For
each pair of consecutive trials it measures the gap from one trial's container
exiting to the next trial's Job being created, i.e. everything the tuner adds:
Job controller status, the operator noticing, Optuna sampling, two API writes.

Two clocks are reported: the container's finishedAt (the kubelet's, 1 s
resolution, so it overstates by up to a second) and the moment the operator saw the
trial finish (its own clock, recorded on the TuningTrial), which isolates the
operator's own share. Run: `python -m bench.operator_overhead`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config
from tests.cluster.harness import LocalCluster, session_state_dir
from tests.integration.operator_support import (
    OperatorProcess,
    create_study,
    install_crds,
    synthetic_study,
    trials,
)

RESULTS = Path(__file__).parent / "results"


def _finished_at(pod: client.V1Pod) -> float | None:
    statuses = pod.status.container_statuses or []
    terminated = statuses[0].state.terminated if statuses else None
    return terminated.finished_at.timestamp() if terminated and terminated.finished_at else None


def measure(
    api: client.ApiClient, kubeconfig: Path, interval: float, count: int, workdir: Path
) -> dict[str, Any]:
    namespace = f"overhead-{int(interval * 10)}-{int(time.time()) % 100000}"
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": namespace}})
    log = workdir / f"operator-{namespace}.log"
    operator = OperatorProcess(kubeconfig, namespace, log, interval=interval)
    operator.start()
    try:
        document = synthetic_study(
            "overhead",
            algorithm="tpe",
            args=["--steps", "1"],
            budget={"maxTrials": count, "parallelism": 1},
        )
        create_study(api, namespace, document)
        deadline = time.monotonic() + 60 + count * 20
        while time.monotonic() < deadline:
            study = client.CustomObjectsApi(api).get_namespaced_custom_object(
                "rheostat.dev", "v1alpha1", namespace, "tuningstudies", "overhead"
            )
            if (study.get("status") or {}).get("phase") in {"Succeeded", "Failed"}:
                break
            time.sleep(1)
        found = trials(api, namespace, "overhead")
        pods = core.list_namespaced_pod(namespace, label_selector="rheostat.dev/role=trial").items
        exits = {int(p.metadata.labels["rheostat.dev/trial"]): _finished_at(p) for p in pods}
        from_exit = []
        for before, after in itertools.pairwise(found):
            exited = exits.get(int(before["spec"]["number"]))
            if exited is not None:
                from_exit.append(float(after["status"]["startedAt"]) - exited)
        passes = _reconcile_seconds(operator.metrics_port)
        return {
            "reconcileInterval": interval,
            "trials": len(found),
            "phase": (study.get("status") or {}).get("phase"),
            "exitToNextJob": _summary(from_exit),
            "reconcilePass": passes,
        }
    finally:
        client.CustomObjectsApi(api).delete_collection_namespaced_custom_object(
            "rheostat.dev", "v1alpha1", namespace, "tuningstudies"
        )
        time.sleep(2)
        operator.stop()
        core.delete_namespace(namespace)


def _reconcile_seconds(port: int) -> dict[str, float]:
    """Mean time of one reconcile pass, from the operator's own histogram."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("rheostat_reconcile_duration_seconds_")
    }
    count = values.get("rheostat_reconcile_duration_seconds_count", 0.0)
    total = values.get("rheostat_reconcile_duration_seconds_sum", 0.0)
    return {"passes": count, "meanSeconds": round(total / count, 4) if count else 0.0}


def _summary(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median": round(statistics.median(values), 3),
        "worst": round(max(values), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    state = session_state_dir()
    cluster = LocalCluster(state)
    info = cluster.start()
    try:
        api = config.new_client_from_config(config_file=str(info.kubeconfig))
        install_crds(api)
        rows = [
            measure(api, info.kubeconfig, interval, args.trials, state) for interval in (0.5, 2.0)
        ]
    finally:
        cluster.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "operator_overhead.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "# Operator per-trial control overhead",
        "",
        "Consecutive trials of an instant trainer, parallelism 1, on the loopback test cluster.",
        "",
        "| reconcile interval (s) | trials | container exit → next Job created: "
        "median / worst (s) | one reconcile pass: mean (s) |",
        "| --- | --- | --- | --- |",
    ]
    for row in rows:
        a, b = row["exitToNextJob"], row["reconcilePass"]
        lines.append(
            f"| {row['reconcileInterval']} | {row['trials']} | {a.get('median')} / "
            f"{a.get('worst')} | {b['meanSeconds']} ({b['passes']:.0f} passes) |"
        )
    lines += [
        "",
        "Container exit times have 1 s resolution (Kubernetes timestamps), so the first "
        "column overstates by up to 1 s.",
    ]
    (args.out / "operator_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
