"""The env-var contract between the tuner and a trial (docs/contracts.md), in one place.

Both backends pass parameters the same way, so a trainer written against
`rheostat_trainer` runs unchanged as a local process and as a Kubernetes Job.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
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
    objectives: Sequence[str] = (),
    lr_schedule: tuple[float, float] | None = None,
) -> dict[str, str]:
    """Environment variables for one trial (or the LR range test).

    `objectives` are the study's objective metric names: `finish()` keeps them
    whatever else it must drop to fit the 4096-byte termination message.
    `lr_schedule` is the trial's (base, peak) LR under `lrRangeTest.apply: schedule`.
    """
    env = {
        "RHEOSTAT_MODE": mode,
        "RHEOSTAT_STUDY": study,
        "RHEOSTAT_TRIAL": str(number),
        "RHEOSTAT_PARAMS": json.dumps(dict(params), sort_keys=True),
        "RHEOSTAT_METRICS_PORT": str(metrics_port),
    }
    if objectives:
        env["RHEOSTAT_OBJECTIVES"] = json.dumps(list(objectives))
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
    if lr_schedule is not None:
        env |= {"RHEOSTAT_LR_BASE": repr(lr_schedule[0]), "RHEOSTAT_LR_PEAK": repr(lr_schedule[1])}
    return env


# Kubernetes keeps at most 4096 bytes of a termination message, but the local backend
# reads the trainer's file, which can be any size. Anything far over the contract's
# 4096 bytes is not a message a trainer meant to write, so it is not decoded at all.
MAX_TERMINATION_MESSAGE_BYTES = 64 * 1024


class ContractError(ValueError):
    """A trial's message that cannot be read; the message names what is wrong."""


def _number(value: Any) -> Any:
    """Decode the non-finite encodings a trainer writes ("nan", "inf", "-inf")."""
    if isinstance(value, str) and value.lower() in {"nan", "inf", "-inf", "+inf", "infinity"}:
        return float(value)
    return value


def parse_termination_message(text: str) -> dict[str, Any] | None:
    """The JSON a trainer wrote with finish(), or None when there is none usable.

    Never raises: the text is a trial's, so an oversized, malformed or absurdly deep
    one is treated as no message rather than taking down the reader.
    """
    if len(text) > MAX_TERMINATION_MESSAGE_BYTES:  # cheap: a character is at least a byte
        return None
    if len(text.encode("utf-8", errors="replace")) > MAX_TERMINATION_MESSAGE_BYTES:
        return None
    text = text.strip()
    if not text:
        return None
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError, too many digits, deep nesting
        return None
    if not isinstance(message, dict):
        return None
    if isinstance(message.get("metrics"), dict):
        message["metrics"] = {k: _number(v) for k, v in message["metrics"].items()}
    return message


def last_step(message: Mapping[str, Any] | None) -> int | None:
    """The trial's termination message's "step" (its last report's), if it is one."""
    step = message.get("step") if message else None
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return None
    return step


def _curve_values(curve: Mapping[str, Any], key: str) -> list[float]:
    """One of the curve's lists as floats; null and "nan" (a NaN loss) are both NaN."""
    values = curve[key]
    if not isinstance(values, list):
        raise ContractError(f"lrRangeTest.{key} is not a list: {_brief(values)}")
    floats: list[float] = []
    for i, value in enumerate(values):
        if value is None:  # JSON.stringify and pandas write NaN as null
            floats.append(math.nan)
            continue
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ContractError(f"lrRangeTest.{key}[{i}] is not a number: {_brief(value)}")
        try:
            floats.append(float(_number(value)))
        except (ValueError, OverflowError):  # "abc", or an integer beyond a float's range
            raise ContractError(
                f"lrRangeTest.{key}[{i}] is not a number: {_brief(value)}"
            ) from None
    return floats


def _brief(value: Any) -> str:
    """The repr of a value, shortened for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def lr_curve(message: Mapping[str, Any] | None) -> tuple[list[float], list[float]] | None:
    """The LR range test's (lrs, losses) from its termination message, if present.

    None when the message has no curve; ContractError (a ValueError) when it has one
    that cannot be read: lrs or losses not lists, of unequal length, or holding
    something that is not a number. A null or "nan" loss is NaN (a diverged step).
    """
    curve = message.get("lrRangeTest") if message else None
    if not (isinstance(curve, dict) and "lrs" in curve and "losses" in curve):
        return None
    lrs = _curve_values(curve, "lrs")
    losses = _curve_values(curve, "losses")
    if len(lrs) != len(losses):
        raise ContractError(f"lrRangeTest: {len(lrs)} lrs but {len(losses)} losses")
    return lrs, losses
