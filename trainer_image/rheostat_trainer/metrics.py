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
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server

from rheostat_trainer._env import objectives, speaks_for_trial, termination_path

__all__ = ["MAX_TERMINATION_BYTES", "REGISTRY", "encode_float", "finish", "fit_result", "report"]

log = logging.getLogger(__name__)

#: The kubelet truncates termination messages beyond this.
MAX_TERMINATION_BYTES = 4096
#: Significant digits kept of the metrics that are no objective, when all do not fit.
ROUNDED_DIGITS = 4

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

    On a rank other than global rank 0 (``RANK``, ``NODE_RANK``, ``LOCAL_RANK``) it
    does nothing: rank 0 speaks for the trial, so user code need not branch.
    """
    global _last_step  # noqa: PLW0603 - the SDK is process-wide state by design
    if not speaks_for_trial():
        return
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


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _size(payload: Mapping[str, Any]) -> int:
    return len(_json(payload).encode())


def _refuse(size: int) -> ValueError:
    return ValueError(
        f"termination message is {size} bytes, more than {MAX_TERMINATION_BYTES}: "
        "report fewer metrics in finish()"
    )


def write_termination_message(payload: Mapping[str, Any]) -> str | None:
    """Serialise ``payload`` compactly and write it where the tuner reads it.

    Returns the path written, or ``None`` when there is nowhere to write (a run
    by hand). Raises ``ValueError`` if the message exceeds 4096 bytes, since the
    kubelet would silently truncate it into invalid JSON. On a rank other than
    global rank 0 nothing is written (``None``): rank 0's message is the trial's.
    """
    if not speaks_for_trial():
        return None
    text = _json(payload)
    size = len(text.encode())
    if size > MAX_TERMINATION_BYTES:
        raise _refuse(size)
    path = termination_path()
    if path is None:
        log.info("rheostat: no termination-message path; result not written: %s", text)
        return None
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


def _rounded(value: float) -> float:
    return float(f"{value:.{ROUNDED_DIGITS}g}") if math.isfinite(value) else value


def fit_result(final: Mapping[str, float], step: int, keep: Sequence[str]) -> dict[str, Any]:
    """The result message for ``final`` within 4096 bytes, with a warning if it had to cut.

    Everything, exactly, when it fits. Otherwise the metrics named in ``keep`` (the
    study's objectives) stay exact, and the others are rounded to ROUNDED_DIGITS
    significant digits and kept, in their order, while they fit: a trial that
    trained well must not be lost for a per-class metric it logged in passing.
    Raises ``ValueError`` only when the kept metrics alone do not fit.
    """
    payload = {"metrics": {k: encode_float(v) for k, v in final.items()}, "step": step}
    full = _size(payload)
    if full <= MAX_TERMINATION_BYTES:
        return payload
    exact = {k: encode_float(v) for k, v in final.items() if k in keep}
    room = MAX_TERMINATION_BYTES - _size({"metrics": exact, "step": step})
    if room < 0:
        raise _refuse(MAX_TERMINATION_BYTES - room)
    chosen = dict(exact)
    dropped = []
    for name, value in final.items():
        if name in exact:
            continue
        short = encode_float(_rounded(value))
        cost = _size({name: short})  # its two braces pay for the ':' and the ','
        if cost <= room:
            chosen[name] = short
            room -= cost
        else:
            dropped.append(name)
    log.warning(
        "rheostat: the termination message would be %d bytes, more than %d: kept %s "
        "exactly, rounded the other metrics to %d significant digits and dropped %d%s; "
        "pass finish() only the metrics the study needs",
        full,
        MAX_TERMINATION_BYTES,
        f"the objectives {sorted(exact)}" if exact else "no objective (none named)",
        ROUNDED_DIGITS,
        len(dropped),
        f" ({', '.join(dropped[:3])}{', ...' if len(dropped) > 3 else ''})" if dropped else "",
    )
    return {"metrics": {k: chosen[k] for k in final if k in chosen}, "step": step}


def finish(**metrics: float) -> None:
    """Write the trial's final result: ``{"metrics": {...}, "step": <last step>}``.

    Goes to ``RHEOSTAT_TERMINATION_MESSAGE_PATH``, else ``/dev/termination-log``
    when the kubelet created it. Non-finite values are written as the strings
    ``"nan"``, ``"inf"`` and ``"-inf"`` (valid JSON, and detectable). With no
    keywords, the last reported values are used. ``step`` is the step of the last
    :func:`report` (0 if there was none). The gauges are updated too, so a
    scrape after the end agrees with the message.

    The message holds at most 4096 bytes (the kubelet's limit). Beyond that the
    study's objectives (``RHEOSTAT_OBJECTIVES``) are kept exactly and the other
    metrics rounded or dropped, with a warning (:func:`fit_result`). Only global
    rank 0 writes (see :func:`report`).
    """
    if not speaks_for_trial():
        return
    with _lock:
        final = dict(_last_metrics) if not metrics else {k: float(v) for k, v in metrics.items()}
        for name, value in final.items():
            _METRIC.labels(metric=name).set(value)
            _last_metrics[name] = value
        step = _last_step if _last_step is not None else 0
    write_termination_message(fit_result(final, step, objectives()))


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
