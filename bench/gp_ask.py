"""How long one Bayesian (GP) ask takes as a study grows, with and without the bound.

Optuna's GPSampler fits a Gaussian process to every finished trial and searches its
acquisition function, so one ask grows with the study. `BoundedGPSampler` (the
`bayesian` algorithm) conditions on at most `max_history` trials. This times single
asks on studies pre-filled with 100 to 1,000 finished trials of a 4-parameter space
(log-scale LR, a float, an int, a categorical; a noisy bowl as the objective): a first
ask (the GP fitted from scratch) and the median of the next asks (Optuna reuses the
previous kernel parameters as its starting point).

Run: `python -m bench.gp_ask` (full) or `--smoke` (CI). Writes bench/results/gp_ask.*.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from rheostat.sampling import GP_MAX_HISTORY, BoundedGPSampler

RESULTS = Path(__file__).parent / "results"
SPACE = {
    "lr": FloatDistribution(1e-4, 1.0, log=True),
    "momentum": FloatDistribution(0.0, 0.99),
    "layers": IntDistribution(1, 4),
    "optimizer": CategoricalDistribution(["sgd", "adam"]),
}


def _history(count: int, seed: int) -> list[optuna.trial.FrozenTrial]:
    rng = np.random.default_rng(seed)
    trials = []
    for _ in range(count):
        params = {
            "lr": float(10 ** rng.uniform(-4, 0)),
            "momentum": float(rng.uniform(0, 0.99)),
            "layers": int(rng.integers(1, 5)),
            "optimizer": str(rng.choice(["sgd", "adam"])),
        }
        value = (np.log10(params["lr"]) + 2) ** 2 + params["momentum"] + 0.1 * params["layers"]
        trials.append(
            optuna.trial.create_trial(
                params=params, distributions=SPACE, value=float(value + rng.normal(0, 0.05))
            )
        )
    return trials


def _time_asks(sampler: optuna.samplers.BaseSampler, trials: int, asks: int) -> dict[str, float]:
    study = optuna.create_study(sampler=sampler)
    study.add_trials(_history(trials, seed=trials))
    times = []
    for _ in range(asks):
        started = time.perf_counter()
        trial = study.ask(SPACE)
        times.append(time.perf_counter() - started)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)  # keep the history as it was
    return {"first_s": round(times[0], 3), "next_median_s": round(statistics.median(times[1:]), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a small run for CI")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sizes = [20, 40] if args.smoke else [100, 300, 500, 1000]
    cap = 15 if args.smoke else GP_MAX_HISTORY
    asks = 3 if args.smoke else 4
    _time_asks(BoundedGPSampler(seed=0), 10, 2)  # torch's one-time start-up is not an ask
    rows: list[dict[str, Any]] = []
    for trials in sizes:
        options = {"seed": 1, "n_startup_trials": 5, "deterministic_objective": False}
        unbounded = _time_asks(optuna.samplers.GPSampler(**options), trials, asks)
        bounded = _time_asks(BoundedGPSampler(max_history=cap, **options), trials, asks)
        rows.append({"trials": trials, "optuna": unbounded, "bounded": bounded})
        print(rows[-1], flush=True)
    document = {
        "smoke": args.smoke,
        "maxHistory": cap,
        "loadAverageAtStart": os.getloadavg(),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = "gp_ask_smoke" if args.smoke else "gp_ask"
    (args.out / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
    lines = [
        "# Bayesian (GP) ask time as a study grows",
        "",
        f"One ask on a study with N finished trials; `bayesian` keeps {cap} of them (the "
        "best half and the most recent). First ask = GP fitted from scratch (an operator "
        "restart); next = median of the following asks. 2 shared cores.",
        "",
        "| finished trials | Optuna GPSampler first / next (s) | bounded first / next (s) |",
        "| --- | --- | --- |",
    ]
    for row in rows:
        o, b = row["optuna"], row["bounded"]
        lines.append(
            f"| {row['trials']} | {o['first_s']} / {o['next_median_s']} | "
            f"{b['first_s']} / {b['next_median_s']} |"
        )
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
