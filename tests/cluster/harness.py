"""Start and stop the whole test cluster, and describe it to the tests.

:class:`LocalCluster` composes the control plane, Prometheus and the node agent and
guarantees they stop: on a normal exit, on an exception during start-up, at
interpreter exit (``atexit``) and on SIGTERM/SIGHUP. Processes started for a test
session also die with it (PR_SET_PDEATHSIG). ``python -m tests.cluster up`` starts a
detached cluster instead and records its process groups in ``cluster.json`` for
``down``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from tests.cluster.binaries import K8S_VERSION, REPO_ROOT, Binaries, find_binaries, tool_path
from tests.cluster.controlplane import ApiEndpoint, ControlPlane, wait_until
from tests.cluster.node_agent import MARKER_ENV, NODE_PREFIX
from tests.cluster.procs import (
    ComponentDiedError,
    ManagedProcess,
    kill_marked_processes,
    stop_group,
)
from tests.cluster.prometheus import start_prometheus
from tests.cluster.real_node import (
    BRIDGE_IP,
    NODE_NAME,
    Pki,
    RealNode,
    apiserver_args,
    cleanup_host,
    prepare_host,
    remove_containers,
)

STATE_ROOT = REPO_ROOT / ".cluster"
INFO_FILE = "cluster.json"
# Big data that is useless after the run; logs are kept for post-mortems.
DISPOSABLE = ("etcd", "prometheus/data")


@dataclass
class ClusterInfo:
    """Everything a test needs to reach the cluster; also the content of cluster.json."""

    kubeconfig: Path
    prometheus_url: str | None
    node_names: list[str]
    state_dir: Path
    groups: list[tuple[str, int]] = field(default_factory=list)  # (name, pgid), start order
    real_node: str | None = None  # the real node's name, if the cluster has one

    def save(self) -> None:
        data = asdict(self)
        data["kubeconfig"] = str(self.kubeconfig)
        data["state_dir"] = str(self.state_dir)
        (self.state_dir / INFO_FILE).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> ClusterInfo:
        data: dict[str, Any] = json.loads(path.read_text())
        return cls(
            kubeconfig=Path(data["kubeconfig"]),
            prometheus_url=data.get("prometheus_url"),
            node_names=list(data.get("node_names", [])),
            state_dir=Path(data["state_dir"]),
            groups=[(str(n), int(g)) for n, g in data.get("groups", [])],
            real_node=data.get("real_node"),
        )


class LocalCluster:
    """A cluster on loopback; see the module docstring."""

    def __init__(
        self,
        state_dir: Path,
        *,
        detached: bool = False,
        nodes: int = 2,
        gpus: int = 2,
        real_node: bool = False,
    ) -> None:
        """``nodes`` process nodes (0 for none) and, with ``real_node``, one kubelet node."""
        self.state_dir = state_dir
        self.detached = detached
        self.nodes = nodes
        self.gpus = gpus
        self.want_real_node = real_node
        self.real_node: RealNode | None = None
        self.control_plane: ControlPlane | None = None
        self.extra: list[ManagedProcess] = []
        self.info: ClusterInfo | None = None
        self._stopped = False
        self._lock = threading.Lock()
        self._previous_handlers: dict[int, Any] = {}

    def start(self, timeout: float = 120.0, attempts: int = 2) -> ClusterInfo:
        """Start everything; retry once if a component dies at start-up.

        Ports are picked free but bound later by the component, so another process
        on the machine can take one in between; a second attempt picks new ones.
        """
        binaries = find_binaries()
        if not self.detached:
            self._install_cleanup()
        started = time.monotonic()
        try:
            for attempt in range(1, attempts + 1):
                try:
                    return self._start(binaries, timeout)
                except ComponentDiedError as err:
                    if attempt == attempts:
                        raise
                    print(f"test cluster: retrying start-up after: {err}", file=sys.stderr)
                    self._stop_processes()
                    cleanup_host(self.state_dir)
                    for name in ("etcd", "pki", "prometheus"):  # never other sessions' folders
                        shutil.rmtree(self.state_dir / name, ignore_errors=True)
            raise AssertionError("unreachable")
        except BaseException:
            self.stop()
            raise
        finally:
            elapsed = time.monotonic() - started
            print(f"test cluster: start took {elapsed:.1f}s ({self.state_dir})", file=sys.stderr)

    def _start(self, binaries: Binaries, timeout: float) -> ClusterInfo:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        die = not self.detached
        pki: Pki | None = None
        if self.want_real_node:
            # Before the API server starts: it binds the bridge's address.
            prepare_host(self.state_dir)
            pki = Pki(self.state_dir / "pki" / "node")
            pki.create_ca()
            self.control_plane = ControlPlane(
                binaries,
                self.state_dir,
                die_with_parent=die,
                address=BRIDGE_IP,
                apiserver_args=apiserver_args(pki),
            )
        else:
            self.control_plane = ControlPlane(binaries, self.state_dir, die_with_parent=die)
        endpoint = self.control_plane.start(timeout)
        prometheus, url = start_prometheus(
            binaries.prometheus, endpoint, self.state_dir, die, timeout
        )
        self.extra.append(prometheus)
        if self.nodes > 0:
            agent = self._start_node_agent(die, timeout, endpoint)
            self.extra.append(agent)
        node_names = [f"{NODE_PREFIX}{i}" for i in range(self.nodes)]
        real_processes: list[ManagedProcess] = []
        if pki is not None:
            self.real_node = RealNode(self.state_dir, pki, die_with_parent=die, gpus=self.gpus)
            self.real_node.start(endpoint, timeout)
            real_processes = self.real_node.processes
            node_names.append(NODE_NAME)
        processes = [*self.control_plane.processes, *self.extra, *real_processes]
        self.info = ClusterInfo(
            kubeconfig=self.control_plane.kubeconfig,
            prometheus_url=url,
            node_names=node_names,
            state_dir=self.state_dir,
            groups=[(p.name, p.pid) for p in processes],
            real_node=NODE_NAME if pki is not None else None,
        )
        self.info.save()
        return self.info

    def restart(self, component: str, timeout: float = 90.0) -> None:
        """Restart one control-plane component (``etcd``, ``kube-apiserver``, ...) in
        place and record its new process group, so that ``cluster-down`` still finds it."""
        assert self.control_plane is not None
        assert self.info is not None
        proc = self.control_plane.restart(component, timeout)
        self.info.groups = [
            (name, proc.pid if name == component else pgid) for name, pgid in self.info.groups
        ]
        self.info.save()

    def _start_node_agent(self, die: bool, timeout: float, endpoint: ApiEndpoint) -> ManagedProcess:
        assert self.control_plane is not None
        env = {**os.environ, "PATH": tool_path(), "PYTHONPATH": str(REPO_ROOT)}
        env.pop("KUBECONFIG", None)
        # A random /16 per cluster so that two clusters on one machine rarely share pod IPs.
        cidr = f"127.{random.randint(1, 250)}.0.0/16"
        agent = ManagedProcess(
            "node-agent",
            [
                sys.executable,
                "-m",
                "tests.cluster.node_agent",
                f"--kubeconfig={self.control_plane.kubeconfig}",
                f"--state-dir={self.state_dir}",
                f"--workdir={REPO_ROOT}",
                f"--nodes={self.nodes}",
                f"--gpus={self.gpus}",
                f"--pod-cidr={cidr}",
                f"--kubelet-version={K8S_VERSION}",
            ],
            self.state_dir / "logs" / "node-agent.log",
            env=env,
            cwd=REPO_ROOT,
            die_with_parent=die,
        )
        agent.start()
        names = [f"{NODE_PREFIX}{i}" for i in range(self.nodes)]

        def nodes_ready() -> bool:
            for name in names:
                status, body = endpoint.get(f"/api/v1/nodes/{name}")
                if status != 200:
                    return False
                conditions = json.loads(body).get("status", {}).get("conditions", [])
                if not any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                    return False
            return True

        wait_until("node agent", nodes_ready, timeout, agent.check_alive)
        return agent

    # Cleanup.
    def _install_cleanup(self) -> None:
        atexit.register(self.stop)
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._previous_handlers[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stop()
        previous = self._previous_handlers.get(signum)
        signal.signal(signum, previous if callable(previous) else signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def stop(self) -> None:
        """Stop everything started so far (idempotent); the node agent first, etcd last."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._stop_processes()
        for sig, handler in self._previous_handlers.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)
        with contextlib.suppress(ValueError):
            atexit.unregister(self.stop)
        if not self.detached:
            for name in DISPOSABLE:
                shutil.rmtree(self.state_dir / name, ignore_errors=True)

    def _stop_processes(self) -> None:
        if self.real_node is not None:
            self.real_node.stop()
            self.real_node = None
        for proc in reversed(self.extra):
            proc.stop(grace=15.0)
        self.extra.clear()
        if self.control_plane is not None:
            self.control_plane.stop()
        kill_marked_processes(MARKER_ENV, str(self.state_dir))
        # The real node's host side effects (bridge, cgroups, nft, sysctls, ...).
        cleanup_host(self.state_dir)


