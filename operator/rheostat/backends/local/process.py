"""One trial as a local process: the pod template's command, run on this machine.

The process gets the same env contract a pod would, its own termination-message
file and a free port on 127.0.0.1 for its metrics. It runs in its own process group
so that stopping it (pruning, timeout, Ctrl-C) also stops anything it spawned, and
once its main process has exited, whatever it left in that group is killed, as a
pod's container would be. A :class:`GroupGuard` kills the group should the tuner
die first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rheostat.backends.local.guard import GroupGuard
from rheostat.contract import MAX_TERMINATION_MESSAGE_BYTES, parse_termination_message
from rheostat.spec import Container

# After SIGTERM a trial gets this long to exit before SIGKILL (a pod's default is 30 s;
# locally nothing needs to drain, so be brisk).
GRACE_SECONDS = 5.0


# How much of a failed trial's log is read, from its end, to say why it failed.
TAIL_BYTES = 64 * 1024

# How often a port allocator asks the kernel again when it repeats a port still held.
PORT_ATTEMPTS = 100


def free_port() -> int:
    """A port nothing listens on right now (the trial binds it moments later).

    Only a probe: the port is free when this returns, not reserved. Two calls can
    return the same number, so trials get their ports from a :class:`PortAllocator`.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PortAllocator:
    """Hands every live trial of one run its own metrics port.

    Binding port 0 and closing the socket tells us a port that is free *now*; the
    kernel may hand the very same number out again a moment later (it did, 2 times in
    20,000 back-to-back pairs), before the first trial has bound it. Two parallel
    trials would then serve metrics on one port and one of them would fail or be
    scraped for the other. So the allocator remembers the ports of trials still alive
    and asks again whenever the kernel repeats one; a port comes back only once the
    trial that held it has exited.
    """

    def __init__(self, probe: Callable[[], int] = free_port, attempts: int = PORT_ATTEMPTS) -> None:
        self._probe = probe
        self._attempts = attempts
        self._held: set[int] = set()

    @property
    def held(self) -> frozenset[int]:
        """The ports handed to trials that have not been released yet."""
        return frozenset(self._held)

    def allocate(self) -> int:
        """A free port that no live trial of this run holds; it stays held until released."""
        for _ in range(self._attempts):
            port = self._probe()
            if port not in self._held:
                self._held.add(port)
                return port
        raise OSError(
            f"no free port for a trial's metrics after {self._attempts} tries "
            f"({len(self._held)} held by running trials)"
        )

    def release(self, port: int) -> None:
        """The trial holding `port` has exited: the port may be handed out again."""
        self._held.discard(port)


def trial_path(container: Container) -> str:
    """The PATH a trial process gets: this interpreter's folder first (so that
    ``python`` is the tuner's own, venv or not), or the container's own PATH if its
    env sets one. Used both to start the trial and to check its command beforehand."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    for variable in container.env or []:
        if variable.name == "PATH" and variable.value is not None:
            path = variable.value
    return path


def command_problem(container: Container) -> str | None:
    """Why the container's command cannot be started here, or None when it can.

    Checked before a study starts, so that a typo (``pythn``) is one clear message
    instead of a traceback, or of a failed trial per attempt recorded in the study.
    The lookup is the one ``subprocess`` does: a bare name is searched on the trial's
    PATH, a name with a slash is taken relative to the current folder.
    """
    if not container.command:
        return None
    executable = container.command[0]
    if os.sep in executable or (os.altsep and os.altsep in executable):
        if shutil.which(executable) is None:
            return f"{executable!r} is not an executable file"
        return None
    if shutil.which(executable, path=trial_path(container)) is None:
        return f"{executable!r} was not found (is it on PATH?)"
    return None


def read_termination_message(path: Path) -> dict[str, Any] | None:
    """The JSON a trainer wrote with finish(), or None when there is none.

    Reads one byte past the cap at most: a runaway trainer may write gigabytes there,
    and anything over the cap is unusable anyway.
    """
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_TERMINATION_MESSAGE_BYTES + 1)
    except FileNotFoundError:
        return None
    return parse_termination_message(raw.decode("utf-8", errors="replace"))


class TrialStartError(Exception):
    """The trial's command could not be started at all (not found, not executable)."""


