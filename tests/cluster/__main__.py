"""``python -m tests.cluster up|down|status``: a long-lived cluster for manual work.

``up`` starts a detached cluster with its state in ``<repo>/.cluster/`` and prints
the ``export`` lines for a shell (``--real-node`` adds the kubelet node); ``down``
stops it and undoes the real node's host changes. Tests can reuse it through
``RHEOSTAT_TEST_KUBECONFIG=.cluster/kubeconfig``.
"""

from __future__ import annotations

import argparse
import shutil
import sys

from tests.cluster.binaries import BinariesMissingError, tool_path
from tests.cluster.harness import (
    STATE_ROOT,
    ClusterInfo,
    LocalCluster,
    recorded_alive,
    stop_recorded,
)
from tests.cluster.real_node import RealNodeUnavailableError, cleanup_host


def _exports(info: ClusterInfo) -> str:
    return "\n".join(
        [
            f"export KUBECONFIG={info.kubeconfig}",
            f"export RHEOSTAT_TEST_KUBECONFIG={info.kubeconfig}",
            f"export RHEOSTAT_TEST_PROMETHEUS_URL={info.prometheus_url}",
            f"export PATH={tool_path()}",
        ]
    )


def up(nodes: int, gpus: int, real_node: bool) -> int:
    running = recorded_alive(STATE_ROOT)
    if running is not None:
        print("# the test cluster is already running", file=sys.stderr)
        print(_exports(running))
        return 0
    stop_recorded(STATE_ROOT)  # a half-dead one
    cleanup_host(STATE_ROOT)  # a real node whose cluster.json is gone
    for child in STATE_ROOT.glob("*"):
        if not child.name.startswith(("pytest-", "containers-")):
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink()
    try:
        cluster = LocalCluster(
            STATE_ROOT, detached=True, nodes=nodes, gpus=gpus, real_node=real_node
        )
        info = cluster.start()
    except (BinariesMissingError, RealNodeUnavailableError) as err:
        print(f"cannot start the test cluster: {err}", file=sys.stderr)
        return 1
    print(
        f"# test cluster up; logs in {STATE_ROOT / 'logs'}; stop with `make cluster-down`",
        file=sys.stderr,
    )
    print(_exports(info))
    return 0


def down() -> int:
    if stop_recorded(STATE_ROOT):
        print("test cluster stopped", file=sys.stderr)
    elif cleanup_host(STATE_ROOT):
        print("real node's host changes undone", file=sys.stderr)
    else:
        print("no test cluster recorded in .cluster/", file=sys.stderr)
    return 0


def status() -> int:
    info = recorded_alive(STATE_ROOT)
    if info is None:
        print("down")
        return 1
    print(_exports(info))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="start a detached cluster and print exports")
    up_parser.add_argument("--nodes", type=int, default=2)
    up_parser.add_argument("--gpus", type=int, default=2, help="nvidia.com/gpu per node")
    up_parser.add_argument(
        "--real-node",
        action="store_true",
        help="also start a kubelet node (containerd, runc, CNI bridge); needs root and "
        "`make images`",
    )
    sub.add_parser("down", help="stop the detached cluster")
    sub.add_parser("status", help="print exports if the detached cluster runs")
    args = parser.parse_args()
    if args.command == "up":
        return up(args.nodes, args.gpus, args.real_node)
    if args.command == "down":
        return down()
    return status()


if __name__ == "__main__":
    sys.exit(main())
