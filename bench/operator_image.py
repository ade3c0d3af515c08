"""The operator image before and after torch left it: size, import on a node, start to Ready.

What a cluster pays for an operator image, three ways:

- **size**: its layers uncompressed (what a node stores and unpacks), from the OCI
  layouts this script and hack/build-images.sh export from buildah's storage;
- **import**: ``ctr images import`` into a scratch containerd that holds nothing yet
  (a CPU node pulling the image cold). No registry is reachable here, so the
  transfer is a local tar stream: the time is the node's side of a pull (store,
  verify, unpack), not the network's, which would scale with the size on top;
- **start to Ready**: ``helm install`` on the test cluster's real node (kubelet +
  containerd, images already imported), from the operator pod's creation to its
  Ready condition, with the readiness probe every second from the start. With
  ``gpWorker.enabled`` the pod also starts the GP worker sidecar first (it imports
  torch before the operator may start).

"Before" is the last image the old Dockerfile built (torch in), kept in buildah's
storage as ``localhost/rheostat/operator:before-slim``; "after" the slim one, tagged
``localhost/rheostat/operator:slim`` (and ``gp-worker:slim``): tags of their own,
since ``make images`` on another branch retags ``:dev`` (``--before``, ``--after``,
``--gp-worker``, ``--trainer`` name others). All are exported into a layout of the
bench's own. Needs root and the real node's parts (``make images`` once).
Run: ``python -m bench.operator_image`` (writes results/operator_image.{json,md}).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from tests.cluster.binaries import tool_path
from tests.cluster.harness import LocalCluster
from tests.cluster.polling import wait_for
from tests.cluster.real_node import _import_stream, _layout_manifest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CHART = REPO / "charts" / "rheostat"
BENCH_LAYOUT = Path(os.environ.get("RHEOSTAT_CACHE", Path.home() / ".cache/rheostat")) / (
    "bench-operator-image"
)
BEFORE_REF = "localhost/rheostat/operator:before-slim"
AFTER_REF = "localhost/rheostat/operator:slim"
GP_WORKER_REF = "localhost/rheostat/gp-worker:slim"
TRAINER_REF = "localhost/rheostat/trainer:dev"


def buildah_id(tag: str) -> str:
    done = subprocess.run(
        ["buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}}", tag],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def export_images(tags: dict[str, str]) -> Path:
    """The compared images, by name, in a layout of their own: the shared one holds
    whatever the last `make images` on this machine built, from whichever branch."""
    graph = subprocess.run(
        ["buildah", "info", "--format", "{{.store.GraphRoot}}"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    pairs = [f"{name}={buildah_id(tag)}" for name, tag in tags.items()]
    subprocess.run(
        ["python3", str(REPO / "hack/oci_export.py"), graph, str(BENCH_LAYOUT), *pairs],
        check=True,
    )  # fmt: skip
    return BENCH_LAYOUT


def image_size(layout: Path, name: str) -> dict[str, Any]:
    """Layer bytes (uncompressed tars) of one image in a layout."""
    desc = _layout_manifest(json.loads((layout / "index.json").read_text()), name)
    blobs = layout / "blobs" / "sha256"
    manifest = json.loads((blobs / desc["digest"].split(":")[1]).read_text())
    layers = [layer["size"] for layer in manifest["layers"]]
    return {"bytes": sum(layers), "layers": len(layers), "largest_layer": max(layers)}


@contextmanager
def scratch_containerd() -> Iterator[str]:
    """A containerd with an empty root of its own (no CRI): a node that has nothing."""
    folder = Path(tempfile.mkdtemp(prefix="rheostat-bench-ctrd-", dir="/var/tmp"))
    address = str(folder / "containerd.sock")
    (folder / "config.toml").write_text(
        f'version = 2\nroot = "{folder}/root"\nstate = "{folder}/state"\n'
        f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{address}"\n[ttrpc]\n  address = "{address}.ttrpc"\n'
    )
    process = subprocess.Popen(
        ["containerd", "--config", str(folder / "config.toml"), "--log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(
            lambda: subprocess.run(
                ["ctr", "--address", address, "version"], capture_output=True, check=False
            ).returncode == 0,
            30, "the scratch containerd",
        )  # fmt: skip
        yield address
    finally:
        process.terminate()
        process.wait(timeout=30)
        subprocess.run(["umount", "-R", str(folder / "root")], capture_output=True, check=False)
        for mount in sorted(Path("/proc/mounts").read_text().splitlines(), reverse=True):
            point = mount.split()[1]
            if point.startswith(str(folder)):
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        shutil.rmtree(folder, ignore_errors=True)


def cold_import(layout: Path, name: str, first: tuple[Path, str] | None = None) -> float:
    """Seconds to import (and unpack) one image into an empty containerd, written to
    disk (``sync`` inside the timing, after one outside it: the write-back of an earlier
    import is not charged to this one); with ``first``, into one that already holds
    that image (e.g. the GP worker on a node that runs trials)."""
    with scratch_containerd() as address:
        if first is not None:
            _import(first[0], first[1], address)
        subprocess.run(["sync"], check=True)
        started = time.monotonic()
        _import(layout, name, address)
        subprocess.run(["sync"], check=True)
        return round(time.monotonic() - started, 1)


def _import(layout: Path, name: str, address: str) -> None:
    desc = _layout_manifest(json.loads((layout / "index.json").read_text()), name)
    have = set(
        subprocess.run(
            ["ctr", "--address", address, "-n", "k8s.io", "content", "list", "--quiet"],
            capture_output=True, text=True, check=True,
        ).stdout.split()
    )  # fmt: skip
    _import_stream(layout, desc, f"localhost/bench/{name}:dev", have, address)


def start_to_ready(api: client.ApiClient, namespace: str, values: dict[str, Any]) -> float:
    """``helm install --wait``; seconds from the operator pod's creation to Ready."""
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": namespace}})
    path = Path(tempfile.mkstemp(suffix=".yaml")[1])
    path.write_text(yaml.safe_dump(values))
    try:
        subprocess.run(
            ["helm", "install", "rheo", str(CHART), "-n", namespace, "-f", str(path),
             "--wait", "--timeout", "300s"],
            check=True, capture_output=True,
        )  # fmt: skip
        pod = core.list_namespaced_pod(namespace).items[0]
        ready = next(c for c in pod.status.conditions if c.type == "Ready")
        return (ready.last_transition_time - pod.metadata.creation_timestamp).total_seconds()
    finally:
        subprocess.run(["helm", "uninstall", "rheo", "-n", namespace, "--wait"], check=False)
        core.delete_namespace(namespace)
        path.unlink()