@dataclass
class TrialProcess:
    """A running trial process and where its outputs go."""

    number: int
    process: subprocess.Popen[bytes]
    directory: Path
    port: int
    log: IO[bytes]
    ports: PortAllocator
    guard: GroupGuard | None = None
    started_at: float = field(default_factory=time.monotonic)
    stop_sent_at: float | None = None
    _closed: bool = field(default=False, repr=False)

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
        cls,
        number: int,
        container: Container,
        env: dict[str, str],
        directory: Path,
        ports: PortAllocator,
        *,
        guard: GroupGuard | None = None,
    ) -> TrialProcess:
        """Spawn the container's command with the contract env layered over ours.

        Raises :class:`TrialStartError` when the command cannot be executed; the port
        and the log are given back first, so nothing is left half-started.
        """
        directory.mkdir(parents=True, exist_ok=True)
        termination = directory / "termination-message.json"
        termination.unlink(missing_ok=True)
        full_env = dict(os.environ)
        # The trainer must import the same packages as this tuner, venv or not.
        full_env["PATH"] = trial_path(container)
        for variable in container.env or []:
            if variable.value is not None:
                full_env[variable.name] = variable.value
        full_env |= env
        port = ports.allocate()
        full_env |= {
            "RHEOSTAT_METRICS_PORT": str(port),
            "POD_IP": "127.0.0.1",
            "RHEOSTAT_TERMINATION_MESSAGE_PATH": str(termination),
            "PYTHONUNBUFFERED": "1",
        }
        argv = [*(container.command or []), *(container.args or [])]
        try:
            log = (directory / "log.txt").open("ab")
        except BaseException:
            ports.release(port)
            raise
        try:
            process = subprocess.Popen(
                argv,
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException as error:
            log.close()
            ports.release(port)
            if isinstance(error, OSError):
                raise TrialStartError(
                    f"could not start the trainer's command {argv[0]!r}: {error.strerror or error}"
                ) from error
            raise
        if guard is not None:
            guard.watch(process.pid)
        return cls(
            number=number,
            process=process,
            directory=directory,
            port=port,
            log=log,
            ports=ports,
            guard=guard,
        )

    def poll(self) -> int | None:
        """The exit code once the process has ended (and then its port is free again)."""
        code = self.process.poll()
        if code is not None:
            self._close()
        return code

    def stop(self) -> None:
        """SIGTERM the process group now; :meth:`reap` sends SIGKILL after the grace period."""
        if self.stop_sent_at is None and self.process.poll() is None:
            self._signal(signal.SIGTERM)
            self.stop_sent_at = time.monotonic()

    def reap(self) -> bool:
        """Escalate to SIGKILL when the grace period is over; True once the process is gone."""
        if self.poll() is not None:
            return True
        if self.stop_sent_at is not None and time.monotonic() - self.stop_sent_at > GRACE_SECONDS:
            self.kill()
        return False

    def kill(self) -> None:
        """SIGKILL the process group now, without waiting (safe from a signal handler)."""
        if self.process.returncode is None:
            self._signal(signal.SIGKILL)

    def wait(self, deadline: float | None = None) -> bool:
        """Block until the process has exited, or until `deadline` (monotonic); True
        once it is gone. Waits on the process itself rather than polling a clock."""
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        self._close()
        return True

    def _close(self) -> None:
        """Once the process has exited: kill what it left in its group, close its log
        and give its port back (once).

        The group outlives its leader while any member lives, and its id cannot be
        handed to a new process meanwhile, so the SIGKILL reaches only the trial's
        own leftovers (a data loader, a ``sleep`` in a script); none is an ESRCH.
        """
        if not self._closed:
            self._closed = True
            self._signal(signal.SIGKILL)
            if self.guard is not None:
                self.guard.forget(self.process.pid)
            self.log.close()
            self.ports.release(self.port)

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def tail(self, lines: int = 5) -> str:
        """The end of the trial's log, to say why it failed."""
        return log_tail(self.log_path, lines)


def log_tail(path: Path, lines: int, max_bytes: int = TAIL_BYTES) -> str:
    """The last `lines` lines of a log, reading at most its last `max_bytes`.

    A failed trial's reason and a failed LR range test's error come from here. A
    trainer's log may hold gigabytes (a 595 MB one took the tuner to 2.3 GB when it
    was read whole), and only its end says why it failed; a first line cut by the
    seek is kept as the end of that line.
    """
    try:
        with path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - max_bytes))
            raw = file.read(max_bytes)
    except FileNotFoundError:
        return ""
    text = raw.decode("utf-8", errors="replace")
    return "\n".join(text.strip().splitlines()[-lines:])


def stop_all(processes: Sequence[TrialProcess]) -> None:
    """Stop every process and return only once all of them are gone.

    SIGTERM goes to all of them at once and they share one grace period (stopping
    them one after another would make Ctrl-C take the grace period per trial); who
    is still alive then gets SIGKILL, and every process is waited for, so none is
    left running or unreaped when the tuner exits.
    """
    for process in processes:
        process.stop()
    deadline = time.monotonic() + GRACE_SECONDS
    for process in processes:
        process.wait(deadline)
    for process in processes:
        process.kill()
    for process in processes:
        process.wait()
