"""The GP ask worker as a container of its own, and how the operator reaches it.

The `bayesian` sampler is Optuna's GPSampler, written in torch (6 GB with PyPI's CUDA
wheel). The operator image carries no torch, so that an operator pulled onto a CPU
node, restarted and rolled often, stays small. The GP's asks already run out of
process (ask_worker.py); here that process pool runs in another container of the
operator pod, from an image that has torch (`rheostat gp-worker`, gp-worker.Dockerfile),
and the operator hands it each ask over a Unix socket in a volume only the two share.
Nothing outside the pod can reach the socket, and both sides run the same release of
this code, so the asks travel as the same pickles the local pool uses.

Where asks go (`ask_backend`): to the socket when `RHEOSTAT_GP_WORKER_SOCKET` names
one (the chart sets it with `gpWorker.enabled`); else to a local pool when torch is
installed (a developer's machine, the integration tests); else nowhere, and the
operator refuses `bayesian` studies with a Failed condition that says how to enable
the worker, instead of sampling them at random unsaid.

A worker that dies, hangs or is not there yet costs an ask its model, as before: the
study falls back to independent sampling for that ask, with a warning and a metric.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import threading
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection, Listener

from prometheus_client import CollectorRegistry

from rheostat.backends.kubernetes.ask_worker import (
    ASK_TIMEOUT_SECONDS,
    RESUBMITS,
    AskBackend,
    AskError,
    AskReply,
    AskRequest,
    AskWorker,
)

LOGGER = logging.getLogger(__name__)
SOCKET_ENV = "RHEOSTAT_GP_WORKER_SOCKET"
DEFAULT_SOCKET = "/run/rheostat-gp/ask.sock"
# The worker bounds each ask itself (its pool's timeout, a hung fit is killed there);
# the operator's own bound only catches a worker that stopped answering altogether,
# so it allows for an ask that waited behind others and was resubmitted.
CLIENT_TIMEOUT_SECONDS = float(
    os.environ.get("RHEOSTAT_GP_WORKER_TIMEOUT", str(ASK_TIMEOUT_SECONDS * (RESUBMITS + 2)))
)
NO_GP = (
    "algorithm bayesian needs the GP ask worker, and this operator has none: the "
    "operator image carries no torch. Install the chart with gpWorker.enabled=true "
    "(or choose tpe, which needs no torch)"
)


@dataclass(frozen=True)
class AskFailure:
    """The worker's AskError, as data (an exception with its own __init__ does not
    survive pickling)."""

    reason: str
    detail: str


def ask_backend(registry: CollectorRegistry | None = None) -> AskBackend:
    """Where this operator's model-based asks run (see the module docstring)."""
    path = os.environ.get(SOCKET_ENV, "")
    if path:
        return SocketAskClient(path, registry)
    if importlib.util.find_spec("torch") is not None:
        return AskWorker(registry)
    return NoGP(registry)


class NoGP(AskBackend):
    """No torch here and no worker: model-based studies are refused (`unavailable`)."""

    unavailable = NO_GP

    def ask(self, request: AskRequest) -> AskReply:
        raise AskError("unavailable", NO_GP)


class SocketAskClient(AskBackend):
    """Asks the GP worker container over its Unix socket, one connection per ask.

    Thread-safe (nothing shared between asks). The worker queues and bounds the asks.
    """

    def __init__(
        self,
        path: str,
        registry: CollectorRegistry | None = None,
        *,
        timeout: float = CLIENT_TIMEOUT_SECONDS,
    ) -> None:
        super().__init__(registry)
        self.path = path
        self.timeout = timeout

    def ask(self, request: AskRequest) -> AskReply:
        try:
            with Client(self.path, family="AF_UNIX") as connection:
                connection.send(request)
                if not connection.poll(self.timeout):
                    raise AskError("timeout", f"the GP worker gave no answer in {self.timeout:g} s")
                answer = connection.recv()
        except (OSError, EOFError) as error:
            raise AskError("worker_lost", f"the GP worker at {self.path}: {error!r}") from None
        if isinstance(answer, AskFailure):
            raise AskError(answer.reason, answer.detail)
        if not isinstance(answer, AskReply):
            raise AskError("error", f"the GP worker answered {type(answer).__name__}")
        self.metrics.seconds.observe(answer.seconds)
        return answer


class AskServer:
    """`rheostat gp-worker`: an AskWorker pool behind a Unix socket.

    Each connection is answered in a thread of its own; the pool bounds how many asks
    run at once and how long each may take, as it does inside the operator.
    """

    def __init__(self, path: str, worker: AskWorker | None = None) -> None:
        self.path = path
        self.worker = worker or AskWorker()
        self._closed = threading.Event()
        self._listener: Listener | None = None

    def listen(self) -> None:
        """Start the workers (torch is imported before anyone may connect), then bind.

        A socket left by an earlier run of this container (the volume outlives it)
        is replaced: only one worker serves a pod.
        """
        self.worker.start()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._listener = Listener(self.path, family="AF_UNIX")
        LOGGER.info("GP ask worker listening on %s", self.path)

    def serve_forever(self) -> None:
        assert self._listener is not None, "listen() first"
        while not self._closed.is_set():
            try:
                connection = self._listener.accept()
            except OSError:
                if self._closed.is_set():
                    return
                raise
            if self._closed.is_set():
                connection.close()
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def close(self) -> None:
        """Stop accepting (a connection of our own wakes the accept) and the workers."""
        self._closed.set()
        if self._listener is not None:
            with contextlib.suppress(OSError), Client(self.path, family="AF_UNIX"):
                pass
            self._listener.close()
        self.worker.shutdown()

    def _answer(self, connection: Connection) -> None:
        with connection:
            while True:
                try:
                    request = connection.recv()
                except (EOFError, OSError):
                    return  # the operator hung up (or a probe only connected)
                except Exception as error:  # unpicklable: another release of this code
                    reply: AskReply | AskFailure = AskFailure(
                        "error", f"cannot read the ask: {error!r}"
                    )
                else:
                    reply = self._reply(request)
                try:
                    connection.send(reply)
                except OSError:
                    return  # the operator gave up waiting (its own timeout) and hung up

    def _reply(self, request: object) -> AskReply | AskFailure:
        if not isinstance(request, AskRequest):
            return AskFailure("error", f"not an ask: {type(request).__name__}")
        try:
            return self.worker.ask(request)
        except AskError as failure:
            return AskFailure(failure.reason, str(failure))
        except Exception as error:  # nothing the worker does may end the connection
            return AskFailure("error", f"{type(error).__name__}: {error}")


def serve(path: str) -> int:
    """Run the GP worker until the container is stopped."""
    logging.basicConfig(level=logging.INFO)
    server = AskServer(path)
    server.listen()
    try:
        server.serve_forever()
    finally:
        server.close()
    return 0