def chart_values(image: str, gp_worker: bool) -> dict[str, Any]:
    repository, tag = image.rsplit(":", 1)
    values: dict[str, Any] = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "readinessProbe": {"initialDelaySeconds": 0, "periodSeconds": 1},
    }
    if gp_worker:
        values["gpWorker"] = {
            "enabled": True,
            "image": {"repository": "localhost/bench/gp-worker", "tag": "dev",
                      "pullPolicy": "Never"},
        }  # fmt: skip
    return values


def measure_ready(repeats: int, layout: Path) -> dict[str, list[float]]:
    state = Path(tempfile.mkdtemp(prefix="bench-operator-image-", dir=REPO / ".cluster"))
    cluster = LocalCluster(state, nodes=0, gpus=0, real_node=True)
    info = cluster.start(timeout=180.0)
    os.environ["PATH"] = f"{tool_path()}:{os.environ['PATH']}"
    os.environ["KUBECONFIG"] = str(info.kubeconfig)
    try:
        assert cluster.real_node is not None
        for name in ("operator-before", "operator", "gp-worker"):
            _import(layout, name, cluster.real_node.address)  # as localhost/bench/<name>:dev
        before, after = "localhost/bench/operator-before:dev", "localhost/bench/operator:dev"
        cases = {
            "before (torch in the operator)": (before, False),
            "after (slim operator)": (after, False),
            "after + gpWorker sidecar": (after, True),
        }
        seconds: dict[str, list[float]] = {case: [] for case in cases}
        with config.new_client_from_config(config_file=str(info.kubeconfig)) as api:
            for i in range(repeats):
                for j, (case, (image, gp)) in enumerate(cases.items()):
                    took = start_to_ready(api, f"bench-{i}-{j}", chart_values(image, gp))
                    seconds[case].append(took)
                    print(f"{case}: {took:.0f} s to Ready", flush=True)
        return seconds
    finally:
        cluster.stop()


