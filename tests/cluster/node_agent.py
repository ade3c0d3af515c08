"""Test-only kubelet stand-in: fake nodes with GPUs, real local processes for pods.

Registers N Node objects (cpu, memory, pods, ``nvidia.com/gpu``) with a Ready
condition, keeps their Leases in ``kube-node-lease`` fresh so the node lifecycle
controller never taints them, and runs every pod the scheduler binds to them via a
:class:`~tests.cluster.pod_runner.PodRunner`. It is what lets the real scheduler,
Job controller and garbage collector act on pods that really run.

Run as ``python -m tests.cluster.node_agent --kubeconfig ... --state-dir ...``; the
harness starts it as a subprocess so that a crash here cannot take pytest with it.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.cluster.pod_env import Pod, decode_secret
from tests.cluster.pod_runner import HOST_IP, TERMINAL, PodRunner, force_delete, now

log = logging.getLogger("node-agent")

NODE_PREFIX = "rheostat-node-"
LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40
RENEW_EVERY = 10.0
STATUS_EVERY = 60.0
# Pods get this variable so that the harness can find and kill strays even if the
# agent itself was SIGKILLed.
MARKER_ENV = "RHEOSTAT_TEST_CLUSTER"


class IpPool:
    """Hands out one loopback address per pod from a /16 (all of 127/8 is on ``lo``)."""

    def __init__(self, cidr: str) -> None:
        self.network = ipaddress.ip_network(cidr)
        self.used: set[str] = set()
        self.next = 2
        self.lock = threading.Lock()

    def allocate(self) -> str:
        with self.lock:
            for _ in range(self.network.num_addresses):
                self.next = self.next + 1 if self.next < self.network.num_addresses - 2 else 2
                ip = str(self.network[self.next])
                if ip not in self.used and not ip.endswith((".0", ".255")):
                    self.used.add(ip)
                    return ip
        raise RuntimeError(f"pod address pool {self.network} is exhausted")

    def release(self, ip: str) -> None:
        with self.lock:
            self.used.discard(ip)


class NodeAgent:
    """Owns the nodes, their leases, and one runner per pod bound to them."""

    def __init__(self, args: argparse.Namespace) -> None:
        conf = client.Configuration()
        config.load_kube_config(config_file=args.kubeconfig, client_configuration=conf)
        conf.connection_pool_maxsize = 64  # one status writer thread per pod
        self.api = client.ApiClient(conf)
        self.core = client.CoreV1Api(self.api)
        self.coordination = client.CoordinationV1Api(self.api)
        self.args = args
        self.nodes = [f"{NODE_PREFIX}{i}" for i in range(args.nodes)]
        self.pods_dir = Path(args.state_dir) / "pods"
        self.workdir = Path(args.workdir)
        self.ips = IpPool(args.pod_cidr)
        self.runners: dict[str, PodRunner] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.base_env = {
            k: v
            for k, v in os.environ.items()
            if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "TMPDIR", "VIRTUAL_ENV")
        }
        self.base_env[MARKER_ENV] = str(args.state_dir)

    # Nodes and leases.
    def node_status(self, name: str) -> dict[str, Any]:
        resources = {
            "cpu": str(self.args.cpu),
            "memory": self.args.memory,
            "pods": "110",
            "ephemeral-storage": "100Gi",
            "nvidia.com/gpu": str(self.args.gpus),
        }
        ts = now()
        conditions = [
            ("Ready", "True", "KubeletReady", "node agent is posting ready status"),
            ("MemoryPressure", "False", "KubeletHasSufficientMemory", ""),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", ""),
            ("PIDPressure", "False", "KubeletHasSufficientPID", ""),
        ]
        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                {
                    "type": t,
                    "status": s,
                    "reason": r,
                    "message": m,
                    "lastHeartbeatTime": ts,
                    "lastTransitionTime": ts,
                }
                for t, s, r, m in conditions
            ],
            "addresses": [
                {"type": "InternalIP", "address": HOST_IP},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "machineID": name,
                "systemUUID": name,
                "bootID": name,
                "kernelVersion": os.uname().release,
                "osImage": "rheostat node agent",
                "containerRuntimeVersion": "rheostat-node-agent://1",
                "kubeletVersion": self.args.kubelet_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    def register(self) -> None:
        for name in self.nodes:
            labels = {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "rheostat.dev/test-node": "true",
            }
            body = {"metadata": {"name": name, "labels": labels}, "spec": {}}
            with contextlib.suppress(ApiException):
                self.core.create_node(body)
            self.core.patch_node_status(name, {"status": self.node_status(name)})
        log.info("registered nodes %s", ", ".join(self.nodes))

    def renew_leases(self) -> None:
        renew = datetime_micro()
        for name in self.nodes:
            spec = {
                "holderIdentity": name,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": renew,
            }
            try:
                self.coordination.patch_namespaced_lease(name, LEASE_NAMESPACE, {"spec": spec})
            except ApiException as err:
                if err.status != 404:
                    raise
                uid = self.core.read_node(name).to_dict()["metadata"]["uid"]
                owner = {"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}
                body = {"metadata": {"name": name, "ownerReferences": [owner]}, "spec": spec}
                self.coordination.create_namespaced_lease(LEASE_NAMESPACE, body)

    def heartbeat_loop(self) -> None:
        last_status = time.monotonic()
        while not self.stopping.wait(RENEW_EVERY):
            try:
                self.renew_leases()
                if time.monotonic() - last_status > STATUS_EVERY:
                    for name in self.nodes:
                        self.core.patch_node_status(name, {"status": self.node_status(name)})
                    last_status = time.monotonic()
            except Exception:
                log.exception("heartbeat failed; retrying")

    # Pods.
    def lookup(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        try:
            if kind == "secret":
                return decode_secret(self.core.read_namespaced_secret(name, namespace).data)
            return dict(self.core.read_namespaced_config_map(name, namespace).data or {})
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def release(self, runner: PodRunner) -> None:
        with self.lock:
            if self.runners.get(runner.uid) is runner:
                del self.runners[runner.uid]
        self.ips.release(runner.pod_ip)

    def handle(self, kind: str, pod: Pod) -> None:
        meta, spec = pod["metadata"], pod.get("spec", {})
        if spec.get("nodeName") not in self.nodes:
            return
        uid = meta["uid"]
        with self.lock:
            runner = self.runners.get(uid)
        if kind == "DELETED":
            if runner is not None:
                runner.mark_gone()
            return
        if runner is not None:
            runner.update(pod)
            return
        phase = (pod.get("status") or {}).get("phase")
        if meta.get("deletionTimestamp"):
            force_delete(self.core, meta["namespace"], meta["name"], uid)
        elif phase not in TERMINAL and not self.stopping.is_set():
            runner = PodRunner(self, pod, self.ips.allocate())
            with self.lock:
                self.runners[uid] = runner
            runner.start()

    def relist(self) -> str:
        pods = self.api.sanitize_for_serialization(
            self.core.list_pod_for_all_namespaces(field_selector="spec.nodeName!=")
        )
        seen = set()
        for pod in pods.get("items", []):
            seen.add(pod["metadata"]["uid"])
            self.handle("MODIFIED", pod)
        with self.lock:
            missing = [r for uid, r in self.runners.items() if uid not in seen]
        for runner in missing:
            runner.mark_gone()
        return str(pods["metadata"]["resourceVersion"])

    def watch_loop(self) -> None:
        """List, then watch from the last resourceVersion seen; re-list after an error.

        A watch that simply times out is resumed where it stopped; an ERROR event
        (typically 410 Gone: the version was compacted) or an exception means events
        may have been missed, so the agent re-lists and reconciles its runners.
        """
        version: str | None = None
        while not self.stopping.is_set():
            try:
                if version is None:
                    version = self.relist()
                stream = watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces,
                    field_selector="spec.nodeName!=",
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=60,
                )
                for event in stream:
                    if self.stopping.is_set():
                        return
                    raw = event["raw_object"]
                    if event["type"] == "ERROR":
                        log.info("watch error %s; re-listing", raw.get("message"))
                        version = None
                        break
                    version = raw["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        self.handle(event["type"], raw)
            except Exception:
                if self.stopping.is_set():
                    return
                log.exception("pod watch failed; re-listing")
                version = None
                time.sleep(1)

    def shutdown(self) -> None:
        """Stop every pod's processes (SIGKILL); the cluster is going away."""
        self.stopping.set()
        with self.lock:
            runners = list(self.runners.values())
        for runner in runners:
            runner.stop()
        for runner in runners:
            runner.join(timeout=10)


def datetime_micro() -> str:
    """Lease times are MicroTime: RFC 3339 with microseconds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--workdir", default=os.getcwd())
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--cpu", type=int, default=8)
    parser.add_argument("--memory", default="32Gi")
    parser.add_argument("--pod-cidr", default="127.1.0.0/16")
    parser.add_argument("--kubelet-version", default="v1.34.4")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(message)s"
    )
    agent = NodeAgent(parse_args(sys.argv[1:] if argv is None else argv))
    done = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping pods", signum)
        done.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    agent.register()
    agent.renew_leases()
    threading.Thread(target=agent.heartbeat_loop, name="heartbeat", daemon=True).start()
    threading.Thread(target=agent.watch_loop, name="pod-watch", daemon=True).start()
    (Path(agent.args.state_dir) / "node-agent.ready").write_text(" ".join(agent.nodes))
    while not done.wait(1.0):
        pass
    agent.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
