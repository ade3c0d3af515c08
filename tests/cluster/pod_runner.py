"""One pod on the node agent: its processes, its status, its deletion.

A kubelet would create a sandbox and containers; here each container is a local
process group started from ``command``+``args`` (``image`` is ignored) with the
pod's loopback IP in its environment. The termination-message file lives in the
pod's folder and its path is passed as ``RHEOSTAT_TERMINATION_MESSAGE_PATH``,
because we cannot bind-mount it at ``terminationMessagePath``.

Each pod has one thread. It owns the pod's processes and writes the pod's status;
the agent's watch only hands it the latest pod object through :meth:`update`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from kubernetes.client import CoreV1Api, V1DeleteOptions
from kubernetes.client.exceptions import ApiException

from tests.cluster.pod_env import EnvError, Pod, container_argv, container_env
from tests.cluster.procs import group_alive

log = logging.getLogger("node-agent")

HOST_IP = "127.0.0.1"
TERMINATION_ENV = "RHEOSTAT_TERMINATION_MESSAGE_PATH"
MAX_MESSAGE = 4096
MAX_GRACE = 30.0
TERMINAL = ("Succeeded", "Failed")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Agent(Protocol):
    """What a runner needs from the agent that owns it."""

    core: CoreV1Api
    base_env: dict[str, str]
    workdir: Path
    pods_dir: Path

    def lookup(self, kind: str, namespace: str, name: str) -> dict[str, str] | None: ...

    def release(self, runner: PodRunner) -> None: ...


@dataclass
class Container:
    """One container's process and the state Kubernetes should see."""

    spec: dict[str, Any]
    log_path: Path
    message_path: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    restart_count: int = 0
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "Creating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    restart_at: float | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self, uid: str) -> dict[str, Any]:
        running = "running" in self.state
        return {
            "name": self.name,
            "image": self.spec.get("image") or "none",
            "imageID": f"rheostat-node-agent://{self.spec.get('image') or 'none'}",
            "containerID": f"rheostat://{uid}/{self.name}/{self.restart_count}",
            "ready": running,
            "started": running,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }


