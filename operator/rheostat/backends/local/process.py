"""One trial as a local process: the pod template's command, run on this machine.

The process gets the same env contract a pod would, its own termination-message
file and a free port on 127.0.0.1 for its metrics. It runs in its own process group
so that stopping it (pruning, timeout, Ctrl-C) also stops anything it spawned.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rheostat.contract import parse_termination_message
from rheostat.spec import Container

# After SIGTERM a trial gets this long to exit before SIGKILL (a pod's default is 30 s;
# locally nothing needs to drain, so be brisk).
GRACE_SECONDS = 5.0


def free_port() -> int:
    """A port nothing listens on right now (the trial binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_termination_message(path: Path) -> dict[str, Any] | None:
    """The JSON a trainer wrote with finish(), or None when there is none."""
    try:
        return parse_termination_message(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


@dataclass
class TrialProcess:
    """A running trial process and where its outputs go."""

    number: int
    process: subprocess.Popen[bytes]
    directory: Path
    port: int
    log: IO[bytes]
    stop_sent_at: float | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    @property
    def termination_path(self) -> Path:
        return self.directory / "termination-message.json"

    @property
    def log_path(self) -> Path:
        return self.directory / "log.txt"

    @classmethod
    def start(
        cls, number: int, container: Container, env: dict[str, str], directory: Path
    ) -> TrialProcess:
        """Spawn the container's command with the contract env layered over ours."""
        directory.mkdir(parents=True, exist_ok=True)
        termination = directory / "termination-message.json"
        termination.unlink(missing_ok=True)
        port = free_port()
        full_env = dict(os.environ)
        # The trainer must import the same packages as this tuner, venv or not.
        full_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full_env.get('PATH', '')}"
        for variable in container.env or []:
            if variable.value is not None:
                full_env[variable.name] = variable.value
        full_env |= env
        full_env |= {
            "RHEOSTAT_METRICS_PORT": str(port),
            "POD_IP": "127.0.0.1",
            "RHEOSTAT_TERMINATION_MESSAGE_PATH": str(termination),
            "PYTHONUNBUFFERED": "1",
        }
        argv = [*(container.command or []), *(container.args or [])]
        log = (directory / "log.txt").open("ab")
        process = subprocess.Popen(
            argv,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        return cls(number=number, process=process, directory=directory, port=port, log=log)

    def poll(self) -> int | None:
        return self.process.poll()

    def stop(self) -> None:
        """SIGTERM the process group now; :meth:`reap` sends SIGKILL after the grace period."""
        if self.stop_sent_at is None and self.process.poll() is None:
            self._signal(signal.SIGTERM)
            self.stop_sent_at = time.monotonic()

    def reap(self) -> bool:
        """Escalate to SIGKILL when the grace period is over; True once the process is gone."""
        if self.process.poll() is not None:
            self.log.close()
            return True
        if self.stop_sent_at is not None and time.monotonic() - self.stop_sent_at > GRACE_SECONDS:
            self._signal(signal.SIGKILL)
        return False

    def kill_now(self) -> None:
        """Stop within the grace period, blocking; used when the tuner itself exits."""
        self.stop()
        deadline = time.monotonic() + GRACE_SECONDS
        while self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.process.poll() is None:
            self._signal(signal.SIGKILL)
            self.process.wait()
        self.log.close()

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def tail(self, lines: int = 5) -> str:
        """The end of the trial's log, to say why it failed."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])
