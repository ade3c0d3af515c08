"""The trial -> tuner half of the contract: Prometheus gauges and the termination message.

Intermediate values are served over HTTP so the tuner (or a Prometheus server)
can scrape them while the trial runs and prune it; the final result goes into
the container's termination message, which survives the process and needs no
network. Both follow ``docs/contracts.md``.

The gauges live in a module-level :class:`~prometheus_client.CollectorRegistry`,
not the global default one, so that importing the SDK into a program that
already exports its own metrics neither collides with nor leaks into them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from rheostat_trainer._env import termination_path

__all__ = ["MAX_TERMINATION_BYTES", "REGISTRY", "encode_float", "finish", "report"]

log = logging.getLogger(__name__)

#: The kubelet truncates termination messages beyond this.
MAX_TERMINATION_BYTES = 4096

REGISTRY = CollectorRegistry(auto_describe=True)
_METRIC = Gauge(
    "rheostat_trial_metric",
    "Latest value of each metric reported by the trial.",
    ["metric"],
    registry=REGISTRY,
)
_STEP = Gauge("rheostat_trial_step", "Step of the latest report().", registry=REGISTRY)

_lock = threading.Lock()
_server: Any = None  # (WSGIServer, Thread) once serving
_serving_tried = False
_last_step: int | None = None
_last_metrics: dict[str, float] = {}


def _serve_once() -> None:
    """Start the HTTP server on the first report, if the tuner gave a port.

    Lazy so that importing the SDK opens no socket. A port that cannot be bound
    is logged, not raised: intermediate values only drive pruning, and the final
    result still reaches the tuner through the termination message.
    """
    global _server, _serving_tried  # noqa: PLW0603 - one server per process by nature
    if _serving_tried:
        return
    _serving_tried = True
    port = os.environ.get("RHEOSTAT_METRICS_PORT", "")
    if not port:
        return
    addr = os.environ.get("POD_IP") or "127.0.0.1"
    try:
        _server = start_http_server(int(port), addr=addr, registry=REGISTRY)
    except (OSError, ValueError) as exc:
        log.error("rheostat: cannot serve metrics on %s:%s: %s", addr, port, exc)


def report(step: int, **metrics: float) -> None:
    """Publish intermediate metrics for ``step`` (an epoch, an iteration, ...).

    Sets ``rheostat_trial_metric{metric="<name>"}`` for each keyword and
    ``rheostat_trial_step``. Non-finite values are published as they are (NaN,
    +Inf): deciding what a diverged trial means is the tuner's job.
    """
    global _last_step  # noqa: PLW0603 - the SDK is process-wide state by design
    with _lock:
        _serve_once()
        for name, value in metrics.items():
            _METRIC.labels(metric=name).set(float(value))
            _last_metrics[name] = float(value)
        _STEP.set(step)
        _last_step = int(step)


def encode_float(value: float) -> float | str:
    """JSON has no NaN/Infinity: encode them as the strings ``"nan"``, ``"inf"``,
    ``"-inf"`` so the message stays valid JSON and the tuner can still tell."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def write_termination_message(payload: Mapping[str, Any]) -> str | None:
    """Serialise ``payload`` compactly and write it where the tuner reads it.

    Returns the path written, or ``None`` when there is nowhere to write (a run
    by hand). Raises ``ValueError`` if the message exceeds 4096 bytes, since the
    kubelet would silently truncate it into invalid JSON.
    """
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    size = len(text.encode())
    if size > MAX_TERMINATION_BYTES:
        raise ValueError(
            f"termination message is {size} bytes, more than {MAX_TERMINATION_BYTES}: "
            "report fewer metrics in finish()"
        )
    path = termination_path()
    if path is None:
        log.info("rheostat: no termination-message path; result not written: %s", text)
        return None
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


def finish(**metrics: float) -> None:
    """Write the trial's final result: ``{"metrics": {...}, "step": <last step>}``.

    Goes to ``RHEOSTAT_TERMINATION_MESSAGE_PATH``, else ``/dev/termination-log``
    when the kubelet created it. Non-finite values are written as the strings
    ``"nan"``, ``"inf"`` and ``"-inf"`` (valid JSON, and detectable). With no
    keywords, the last reported values are used. ``step`` is the step of the last
    :func:`report` (0 if there was none). The gauges are updated too, so a
    scrape after the end agrees with the message.
    """
    with _lock:
        final = dict(_last_metrics) if not metrics else {k: float(v) for k, v in metrics.items()}
        for name, value in final.items():
            _METRIC.labels(metric=name).set(value)
            _last_metrics[name] = value
        step = _last_step if _last_step is not None else 0
    payload = {"metrics": {k: encode_float(v) for k, v in final.items()}, "step": step}
    write_termination_message(payload)


def _reset_for_tests() -> None:
    """Forget values and stop the server (tests run many "trials" in one process)."""
    global _server, _serving_tried, _last_step  # noqa: PLW0603
    with _lock:
        if _server is not None:
            server, thread = _server
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
        _server = None
        _serving_tried = False
        _last_step = None
        _last_metrics.clear()
        _METRIC.clear()
        _STEP.set(0)
