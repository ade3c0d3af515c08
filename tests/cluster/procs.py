"""Child processes that never outlive the test run.

Every component (etcd, the Kubernetes binaries, Prometheus, the node agent) runs in
its own process group so that one signal reaches everything it forked. Stopping is
SIGTERM to the group, a grace period, then SIGKILL. Processes started for a pytest
session also get PR_SET_PDEATHSIG, so even a SIGKILLed pytest leaves nothing behind;
``python -m tests.cluster up`` starts them detached instead and ``down`` stops them
by the process-group ids recorded in the state file.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def die_with_parent() -> None:  # pragma: no cover - runs in the child after fork
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class ManagedProcess:
    """One component: a process group with its output in a log file."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    die_with_parent: bool = True
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=die_with_parent if self.die_with_parent else None,  # noqa: PLW1509
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """Raise with the log's tail if the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise ComponentDiedError(self.name, self.proc.returncode, self.log_path)

    def stop(self, grace: float = 10.0) -> None:
        if self.proc is None:
            return
        stop_group(self.proc.pid, grace, wait=self.proc.wait)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


class ComponentDiedError(RuntimeError):
    """A component exited while the cluster needed it."""

    def __init__(self, name: str, code: int, log_path: Path) -> None:
        tail = log_tail(log_path)
        super().__init__(f"{name} exited with code {code}; last log lines:\n{tail}")


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(pgid: int, grace: float, wait: Callable[..., object] | None = None) -> None:
    """SIGTERM a process group, wait up to ``grace`` seconds, then SIGKILL it.

    The group leader may already be reaped while grandchildren live on, so the group
    (not the pid) is what we poll. ``wait`` is the leader's ``Popen.wait`` when we
    are its parent, so it gets reaped instead of lingering as a zombie.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if wait is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                wait(timeout=0.1)
        else:
            time.sleep(0.1)
        if not group_alive(pgid):
            return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    if wait is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            wait(timeout=5)


def kill_marked_processes(marker: str, value: str) -> int:
    """SIGKILL every process whose environment has ``marker=value``; a safety net.

    Pods started by the node agent carry the marker. If the agent itself was killed
    before it could stop them, this is how the harness still finds them.
    """
    needle = f"{marker}={value}".encode()
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
    return killed
