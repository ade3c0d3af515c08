"""An instant trainer with two objectives that pull apart, for multi-objective studies.

It reports the synthetic trainer's ``loss`` (see :mod:`.synthetic`: minimal at
``lr = 1e-2`` and the other known optima) and a ``cost`` that prefers a small
learning rate and few layers::

    cost = (log10(lr) + 4) ** 2 + 0.1 * layers

So no trial is best at both: the Pareto front runs from ``lr = 1e-4`` (cheapest) to
``lr = 1e-2`` (lowest loss), with the other parameters at the loss's optimum, and
``layers`` trading 0.1 of cost against 0.1 of loss between 1 and 2. Step ``t``
reports ``loss + 1/(t+1)`` and the cost; the end writes both (or, with ``--omit``,
leaves one out, to show a trial that lacks an objective; ``--omit-on-trial K``
only in trial ``K``). In ``lr-range-test`` mode it runs the synthetic trainer's
sweep, so the LR range test runs first here as in any study. No torch needed.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import rheostat_trainer as rt
from rheostat_trainer.examples.synthetic import objective, run_lr_range_test


def cost(params: Mapping[str, Any]) -> float:
    """The second objective: cheap at a small learning rate and with few layers."""
    value = 0.0
    if "lr" in params:
        value += (math.log10(float(params["lr"])) + 4) ** 2
    if "layers" in params:
        value += 0.1 * float(params["layers"])
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="reports before the end")
    parser.add_argument("--step-seconds", type=float, default=0.0, help="sleep per step")
    parser.add_argument("--omit", choices=("loss", "cost"), help="leave a metric out")
    parser.add_argument("--omit-on-trial", type=int, default=None, help="only in this trial")
    args = parser.parse_args(argv)
    if rt.mode() == "lr-range-test":
        run_lr_range_test("none", 0, args.step_seconds)
        return 0
    omit = args.omit
    if args.omit_on_trial is not None and rt.trial_number() != args.omit_on_trial:
        omit = None
    try:
        params = rt.params()
    except rt.EnvError as exc:
        print(f"tradeoff: {exc}; using no parameters", file=sys.stderr)
        params = {}
    loss, price = objective(params), cost(params)
    final = {"loss": loss, "cost": price}
    if omit:
        del final[omit]
    rt.should_stop()
    for t in range(args.steps):
        step = {"loss": loss + 1 / (t + 1), "cost": price}
        rt.report(t, **{k: v for k, v in step.items() if k in final})
        if rt.should_stop():
            break
        if args.step_seconds:
            time.sleep(args.step_seconds)
    rt.finish(**final)
    print(f"tradeoff: loss={loss:.4g} cost={price:.4g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
