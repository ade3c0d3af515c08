"""Cyclical learning-rate schedules from the LR range test, in one line.

With ``lrRangeTest.apply: schedule`` every trial gets ``RHEOSTAT_LR_BASE`` and
``RHEOSTAT_LR_PEAK``: the ends of the range test's steepest descent, the peak being
the trial's own value of the LR parameter. These helpers build PyTorch's
schedulers from them::

    optimizer = torch.optim.SGD(model.parameters(), lr=rt.params()["lr"], momentum=0.9)
    scheduler = rt.one_cycle(optimizer, total_steps=epochs * len(loader))
    ...  # scheduler.step() after each optimizer.step()

torch is imported only when a scheduler is built.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from rheostat_trainer._env import EnvError, env_float

if TYPE_CHECKING:
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import CyclicLR, OneCycleLR

BASE, PEAK = "RHEOSTAT_LR_BASE", "RHEOSTAT_LR_PEAK"


def lr_schedule(default: tuple[float, float] | None = None) -> tuple[float, float] | None:
    """This trial's ``(base, peak)`` learning rate, or ``default`` outside such a study.

    Raises:
        EnvError: only one of the two variables is set, one is not a number, or
            base is not below peak.
    """
    present = [name for name in (BASE, PEAK) if os.environ.get(name)]
    if not present:
        return default
    if len(present) == 1:
        raise EnvError(f"{present[0]} is set without its partner; set both {BASE} and {PEAK}")
    base, peak = env_float(BASE, 0.0), env_float(PEAK, 0.0)
    if not 0 < base < peak:
        raise EnvError(f"{BASE} ({base!r}) must be positive and below {PEAK} ({peak!r})")
    return base, peak


def _required(default: tuple[float, float] | None) -> tuple[float, float]:
    bounds = lr_schedule(default)
    if bounds is None:
        raise EnvError(
            f"no schedule: {BASE}/{PEAK} are set only under lrRangeTest.apply: schedule; "
            "pass default=(base, peak) to run outside such a study"
        )
    return bounds


def one_cycle(
    optimizer: Optimizer,
    total_steps: int,
    *,
    default: tuple[float, float] | None = None,
    **kwargs: Any,
) -> OneCycleLR:
    """``OneCycleLR`` rising from the base to the peak and annealing below the base.

    ``div_factor`` is peak / base, so the cycle starts at the test's base; other
    ``OneCycleLR`` arguments (``pct_start``, ``anneal_strategy``, ...) pass through.
    """
    from torch.optim.lr_scheduler import OneCycleLR

    base, peak = _required(default)
    return OneCycleLR(
        optimizer, max_lr=peak, total_steps=total_steps, div_factor=peak / base, **kwargs
    )


def cyclic_lr(
    optimizer: Optimizer,
    step_size_up: int,
    *,
    default: tuple[float, float] | None = None,
    **kwargs: Any,
) -> CyclicLR:
    """``CyclicLR`` between the base and the peak, ``step_size_up`` steps each way by
    default (Smith suggests 2 to 10 epochs' worth of steps); ``mode`` etc. pass through.
    An optimizer without momentum (Adam) needs ``cycle_momentum=False``."""
    from torch.optim.lr_scheduler import CyclicLR

    base, peak = _required(default)
    return CyclicLR(optimizer, base_lr=base, max_lr=peak, step_size_up=step_size_up, **kwargs)
