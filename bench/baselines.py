"""The peers of the overhead benchmark, each run as its own process by :mod:`bench.overhead`.

``python -m bench.baselines optuna|ray|trainer --trials N --parallelism P --out F.json``

All of them run the *same* trainer the same way the local backend does: one
``python -m rheostat_trainer.examples.synthetic`` subprocess per trial, with the
contract's environment, reading the result from its termination message. So the
difference in wall time is the tuners' own overhead, not the work.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rheostat.backends.local.process import free_port, read_termination_message
from rheostat.contract import trial_env

TRAINER = (sys.executable, "-m", "rheostat_trainer.examples.synthetic")
#: The overhead study's search space (the synthetic trainer's lr valley and quadratic bowls).
SPACE: tuple[dict[str, Any], ...] = (
    {"name": "lr", "type": "float", "min": 1e-6, "max": 10.0, "log": True},
    {"name": "momentum", "type": "float", "min": 0.0, "max": 0.99},
    {"name": "x", "type": "float", "min": -1.0, "max": 1.0},
    {"name": "y", "type": "float", "min": -1.0, "max": 1.0},
)


def trainer_args(steps: int, step_seconds: float) -> list[str]:
    return ["--steps", str(steps), "--step-seconds", str(step_seconds)]


def run_trainer(
    params: Mapping[str, Any], number: int, steps: int, step_seconds: float
) -> tuple[float, float]:
    """Run one trial as a subprocess under the env contract; (loss, seconds it ran)."""
    with tempfile.TemporaryDirectory(prefix="rheostat-bench-") as folder:
        termination = Path(folder) / "termination-message.json"
        env = dict(os.environ)
        env |= trial_env("overhead", number, dict(params), free_port())
        env |= {
            "POD_IP": "127.0.0.1",
            "RHEOSTAT_TERMINATION_MESSAGE_PATH": str(termination),
            "PYTHONUNBUFFERED": "1",
        }
        started = time.perf_counter()
        subprocess.run(
            [*TRAINER, *trainer_args(steps, step_seconds)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - started
        message = read_termination_message(termination) or {}
    return float(message.get("metrics", {}).get("loss", float("nan"))), seconds


def _distributions() -> dict[str, Any]:
    import optuna

    return {
        p["name"]: optuna.distributions.FloatDistribution(
            p["min"], p["max"], log=p.get("log", False)
        )
        for p in SPACE
    }


def _sampler(seed: int) -> Any:
    """The same TPE settings as Rheostat's ``tpe`` (rheostat.sampling)."""
    import optuna

    return optuna.samplers.TPESampler(
        seed=seed, multivariate=True, constant_liar=True, n_startup_trials=5
    )


def run_optuna(trials: int, parallelism: int, steps: int, step_seconds: float) -> dict[str, Any]:
    """A plain ``study.optimize`` loop: threads, each launching the trainer subprocess."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    started = time.perf_counter()
    study = optuna.create_study(direction="minimize", sampler=_sampler(0))
    distributions = _distributions()

    def objective(trial: optuna.Trial) -> float:
        params = {name: trial._suggest(name, d) for name, d in distributions.items()}
        loss, _ = run_trainer(params, trial.number, steps, step_seconds)
        return loss

    study.optimize(objective, n_trials=trials, n_jobs=parallelism)
    return {
        "best_value": study.best_value,
        "inner_seconds": time.perf_counter() - started,
        "complete": len(study.trials),
    }


def run_ray(trials: int, parallelism: int, steps: int, step_seconds: float) -> dict[str, Any]:
    """Ray Tune with OptunaSearch (same TPE settings), one CPU per trial."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    started = time.perf_counter()
    ray.init(
        num_cpus=parallelism,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=200 * 1024**2,
        configure_logging=False,
    )
    init_seconds = time.perf_counter() - started

    def trainable(config: dict[str, Any]) -> None:
        loss, _ = run_trainer(config, 0, steps, step_seconds)
        tune.report({"loss": loss})

    searcher = OptunaSearch(space=_distributions(), metric="loss", mode="min", sampler=_sampler(0))
    with tempfile.TemporaryDirectory(prefix="rheostat-ray-") as storage:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            tune_config=tune.TuneConfig(
                search_alg=searcher, num_samples=trials, max_concurrent_trials=parallelism
            ),
            run_config=tune.RunConfig(storage_path=storage, verbose=0, name="overhead"),
        )
        fit_started = time.perf_counter()
        results = tuner.fit()
        fit_seconds = time.perf_counter() - fit_started
        best = results.get_best_result(metric="loss", mode="min")
        complete = len(results) - results.num_errors
        metrics = best.metrics or {}
    ray.shutdown()
    return {
        "best_value": float(metrics.get("loss", float("nan"))),
        "inner_seconds": time.perf_counter() - started,
        "ray_init_seconds": init_seconds,
        "fit_seconds": fit_seconds,
        "complete": complete,
    }


def run_trainer_alone(repeats: int, steps: int, step_seconds: float) -> dict[str, Any]:
    """The trainer with no tuner around it: the floor every tuner is measured against."""
    params = {p["name"]: (p["min"] + p["max"]) / 2 for p in SPACE}
    seconds = [run_trainer(params, i, steps, step_seconds)[1] for i in range(repeats)]
    return {"seconds": seconds}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("which", choices=("optuna", "ray", "trainer"))
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--step-seconds", type=float, default=0.2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.which == "optuna":
            result = run_optuna(args.trials, args.parallelism, args.steps, args.step_seconds)
        elif args.which == "ray":
            result = run_ray(args.trials, args.parallelism, args.steps, args.step_seconds)
        else:
            result = run_trainer_alone(args.trials, args.steps, args.step_seconds)
    except Exception as error:
        result = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    args.out.write_text(json.dumps(result), encoding="utf-8")
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
