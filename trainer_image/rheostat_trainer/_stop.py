"""SIGTERM -> ``should_stop()``: let a pruned or timed-out trial end its loop cleanly.

The tuner stops a trial with SIGTERM and, after a grace period, SIGKILL. Python's
default for SIGTERM is to die at once, which loses the chance to write a final
result. The handler is installed on the first call to :func:`should_stop`, not on
import: a trainer that never asks keeps the default (die at once) instead of
silently ignoring SIGTERM until the SIGKILL. A second SIGTERM restores the old
disposition and re-delivers the signal, so an impatient sender still gets its way.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

__all__ = ["should_stop"]

_stop = threading.Event()
_lock = threading.Lock()
_installed = False
_previous: Any = signal.SIG_DFL


def _handle(signum: int, frame: FrameType | None) -> None:
    previous = _previous
    if callable(previous):
        previous(signum, frame)
    if _stop.is_set() and not callable(previous):
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    _stop.set()


def _install() -> None:
    """Install the handler once, from the main thread only (``signal.signal`` raises
    ``ValueError`` elsewhere); other threads just read the flag."""
    global _installed, _previous  # noqa: PLW0603 - one process-wide handler by nature
    with _lock:
        if _installed or threading.current_thread() is not threading.main_thread():
            return
        _previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _handle)
        _installed = True


def should_stop() -> bool:
    """True once the process got SIGTERM: finish the current step, ``finish()``, exit.

    Safe to call from any thread; the first call from the main thread installs the
    handler. Call it once before the loop starts to be covered from the start.
    """
    if not _installed:
        _install()
    return _stop.is_set()
