"""An instant trainer with a known optimum, for testing the tuner rather than a model.

Every known parameter adds a term with a known minimiser; unknown ones are
ignored, so any study's search space works:

=============  ===============================  ==========
parameter      term                             optimum
=============  ===============================  ==========
``lr``         ``(log10(lr) + 2) ** 2``         1e-2
``momentum``   ``(m - 0.9) ** 2``               0.9
``x``          ``(x - 0.3) ** 2``               0.3
``y``          ``(y + 0.2) ** 2``               -0.2
``layers``     ``0.1 * |layers - 2|``           2
``width``      ``0.05 * |log2(width / 64)|``    64
``dropout``    ``(d - 0.1) ** 2``               0.1
``optimizer``  adam 0, sgd 0.05, other 0.1      adam
=============  ===============================  ==========

The final ``loss`` is the sum. Step ``t`` reports ``loss_t = loss + 1/(t+1)``
(a learning curve that converges to the final value) and
``accuracy = 1 / (1 + loss_t)``. ``--fault`` injects the failures a tuner must
handle; with ``--fault-on-trial K`` only trial ``K`` (``RHEOSTAT_TRIAL``) fails:

* ``nan`` / ``inf``: the final loss (and accuracy) is non-finite;
* ``missing``: exits 0 without writing a result;
* ``crash``: raises after one report (non-zero exit, traceback on stderr);
* ``hang``: reports once, then sleeps until killed. It has asked
  ``should_stop()``, so the first SIGTERM is absorbed (like a stuck trainer),
  and it takes a second SIGTERM or SIGKILL to end it.

In ``lr-range-test`` mode it writes a synthetic curve instead: flat at small lr,
falling over the decade below 3e-2, blowing up above ~1e-1, with 2 % seeded
noise, and stops on divergence exactly like the real sweep. No torch needed.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import rheostat_trainer as rt
from rheostat.lr_range import diverged, exponential_schedule, smooth
from rheostat_trainer._env import env_float
from rheostat_trainer.lr_finder import DEFAULT_MAX_LR, DEFAULT_MIN_LR, DEFAULT_STEPS

FAULTS = ("none", "nan", "inf", "missing", "crash", "hang")
OPTIMIZER_COST = {"adam": 0.0, "sgd": 0.05}

#: The synthetic LR curve's raw minimum; its valley suggestion lands below it.
CURVE_MINIMUM_LR = 3e-2


def objective(params: Mapping[str, Any]) -> float:
    """The final loss for ``params`` (0 at the optimum of every known term)."""
    loss = 0.0
    if "lr" in params:
        loss += (math.log10(float(params["lr"])) + 2) ** 2
    if "momentum" in params:
        loss += (float(params["momentum"]) - 0.9) ** 2
    if "x" in params:
        loss += (float(params["x"]) - 0.3) ** 2
    if "y" in params:
        loss += (float(params["y"]) + 0.2) ** 2
    if "layers" in params:
        loss += 0.1 * abs(float(params["layers"]) - 2)
    if "width" in params:
        loss += 0.05 * abs(math.log2(float(params["width"]) / 64))
    if "dropout" in params:
        loss += (float(params["dropout"]) - 0.1) ** 2
    if "optimizer" in params:
        loss += OPTIMIZER_COST.get(str(params["optimizer"]), 0.1)
    return loss


def curve_loss(lr: float) -> float:
    """Noise-free synthetic range-test loss: 2.3 flat, a cosine descent to 0.3 over
    the decade below :data:`CURVE_MINIMUM_LR`, then a quadratic (in log lr) blow-up."""
    u = math.log10(lr / CURVE_MINIMUM_LR)
    if u < -1:
        return 2.3
    if u <= 0:
        return 2.3 - (1 - math.cos(math.pi * (u + 1)))
    return 0.3 + 6.0 * u * u


def _hang() -> None:
    while True:
        time.sleep(3600)


def _params() -> dict[str, Any]:
    try:
        return rt.params()
    except rt.EnvError as exc:
        print(f"synthetic: {exc}; using no parameters", file=sys.stderr)
        return {}


def run_lr_range_test(fault: str, seed: int, step_seconds: float) -> None:
    lrs_all = exponential_schedule(
        env_float("RHEOSTAT_LR_MIN", DEFAULT_MIN_LR),
        env_float("RHEOSTAT_LR_MAX", DEFAULT_MAX_LR),
        int(env_float("RHEOSTAT_LR_STEPS", DEFAULT_STEPS)),
    )
    rng = random.Random(seed)
    rt.should_stop()
    lrs: list[float] = []
    losses: list[float] = []
    for step, lr in enumerate(lrs_all):
        loss = curve_loss(lr) * (1 + 0.02 * rng.gauss(0.0, 1.0))
        if fault in ("nan", "inf") and step == len(lrs_all) // 2:
            loss = math.nan if fault == "nan" else math.inf
        lrs.append(lr)
        losses.append(loss)
        rt.report(step, lr=lr, loss=loss)
        if fault == "crash":
            raise RuntimeError("synthetic: injected crash during the LR range test")
        if fault == "hang":
            _hang()
        if diverged(smooth(losses)) or rt.should_stop():
            break
        if step_seconds:
            time.sleep(step_seconds)
    if fault == "missing":
        return
    rt.write_lr_curve(lrs, losses)
    print(f"synthetic lr-range-test: {len(lrs)} steps, last lr {lrs[-1]:.3g}")


def run_trial(params: Mapping[str, Any], steps: int, fault: str, step_seconds: float) -> None:
    loss = objective(params)
    last: dict[str, float] = {}
    rt.should_stop()
    if (schedule := rt.lr_schedule()) is not None:  # lrRangeTest.apply: schedule
        print(f"synthetic schedule: base={schedule[0]!r} peak={schedule[1]!r}", flush=True)
    for t in range(steps):
        loss_t = loss + 1 / (t + 1)
        last = {"loss": loss_t, "accuracy": 1 / (1 + loss_t)}
        rt.report(t, **last)
        print(f"step {t}: loss={loss_t:.6g}", flush=True)
        if fault == "crash":
            raise RuntimeError("synthetic: injected crash after the first report")
        if fault == "hang":
            _hang()
        if rt.should_stop():
            print("synthetic: stopped by SIGTERM", flush=True)
            rt.finish(**last)
            return
        if step_seconds:
            time.sleep(step_seconds)
    if fault == "missing":
        return
    if fault in ("nan", "inf"):
        loss = math.nan if fault == "nan" else math.inf
    rt.finish(loss=loss, accuracy=1 / (1 + loss))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="reports before the end")
    parser.add_argument("--step-seconds", type=float, default=0.0, help="sleep per step")
    parser.add_argument("--fault", choices=FAULTS, default="none")
    parser.add_argument(
        "--fault-on-trial", type=int, default=None, help="inject the fault only in this trial"
    )
    parser.add_argument("--seed", type=int, default=0, help="noise of the LR curve")
    args = parser.parse_args(argv)
    fault = args.fault
    if args.fault_on_trial is not None and rt.trial_number() != args.fault_on_trial:
        fault = "none"
    if rt.mode() == "lr-range-test":
        run_lr_range_test(fault, args.seed, args.step_seconds)
    else:
        run_trial(_params(), max(1, args.steps), fault, args.step_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
