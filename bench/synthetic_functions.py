"""Simple regret on functions with known optima, for every algorithm the product offers.

Each (function, algorithm, seed) is one study driven through the real engine with
an instant objective (no training, no pruning), so what differs between rows is
the sampler alone, with the product's own settings (rheostat.sampling). Grid
search gets ``ceil(N ** (1/d))`` levels per parameter, so its full grid holds at
least the budget and it samples a random subset of it (Optuna's GridSampler).

* ``lr-valley``: the synthetic trainer's objective (rheostat_trainer.examples.
  synthetic) over lr (1e-6..10, log), momentum, dropout and an int ``layers``;
  a learning-rate-like valley in log space. Optimum 0.
* ``branin``: 2-d, three global minima, optimum 0.397887.
* ``hartmann6``: 6-d, one narrow basin, optimum -3.32237.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    best_so_far,
    drive,
    fmt,
    grid_parameters,
    make_spec,
    markdown_table,
    quantiles,
    quiet,
    run_jobs,
    write_csv,
    write_json,
)
from rheostat_trainer.examples.synthetic import objective as lr_valley_objective

ALGORITHMS: tuple[str, ...] = ("grid", "random", "tpe", "bayesian", "cmaes", "qmc")

_H_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H_A = np.array(
    [
        [10, 3, 17, 3.5, 1.7, 8],
        [0.05, 10, 17, 0.1, 8, 14],
        [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14],
    ]
)
_H_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)


def branin(p: Mapping[str, Any]) -> float:
    x1, x2 = float(p["x1"]), float(p["x2"])
    b, c = 5.1 / (4 * math.pi**2), 5 / math.pi
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1) + 10


def hartmann6(p: Mapping[str, Any]) -> float:
    x = np.array([float(p[f"x{i}"]) for i in range(1, 7)])
    inner = np.sum(_H_A * (x - _H_P) ** 2, axis=1)
    return float(-np.sum(_H_ALPHA * np.exp(-inner)))


@dataclass(frozen=True)
class Function:
    name: str
    fn: Callable[[Mapping[str, Any]], float]
    optimum: float
    parameters: tuple[dict[str, Any], ...]


FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in (
        Function(
            "lr-valley",
            lr_valley_objective,
            0.0,
            (
                {"name": "lr", "type": "float", "min": 1e-6, "max": 10.0, "log": True},
                {"name": "momentum", "type": "float", "min": 0.0, "max": 0.99},
                {"name": "dropout", "type": "float", "min": 0.0, "max": 0.5},
                {"name": "layers", "type": "int", "min": 1, "max": 4},
            ),
        ),
        Function(
            "branin",
            branin,
            0.397887357729739,
            (
                {"name": "x1", "type": "float", "min": -5.0, "max": 10.0},
                {"name": "x2", "type": "float", "min": 0.0, "max": 15.0},
            ),
        ),
        Function(
            "hartmann6",
            hartmann6,
            -3.32236801141551,
            tuple({"name": f"x{i}", "type": "float", "min": 0.0, "max": 1.0} for i in range(1, 7)),
        ),
    )
}


@dataclass(frozen=True)
class Job:
    function: str
    algorithm: str
    seed: int
    trials: int


def run_job(job: Job) -> dict[str, Any]:
    """One study; returns its regret after each trial."""
    quiet()
    function = FUNCTIONS[job.function]
    parameters: list[dict[str, Any]] = list(function.parameters)
    if job.algorithm == "grid":
        levels = max(2, math.ceil(job.trials ** (1 / len(parameters)) - 1e-9))
        parameters = grid_parameters(parameters, levels)
    spec = make_spec(
        f"{job.function}-{job.algorithm}",
        metric="loss",
        direction="minimize",
        parameters=parameters,
        algorithm=job.algorithm,
        seed=job.seed,
        max_trials=job.trials,
    )
    run = drive(spec, lambda params, number, report: (function.fn(params), 0))
    values = [t.value if t.state == "complete" else None for t in run.trials]
    regret = [b - function.optimum for b in best_so_far(values, "minimize")]
    return {
        **job.__dict__,
        "regret": regret,
        "sampler_seconds": run.sampler_seconds,
    }


def run(out: Path, *, seeds: int, trials: int, workers: int) -> dict[str, Any]:
    """All studies, then the regret table, CSV, JSON and plot into ``out``."""
    jobs = [Job(f, a, s, trials) for f in FUNCTIONS for a in ALGORITHMS for s in range(seeds)]
    results = run_jobs("synthetic", out, jobs, run_job, workers=workers, initializer=quiet)
    results.sort(key=lambda r: (r["function"], ALGORITHMS.index(r["algorithm"]), r["seed"]))
    summary = summarise(results, trials)
    write_json(out / "synthetic_runs.json", results)
    write_json(out / "synthetic.json", summary)
    write_csv(out / "synthetic.csv", summary["rows"])
    (out / "synthetic.md").write_text(render(summary), encoding="utf-8")
    plot(results, out)
    return summary


def summarise(results: Sequence[Mapping[str, Any]], trials: int) -> dict[str, Any]:
    """Median and IQR of simple regret after N/4, N/2 and N trials."""
    rows = []
    checkpoints = sorted({max(1, trials // 4), max(1, trials // 2), trials})
    for function in FUNCTIONS:
        for algorithm in ALGORITHMS:
            runs = [r for r in results if r["function"] == function and r["algorithm"] == algorithm]
            if not runs:
                continue
            row: dict[str, Any] = {
                "function": function,
                "algorithm": algorithm,
                "seeds": len(runs),
                # Fewer than the budget when the engine stopped on repeated duplicates.
                "trials_run_min": min(len(r["regret"]) for r in runs),
            }
            for n in checkpoints:
                at = [r["regret"][min(n, len(r["regret"])) - 1] for r in runs]
                q25, q50, q75 = quantiles(at)
                row[f"regret_at_{n}_median"] = q50
                row[f"regret_at_{n}_q25"] = q25
                row[f"regret_at_{n}_q75"] = q75
            row["sampler_seconds_per_trial"] = float(
                np.median([r["sampler_seconds"] / max(1, len(r["regret"])) for r in runs])
            )
            rows.append(row)
    return {"trials": trials, "checkpoints": checkpoints, "rows": rows}


def render(summary: Mapping[str, Any]) -> str:
    n = summary["trials"]
    checkpoints = summary["checkpoints"]
    rows = summary["rows"]
    seeds = rows[0]["seeds"] if rows else 0
    headers = ["function", "algorithm"]
    headers += [f"regret after {c} trials, median [IQR]" for c in checkpoints]
    headers += ["trials run (min)", "sampler s / trial"]
    table = []
    for r in rows:
        cells = [r["function"], r["algorithm"]]
        for c in checkpoints:
            cells.append(
                f"{fmt(r[f'regret_at_{c}_median'])} "
                f"[{fmt(r[f'regret_at_{c}_q25'])}, {fmt(r[f'regret_at_{c}_q75'])}]"
            )
        cells.append(str(r.get("trials_run_min", "")))
        cells.append(fmt(r["sampler_seconds_per_trial"]))
        table.append(cells)
    winners = []
    for function in dict.fromkeys(r["function"] for r in rows):
        mine = [r for r in rows if r["function"] == function]
        best = min(mine, key=lambda r: r[f"regret_at_{n}_median"])
        winners.append(f"{function}: **{best['algorithm']}**")
    return (
        f"{seeds} seeds, {n} trials per study. Lowest median regret after {n} trials: "
        + ", ".join(winners)
        + ".\n\n"
        + markdown_table(headers, table)
    )


def plot(results: Sequence[Mapping[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(FUNCTIONS), figsize=(5.2 * len(FUNCTIONS), 4.2))
    for ax, function in zip(axes, FUNCTIONS, strict=True):
        for algorithm in ALGORITHMS:
            runs = [r for r in results if r["function"] == function and r["algorithm"] == algorithm]
            if not runs:
                continue
            # A study that ended early keeps its regret: carry it forward to the budget.
            n = max(len(r["regret"]) for r in runs)
            curves = np.array(
                [r["regret"] + [r["regret"][-1]] * (n - len(r["regret"])) for r in runs],
                dtype=float,
            )
            curves = np.maximum(curves, 1e-6)  # log axis: an exact hit shows as 1e-6
            xs = np.arange(1, n + 1)
            (line,) = ax.plot(xs, np.nanmedian(curves, axis=0), label=algorithm, lw=1.6)
            ax.fill_between(
                xs,
                np.nanquantile(curves, 0.25, axis=0),
                np.nanquantile(curves, 0.75, axis=0),
                color=line.get_color(),
                alpha=0.1,
            )
        ax.set_yscale("log")
        ax.set_title(f"{function}: simple regret (median, IQR)")
        ax.set_xlabel("trial")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("best value - optimum")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "synthetic.png", dpi=110)
    plt.close(fig)


def rerender(out: Path) -> None:
    """Rebuild table, CSV and plot from ``synthetic_runs.json`` without re-running."""
    path = out / "synthetic_runs.json"
    if not path.exists():
        return
    results = json.loads(path.read_text(encoding="utf-8"))
    for r in results:
        r["regret"] = [math.nan if v is None else v for v in r["regret"]]
    summary = summarise(results, max(len(r["regret"]) for r in results))
    write_json(out / "synthetic.json", summary)
    write_csv(out / "synthetic.csv", summary["rows"])
    (out / "synthetic.md").write_text(render(summary), encoding="utf-8")
    plot(results, out)
