"""Sampler latency per suggestion as a study grows (the cost peers.md warns about).

``python -m bench.latency --sampler tpe|bayesian --size N --asks K --out F.json``
fills a study with N finished trials of the synthetic lr-valley objective
(``study.add_trials``: no sampling spent on the fill), then times K ``ask()``
calls with the product's own sampler settings (rheostat.sampling.make_sampler).
:mod:`bench.overhead` runs each size in its own process under a timeout, so a
slow GP is recorded as "over the cap" instead of stalling the benchmark.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import optuna

from bench.common import quiet
from rheostat.sampling import make_sampler
from rheostat.space import build_space
from rheostat.spec import AlgorithmSpec, Parameter
from rheostat_trainer.examples.synthetic import objective

PARAMETERS = (
    Parameter(name="lr", type="float", min=1e-6, max=10.0, log=True),
    Parameter(name="momentum", type="float", min=0.0, max=0.99),
    Parameter(name="dropout", type="float", min=0.0, max=0.5),
    Parameter(name="layers", type="int", min=1, max=4),
)


def measure(sampler: str, size: int, asks: int, seed: int = 0) -> dict[str, float | list[float]]:
    """Seconds per ``ask()`` on a study that already holds ``size`` complete trials."""
    quiet()
    space = build_space(PARAMETERS)
    study = optuna.create_study(direction="minimize")
    study.sampler = make_sampler(AlgorithmSpec(name=sampler, seed=seed), space)
    rng = np.random.default_rng(seed)
    fill_started = time.perf_counter()
    trials = []
    for _ in range(size):
        params = {
            "lr": float(10 ** rng.uniform(-6, 1)),
            "momentum": float(rng.uniform(0, 0.99)),
            "dropout": float(rng.uniform(0, 0.5)),
            "layers": int(rng.integers(1, 5)),
        }
        trials.append(
            optuna.trial.create_trial(
                params=params, distributions=space.distributions, value=objective(params)
            )
        )
    study.add_trials(trials)
    fill_seconds = time.perf_counter() - fill_started
    seconds = []
    for _ in range(asks):
        started = time.perf_counter()
        trial = study.ask(space.distributions)
        seconds.append(time.perf_counter() - started)
        study.tell(trial, objective(trial.params))
    return {"fill_seconds": fill_seconds, "ask_seconds": seconds}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sampler", choices=("tpe", "bayesian"), required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--asks", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    result = measure(args.sampler, args.size, args.asks)
    args.out.write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
