"""One `rheostat run` per work folder at a time.

A second run on the same folder would resume the same SQLite study: it closes the
first run's running trials as interrupted, starts them again, and the first run then
fails writing to trials that are no longer its own. So a run holds an exclusive
``flock`` on a file in the folder for as long as it lives. The kernel drops the lock
when the process ends, however it ends (SIGKILL, a crash), so a stale lock file never
blocks the next run; the pid written into it only serves the error message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import IO

LOCK_FILE = "run.lock"


class WorkdirBusyError(Exception):
    """Another live `rheostat run` holds the work folder."""


class WorkdirLock:
    """An exclusive, non-blocking lock on a work folder, held until :meth:`release`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.path = workdir / LOCK_FILE
        self._handle: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`WorkdirBusyError` at once (never wait: a
        second run waiting for the first would silently run the study twice over)."""
        if self._handle is not None:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        # "a+": opening must not truncate the pid of a run that holds the lock.
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            by = f" (pid {holder})" if holder.isdigit() else ""
            raise WorkdirBusyError(
                f"{self.workdir} is in use by another `rheostat run`{by}; wait for it to "
                "end (or stop it), or use another --workdir."
            ) from None
        except BaseException:
            handle.close()
            raise
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        """Let the next run in. The file stays: removing it would race with a run that
        has just opened it and would then lock a file no one else can see."""
        handle, self._handle = self._handle, None
        if handle is None:
            return
        with contextlib.suppress(OSError):
            handle.seek(0)
            handle.truncate()
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()

    def __enter__(self) -> WorkdirLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
