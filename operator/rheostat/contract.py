"""The env-var contract between the tuner and a trial (docs/contracts.md), in one place.

Both backends pass parameters the same way, so a trainer written against
`rheostat_trainer` runs unchanged as a local process and as a Kubernetes Job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rheostat.spec import Scalar, env_name

MODE_TRIAL = "trial"
MODE_LR_RANGE_TEST = "lr-range-test"
LR_RANGE_TEST_NUMBER = -1


def trial_env(
    study: str,
    number: int,
    params: Mapping[str, Scalar],
    metrics_port: int,
    *,
    mode: str = MODE_TRIAL,
    lr_sweep: tuple[str, float, float, int] | None = None,
) -> dict[str, str]:
    """Environment variables for one trial (or the LR range test)."""
    env = {
        "RHEOSTAT_MODE": mode,
        "RHEOSTAT_STUDY": study,
        "RHEOSTAT_TRIAL": str(number),
        "RHEOSTAT_PARAMS": json.dumps(dict(params), sort_keys=True),
        "RHEOSTAT_METRICS_PORT": str(metrics_port),
    }
    for name, value in params.items():
        env[env_name(name)] = json.dumps(value) if not isinstance(value, str) else value
    if lr_sweep is not None:
        parameter, min_lr, max_lr, steps = lr_sweep
        env |= {
            "RHEOSTAT_LR_PARAM": parameter,
            "RHEOSTAT_LR_MIN": repr(min_lr),
            "RHEOSTAT_LR_MAX": repr(max_lr),
            "RHEOSTAT_LR_STEPS": str(steps),
        }
    return env


def _number(value: Any) -> Any:
    """Decode the non-finite encodings a trainer writes ("nan", "inf", "-inf")."""
    if isinstance(value, str) and value.lower() in {"nan", "inf", "-inf", "+inf", "infinity"}:
        return float(value)
    return value


def parse_termination_message(text: str) -> dict[str, Any] | None:
    """The JSON a trainer wrote with finish(), or None when there is none usable."""
    text = text.strip()
    if not text:
        return None
    try:
        message = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(message, dict):
        return None
    if isinstance(message.get("metrics"), dict):
        message["metrics"] = {k: _number(v) for k, v in message["metrics"].items()}
    return message


def lr_curve(message: Mapping[str, Any] | None) -> tuple[list[float], list[float]] | None:
    """The LR range test's (lrs, losses) from its termination message, if present."""
    curve = message.get("lrRangeTest") if message else None
    if isinstance(curve, dict) and "lrs" in curve and "losses" in curve:
        return [float(_number(v)) for v in curve["lrs"]], [
            float(_number(v)) for v in curve["losses"]
        ]
    return None