def section(measured: Any) -> dict[str, Any]:
    """One measurement with its time, commit and the machine's load when it started."""
    return {
        "measured": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        "values": measured,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE_REF, help="the torch-carrying image's tag")
    parser.add_argument("--after", default=AFTER_REF, help="the slim operator image's tag")
    parser.add_argument("--gp-worker", default=GP_WORKER_REF, help="the GP worker image's tag")
    parser.add_argument("--trainer", default=TRAINER_REF, help="the trainer image's tag")
    parser.add_argument("--repeats", type=int, default=3, help="installs per case")
    parser.add_argument(
        "--only", choices=["sizes", "imports", "ready"], action="append",
        help="measure only these sections (repeatable); the others keep their stored values",
    )  # fmt: skip
    args = parser.parse_args()
    wanted = set(args.only or ["sizes", "imports", "ready"])
    path = RESULTS / "operator_image.json"
    result: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    layout = export_images(
        {
            "operator-before": args.before,
            "operator": args.after,
            "gp-worker": args.gp_worker,
            "trainer": args.trainer,
        }
    )
    if "sizes" in wanted:
        result["sizes"] = section(
            {
                "operator before": image_size(layout, "operator-before"),
                "operator after": image_size(layout, "operator"),
                "gp-worker": image_size(layout, "gp-worker"),
                "trainer": image_size(layout, "trainer"),
            }
        )
    if "ready" in wanted:
        result["ready"] = section(measure_ready(args.repeats, layout))
    if "imports" in wanted:
        imports = {
            "operator after, empty node": [cold_import(layout, "operator") for _ in range(3)],
            "operator before, empty node": [cold_import(layout, "operator-before")],
            "gp-worker, node that has the trainer": [
                cold_import(layout, "gp-worker", first=(layout, "trainer"))
            ],
        }
        result["imports"] = section(imports)
        print(json.dumps(imports), flush=True)
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "operator_image.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def _when(part: dict[str, Any]) -> str:
    return (
        f"measured {part['measured']}, commit {part['commit']}, load average at start "
        f"{part['load_average_at_start']}"
    )


def markdown(result: dict[str, Any]) -> str:
    mb = 1_000_000
    lines = [
        "# The operator image: size, cold import on a node, start to Ready",
        "",
        "Written by `python -m bench.operator_image` on this project's 2-core machine, "
        "shared with other work; method in [../operator_image.py](../operator_image.py) "
        "and [../README.md](../README.md) section 9.",
    ]
    if "sizes" in result:
        lines += [
            "",
            f"Sizes ({_when(result['sizes'])}):",
            "",
            "| image | size (uncompressed layers) | layers | largest layer |",
            "|---|---|---|---|",
        ]
        for name, size in result["sizes"]["values"].items():
            lines.append(
                f"| {name} | {size['bytes'] / mb:,.0f} MB | {size['layers']} | "
                f"{size['largest_layer'] / mb:,.0f} MB |"
            )
    if "imports" in result:
        lines += [
            "",
            f"Import into an empty containerd, store + unpack + sync ({_when(result['imports'])}):",
            "",
            "| image | seconds (median; runs) |",
            "|---|---|",
        ]
        for name, runs in result["imports"]["values"].items():
            shown = ", ".join(f"{r:.1f}" for r in runs)
            lines.append(f"| {name} | {statistics.median(runs):.1f} ({shown}) |")
    if "ready" in result:
        lines += [
            "",
            f"`helm install` on the real node ({_when(result['ready'])}):",
            "",
            "| operator | pod created -> Ready, s (median; runs) |",
            "|---|---|",
        ]
        for case, runs in result["ready"]["values"].items():
            shown = ", ".join(f"{r:.0f}" for r in runs)
            lines.append(f"| {case} | {statistics.median(runs):.0f} ({shown}) |")
        lines += [
            "",
            "Kubernetes timestamps have one-second resolution; the readiness probe runs "
            "every second from the container's start.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