class PodRunner(threading.Thread):
    """Runs one pod until it is deleted; see the module docstring."""

    def __init__(self, agent: Agent, pod: Pod, pod_ip: str) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.agent = agent
        self.pod = pod
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.pod_ip = pod_ip
        self.folder = agent.pods_dir / self.namespace / self.pod_name
        self.containers: list[Container] = []
        self.phase = "Pending"
        self.start_time = now()
        self.wake = threading.Event()
        self.gone = False  # the pod object no longer exists
        self.shutdown = False  # the agent is stopping
        self.deleting = False  # no more restarts
        self.unsynced = False  # the last status write failed: retry it, as a kubelet does

    # Called from the agent's watch thread.
    def update(self, pod: Pod) -> None:
        self.pod = pod
        self.wake.set()

    def mark_gone(self) -> None:
        self.gone = True
        self.wake.set()

    def stop(self) -> None:
        self.shutdown = True
        self.wake.set()

    # The pod's own thread.
    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod %s/%s: runner failed", self.namespace, self.pod_name)
            self._kill(grace=0)
        finally:
            self.agent.release(self)

    def _run(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for spec in self.pod["spec"].get("containers", []):
            name = spec["name"]
            self.containers.append(
                Container(
                    spec, self.folder / f"{name}.log", self.folder / f"{name}.termination-log"
                )
            )
        for container in self.containers:
            self._start(container)
        self._write_status()
        while True:
            self.wake.wait(0.25 if self.phase not in TERMINAL or self.unsynced else 5.0)
            self.wake.clear()
            if self.shutdown or self.gone:
                self._kill(grace=0 if self.shutdown else 2.0)
                return
            if self.pod["metadata"].get("deletionTimestamp"):
                self._delete()
                return
            if (self.phase not in TERMINAL and self._reap()) or self.unsynced:
                self._write_status()

    def _start(self, container: Container) -> None:
        container.restart_at = None
        container.message_path.write_bytes(b"")
        try:
            env = container_env(self.pod, container.spec, self.pod_ip, HOST_IP, self.agent.lookup)
            argv = container_argv(container.spec, env)
            workdir = Path(container.spec.get("workingDir") or self.agent.workdir)
            full_env = {
                **self.agent.base_env,
                "HOSTNAME": self.pod_name,
                TERMINATION_ENV: str(container.message_path),
                **env,
            }
            with container.log_path.open("ab") as out:
                container.proc = subprocess.Popen(
                    argv,
                    env=full_env,
                    cwd=workdir if workdir.is_dir() else self.agent.workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except (EnvError, OSError, ApiException) as err:
            log.warning(
                "pod %s/%s: cannot start %s: %s", self.namespace, self.pod_name, container.name, err
            )
            container.proc = None
            container.state = {
                "terminated": {
                    "exitCode": 128,
                    "reason": "StartError",
                    "message": str(err)[:MAX_MESSAGE],
                    "startedAt": now(),
                    "finishedAt": now(),
                }
            }
            return
        container.started_at = now()
        container.state = {"running": {"startedAt": container.started_at}}
        log.info(
            "pod %s/%s: started %s pid %d",
            self.namespace,
            self.pod_name,
            container.name,
            container.proc.pid,
        )

    def _terminated(self, container: Container, code: int) -> dict[str, Any]:
        if code < 0:
            code = 128 - code  # killed by a signal: 128 + signal number, as runtimes report
        message = _read(container.message_path)[:MAX_MESSAGE].decode(errors="replace")
        policy = container.spec.get("terminationMessagePolicy")
        if not message and code != 0 and policy == "FallbackToLogsOnError":
            lines = _read(container.log_path).splitlines()[-80:]
            message = b"\n".join(lines)[-2048:].decode(errors="replace")
        state: dict[str, Any] = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": container.started_at,
            "finishedAt": now(),
        }
        if message:
            state["message"] = message
        return {"terminated": state}

    def _reap(self) -> bool:
        """Record exited processes and apply the restart policy; True if anything changed."""
        policy = self.pod["spec"].get("restartPolicy", "Always")
        changed = False
        for c in self.containers:
            if c.proc is not None and c.proc.poll() is not None:
                code = c.proc.returncode
                c.proc = None
                c.state = self._terminated(c, code)
                changed = True
                restart = policy == "Always" or (policy == "OnFailure" and code != 0)
                if restart and not self.deleting:
                    c.restart_at = time.monotonic() + min(10.0, 2.0**c.restart_count)
            if c.restart_at is not None and time.monotonic() >= c.restart_at:
                c.last_state = c.state
                c.restart_count += 1
                self._start(c)
                changed = True
        return changed

    def _compute_phase(self) -> str:
        if any(c.running() or c.restart_at is not None for c in self.containers):
            return "Running"
        codes = [c.state.get("terminated", {}).get("exitCode") for c in self.containers]
        if all(code == 0 for code in codes):
            return "Succeeded"
        return "Failed"

    def _write_status(self) -> None:
        self.phase = self._compute_phase()
        statuses = [c.status(self.uid) for c in self.containers]
        all_ready = all(s["ready"] for s in statuses)
        ts = now()
        done_reason = "PodCompleted" if self.phase in TERMINAL else "ContainersNotReady"

        def condition(kind: str, ok: bool, reason: str = "") -> dict[str, Any]:
            cond: dict[str, Any] = {"type": kind, "status": "True" if ok else "False"}
            cond["lastTransitionTime"] = ts
            if reason and not ok:
                cond["reason"] = reason
            return cond

        status = {
            "phase": self.phase,
            "hostIP": HOST_IP,
            "hostIPs": [{"ip": HOST_IP}],
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
            "startTime": self.start_time,
            "conditions": [
                condition("PodReadyToStartContainers", self.phase not in TERMINAL),
                condition("Initialized", True),
                condition("ContainersReady", all_ready, done_reason),
                condition("Ready", all_ready, done_reason),
            ],
            # Sorted by name, as a real kubelet does: the first is not the trainer's.
            "containerStatuses": sorted(statuses, key=lambda c: str(c["name"])),
        }
        body = {"metadata": {"uid": self.uid}, "status": status}
        try:
            self.agent.core.patch_namespaced_pod_status(self.pod_name, self.namespace, body)
            self.unsynced = False
        except ApiException as err:
            if err.status in (404, 409):
                self.gone = True
            else:
                self.unsynced = True
                log.warning(
                    "pod %s/%s: status update failed: %s", self.namespace, self.pod_name, err.reason
                )
        except Exception as err:  # the API server restarting: refused connections
            self.unsynced = True
            log.warning("pod %s/%s: status update failed: %s", self.namespace, self.pod_name, err)

    def _kill(self, grace: float) -> None:
        """SIGTERM every running container's group, then SIGKILL after ``grace`` seconds."""
        groups = [c.proc.pid for c in self.containers if c.proc is not None and c.running()]
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(group_alive(g) for g in groups):
            for c in self.containers:
                if c.proc is not None:
                    c.proc.poll()
            time.sleep(0.1)
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        for c in self.containers:
            if c.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    c.proc.wait(timeout=5)

    def _delete(self) -> None:
        """Graceful deletion: stop the processes, report how they ended, remove the pod."""
        self.deleting = True
        if self.phase not in TERMINAL:
            grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
            self._kill(grace=min(MAX_GRACE, float(30 if grace is None else grace)))
            for c in self.containers:
                c.restart_at = None
            self._reap()
            self._write_status()
        # A kubelet keeps trying until the pod is gone (the API server may be away).
        while not force_delete(self.agent.core, self.namespace, self.pod_name, self.uid):
            if self.shutdown or self.gone:
                return
            self.wake.wait(0.5)
            self.wake.clear()


def _read(path: Path) -> bytes:
    """A file the container may have removed or never written reads as empty."""
    try:
        return path.read_bytes()
    except OSError:
        return b""


def force_delete(core: CoreV1Api, namespace: str, name: str, uid: str) -> bool:
    """Delete with grace period 0 (what a kubelet does once the containers are gone);
    False when it must be tried again."""
    options = V1DeleteOptions(grace_period_seconds=0, preconditions={"uid": uid})
    try:
        core.delete_namespaced_pod(name, namespace, body=options)
    except ApiException as err:
        if err.status not in (404, 409):
            log.warning("pod %s/%s: delete failed: %s", namespace, name, err.reason)
            return False
    except Exception as err:  # the API server restarting: refused connections
        log.warning("pod %s/%s: delete failed: %s", namespace, name, err)
        return False
    return True