def _same_program(pgid: int, name: str) -> bool:
    """Guard against pid reuse: the recorded group leader must still be that component."""
    try:
        cmdline = Path(f"/proc/{pgid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    token = "tests.cluster.node_agent" if name == "node-agent" else name
    return token.encode() in cmdline


def stop_recorded(state_dir: Path) -> bool:
    """Stop a detached cluster from its cluster.json; False if none was recorded."""
    path = state_dir / INFO_FILE
    if not path.exists():
        return False
    info = ClusterInfo.load(path)
    for name, pgid in reversed(info.groups):
        if name == "containerd":
            # Its shims outlive it: containers go first (the kubelet is stopped by now).
            remove_containers(str(info.state_dir / "containerd" / "containerd.sock"))
        if _same_program(pgid, name):
            stop_group(pgid, grace=15.0)
    kill_marked_processes(MARKER_ENV, str(info.state_dir))
    cleanup_host(info.state_dir)
    path.unlink()
    for name in DISPOSABLE:
        shutil.rmtree(state_dir / name, ignore_errors=True)
    return True


def recorded_alive(state_dir: Path) -> ClusterInfo | None:
    """The detached cluster in ``state_dir`` if all of its components still run."""
    path = state_dir / INFO_FILE
    if not path.exists():
        return None
    info = ClusterInfo.load(path)
    if info.groups and all(_same_program(pgid, name) for name, pgid in info.groups):
        return info
    return None


def session_state_dir() -> Path:
    """A per-process folder under .cluster/, pruning those of dead test sessions."""
    STATE_ROOT.mkdir(exist_ok=True)
    for old in STATE_ROOT.glob("pytest-*"):
        pid = old.name.removeprefix("pytest-")
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            cleanup_host(old)  # a crashed session's real node, if it had one
            shutil.rmtree(old, ignore_errors=True)
    folder = STATE_ROOT / f"pytest-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def existing_cluster(kubeconfig: Path) -> ClusterInfo:
    """Describe a cluster someone else runs (``RHEOSTAT_TEST_KUBECONFIG``).

    If the kubeconfig sits next to a cluster.json (``make cluster-up``), that file
    supplies the Prometheus URL and node names; otherwise ``RHEOSTAT_TEST_PROMETHEUS_URL``
    does, and the node names are read from the cluster by the fixture.
    """
    recorded = kubeconfig.parent / INFO_FILE
    if recorded.exists():
        info = ClusterInfo.load(recorded)
        info.groups = []
        return info
    return ClusterInfo(
        kubeconfig=kubeconfig,
        prometheus_url=os.environ.get("RHEOSTAT_TEST_PROMETHEUS_URL"),
        node_names=[],
        state_dir=kubeconfig.parent,
    )
