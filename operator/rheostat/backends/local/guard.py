"""Trials end with the tuner, however the tuner ends.

Each trial runs in its own process group (so that stopping it stops what it
spawned), which also means nothing ends it when `rheostat run` is killed with
SIGKILL or crashes: trainers went on with ppid 1, holding GPU memory, and a resume
started the same parameters beside them. A parent-death signal would reach only
the trainer itself, not its children, and would fire when the spawning *thread*
ends; so a tiny guard process holds the list of live trial groups instead. It reads
that list from a pipe whose only writer is the tuner: when the tuner dies, however
it dies, the kernel closes the pipe, the guard reads end-of-file and SIGKILLs every
group still on the list (the ask worker's pidfd watcher, turned inside out: the
trainers are the user's code, so the watching cannot run inside them).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from types import TracebackType

# The guard itself: standard library only, started with -I -S so it costs a few MB
# and a few milliseconds. "+pgid" adds a group, "-pgid" removes it; at end-of-file
# (the tuner has closed the pipe, or died) every group left is killed.
GUARD_SCRIPT = """
import os, signal, sys
groups = set()
for line in sys.stdin:
    (groups.add if line[0] == "+" else groups.discard)(int(line[1:]))
for group in groups:
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
"""

# How long closing waits for a guard that has nothing left to kill.
CLOSE_SECONDS = 5.0


class GroupGuard:
    """Kills the trials' process groups if the tuner ends without stopping them.

    :meth:`watch` a group as soon as its trial starts and :meth:`forget` it once the
    trial's group has been killed; :meth:`close` when the run ends normally (the
    guard then has nothing left to kill). A guard that itself died only loses this
    protection: the run goes on.
    """

    def __init__(self) -> None:
        read, write = os.pipe()  # not inheritable: no trainer holds the write end
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", GUARD_SCRIPT],
                stdin=read,
                stdout=subprocess.DEVNULL,
                # Its own session: Ctrl-C or a closed terminal must not end it first.
                start_new_session=True,
            )
        except BaseException:
            os.close(write)
            raise
        finally:
            os.close(read)
        self._pipe = os.fdopen(write, "w", buffering=1, encoding="ascii")

    def watch(self, group: int) -> None:
        self._send(f"+{group}\n")

    def forget(self, group: int) -> None:
        self._send(f"-{group}\n")

    def _send(self, line: str) -> None:
        if self._pipe.closed:
            return
        with contextlib.suppress(OSError):  # the guard is gone: nothing to tell
            self._pipe.write(line)

    def close(self) -> None:
        """End the guard; any group still watched is killed (none after a clean stop)."""
        if self._pipe.closed:
            return
        with contextlib.suppress(OSError):
            self._pipe.close()
        try:
            self._process.wait(CLOSE_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> GroupGuard:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
