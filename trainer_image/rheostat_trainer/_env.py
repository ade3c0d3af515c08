"""Read the tuner -> trial half of the contract (``docs/contracts.md``): env vars only.

The tuner never rewrites the user's command, so everything a trial needs to know
(its parameters, its mode, where to serve metrics and write its result) arrives
in the environment. Keeping the parsing here gives one place that knows the
variable names.
"""

from __future__ import annotations

import json
import os
from typing import Any, Literal

__all__ = [
    "EnvError",
    "mode",
    "objectives",
    "params",
    "speaks_for_trial",
    "study_name",
    "trial_number",
]

Mode = Literal["trial", "lr-range-test"]
_MODES: tuple[Mode, ...] = ("trial", "lr-range-test")
_PARAM_PREFIX = "RHEOSTAT_PARAM_"


class EnvError(RuntimeError):
    """The process was not started with the env contract it needs."""


def _parse_scalar(text: str) -> Any:
    """``RHEOSTAT_PARAM_*`` values are strings; numbers and booleans come as JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def params() -> dict[str, Any]:
    """The trial's parameters ``{name: value}``.

    Read from ``RHEOSTAT_PARAMS`` (a JSON object, the exact names and types). If
    it is absent, rebuilt from the ``RHEOSTAT_PARAM_<NAME>`` variables; those
    names were upper-cased and mangled by the tuner, so the keys come back
    lower-cased (``RHEOSTAT_PARAM_BATCH_SIZE`` -> ``batch_size``) and the values
    are parsed as JSON when they look like JSON (``0.1``, ``3``, ``true``) and
    kept as strings otherwise.

    Raises:
        EnvError: neither form is present, or ``RHEOSTAT_PARAMS`` is not a JSON object.
    """
    raw = os.environ.get("RHEOSTAT_PARAMS")
    if raw is not None:
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise EnvError(f"RHEOSTAT_PARAMS is not valid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise EnvError(f"RHEOSTAT_PARAMS must be a JSON object, got {type(value).__name__}")
        return value
    found = {
        key[len(_PARAM_PREFIX) :].lower(): _parse_scalar(val)
        for key, val in os.environ.items()
        if key.startswith(_PARAM_PREFIX) and len(key) > len(_PARAM_PREFIX)
    }
    if not found:
        raise EnvError(
            "no parameters: neither RHEOSTAT_PARAMS nor any RHEOSTAT_PARAM_<NAME> is set "
            "(is this process running under the rheostat tuner?)"
        )
    return found


def mode() -> Mode:
    """``"trial"`` or ``"lr-range-test"`` from ``RHEOSTAT_MODE``; ``"trial"`` when unset,
    so a trainer also runs by hand."""
    value = os.environ.get("RHEOSTAT_MODE", "trial")
    for known in _MODES:
        if value == known:
            return known
    raise EnvError(f"RHEOSTAT_MODE must be one of {_MODES}, got {value!r}")


def trial_number() -> int:
    """Optuna's trial number from ``RHEOSTAT_TRIAL`` (``-1`` for the LR range test);
    ``0`` when unset."""
    value = os.environ.get("RHEOSTAT_TRIAL", "0")
    try:
        return int(value)
    except ValueError as exc:
        raise EnvError(f"RHEOSTAT_TRIAL must be an integer, got {value!r}") from exc


def _rank(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise EnvError(f"{name} must be an integer, got {value!r}") from exc


def speaks_for_trial() -> bool:
    """Whether this process reports for the trial: global rank 0 of a distributed run.

    A trial of several pods (``trialTemplate.replicas``) or processes runs the same
    code on every rank; only rank 0's metrics and result are the trial's, and two
    ranks in one pod could not both serve the metrics port. ``RANK`` (set by
    torchrun, Accelerate, Lightning) decides when present; otherwise ``NODE_RANK``
    (the pod's index, set by the tuner) and ``LOCAL_RANK`` must both be 0 or unset,
    so one process per pod without a launcher works too, and a run by hand reports.
    """
    rank = _rank("RANK")
    if rank is not None:
        return rank == 0
    return all(_rank(name) in (None, 0) for name in ("NODE_RANK", "LOCAL_RANK"))


def study_name() -> str:
    """The study name from ``RHEOSTAT_STUDY``; empty when unset."""
    return os.environ.get("RHEOSTAT_STUDY", "")


def objectives() -> tuple[str, ...]:
    """The study's objective metric names from ``RHEOSTAT_OBJECTIVES`` (a JSON list).

    Empty when unset (a run by hand, an older tuner) or malformed: the names only
    tell :func:`~rheostat_trainer.finish` what it must never drop, so a bad value
    must not fail a trial that trained well.
    """
    try:
        names = json.loads(os.environ.get("RHEOSTAT_OBJECTIVES", "[]"))
    except ValueError:
        return ()
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return ()
    return tuple(names)


def termination_path() -> str | None:
    """Where the result goes: ``RHEOSTAT_TERMINATION_MESSAGE_PATH`` if set (local runs,
    the test node agent), else ``/dev/termination-log`` if the kubelet created it,
    else nowhere (a run by hand). The kubelet's file is never created here: on a
    laptop running as root that would litter ``/dev``."""
    path = os.environ.get("RHEOSTAT_TERMINATION_MESSAGE_PATH")
    if path:
        return path
    default = "/dev/termination-log"
    if os.path.isfile(default) and os.access(default, os.W_OK):
        return default
    return None


def env_float(name: str, default: float) -> float:
    """A float env var (the LR sweep settings), with a clear error when malformed."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise EnvError(f"{name} must be a number, got {value!r}") from exc
