"""Several objectives: accuracy against model size on digits, by hypervolume.

The study of ``examples/multi-objective.yaml`` (digits CNN, maximise validation
accuracy, minimise the number of weights; lr, momentum, layers, width), driven
through the real engine like the other sections, with NSGA-II (the example's
population of 8), multi-objective TPE and random search, several seeds each.
No pruning (Optuna cannot prune with several objectives) and no LR range test,
so the comparison is the samplers' alone.

The score is the hypervolume of the Pareto front after each trial, in
``(1 - accuracy, s)`` where ``s`` is log10(weights) scaled to [0, 1] between the
smallest and the largest model of the search space, against the reference point
``(1, 1.1)`` (accuracy 0, a little past the largest model): the area of that box
that the front dominates. Larger is better; at most 1.1.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    fmt,
    init_torch_worker,
    make_spec,
    markdown_table,
    quantiles,
    run_jobs,
    write_json,
)

ALGORITHMS: tuple[str, ...] = ("nsga2", "tpe", "random")
EPOCHS = 6
PARAMETERS: tuple[dict[str, Any], ...] = (
    {"name": "lr", "type": "float", "min": 1e-5, "max": 1.0, "log": True},
    {"name": "momentum", "type": "float", "min": 0.0, "max": 0.99, "default": 0.9},
    {"name": "layers", "type": "int", "min": 1, "max": 3, "default": 2},
    {"name": "width", "type": "categorical", "values": [8, 16, 32, 64]},
)
OBJECTIVES = (
    {"metric": "accuracy", "direction": "maximize"},
    {"metric": "weights", "direction": "minimize"},
)
REFERENCE = (1.0, 1.1)


@dataclass(frozen=True)
class Job:
    algorithm: str
    seed: int
    trials: int


def _weights(layers: int, width: int) -> int:
    from rheostat_trainer.examples import digits

    model = digits.build_model(digits.Knobs(layers=layers, width=width))
    return sum(p.numel() for p in model.parameters())


def size_bounds() -> tuple[int, int]:
    """The smallest and the largest model of the search space, in weights.

    Every (layers, width) pair is built: deeper is not always larger, since each
    block pools and so shrinks the classifier's input.
    """
    layers, widths = PARAMETERS[2], PARAMETERS[3]
    sizes = [
        _weights(n, int(w))
        for n in range(int(layers["min"]), int(layers["max"]) + 1)
        for w in widths["values"]
    ]
    return min(sizes), max(sizes)


def run_job(job: Job) -> dict[str, Any]:
    """One study through the engine: each trial trains digits and reports both metrics."""
    import optuna

    from bench import tasks
    from rheostat import objectives
    from rheostat.engine import Engine, Finished, StartLrRangeTest, StartTrial

    task = dataclasses.replace(tasks.DIGITS, epochs=EPOCHS, parameters=PARAMETERS)
    settings = {"population_size": 8} if job.algorithm == "nsga2" else {}
    spec = make_spec(
        f"digits-pareto-{job.algorithm}",
        metric="",
        direction="",
        objectives=OBJECTIVES,
        parameters=PARAMETERS,
        algorithm=job.algorithm,
        seed=job.seed,
        max_trials=job.trials,
        command=("python", "-m", "rheostat_trainer.examples.digits"),
        algorithm_settings=settings,
    )
    started = time.perf_counter()
    study = optuna.create_study(directions=objectives.directions(spec))
    engine = Engine.open(spec, study)
    sampler_seconds, launched = 0.0, []
    while not engine.done:
        t0 = time.perf_counter()
        actions = engine.next_actions(time.monotonic())
        sampler_seconds += time.perf_counter() - t0
        if not actions and not engine.done:
            raise RuntimeError(f"the engine asked for nothing in phase {engine.phase}")
        for action in actions:
            if isinstance(action, StartLrRangeTest):
                raise RuntimeError("this section runs no LR range test")
            if isinstance(action, StartTrial):
                params = dict(action.params)
                accuracy, _ = tasks.train(
                    task, params, 1000 * job.seed + action.number, lambda _s, _v: False
                )
                weights = _weights(int(params["layers"]), int(params["width"]))
                metrics = {"accuracy": accuracy, "weights": float(weights)}
                engine.observe(Finished(action.number, 0, metrics), time.monotonic())
                launched.append(action.number)
    views = {v.number: v for v in engine.trials()}
    trials = [
        {
            "number": n,
            "state": views[n].state,
            "values": list(views[n].values or ()),
            "params": views[n].params,
        }
        for n in launched
        if n in views
    ]
    return {
        "algorithm": job.algorithm,
        "seed": job.seed,
        "budget": job.trials,
        "phase": engine.phase,
        "trials": trials,
        "sampler_seconds": sampler_seconds,
        "wall_seconds": time.perf_counter() - started,
    }


def hypervolume(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by ``points`` (both coordinates minimised) inside the reference box."""
    inside = sorted((x, y) for x, y in points if x < reference[0] and y < reference[1])
    area, best_y = 0.0, reference[1]
    for i, (x, y) in enumerate(inside):
        if y >= best_y:
            continue
        next_x = reference[0]
        for later_x, later_y in inside[i + 1 :]:
            if later_y < y:
                next_x = later_x
                break
        area += (next_x - x) * (reference[1] - y)
        best_y = y
    return area


def hv_curve(trials: Sequence[Mapping[str, Any]], bounds: tuple[int, int]) -> list[float]:
    """Hypervolume of the front of the first k complete trials, for every k."""
    lo, hi = (math.log10(b) for b in bounds)
    points: list[tuple[float, float]] = []
    curve = []
    for t in trials:
        if t["state"] == "complete" and len(t["values"]) == 2:
            accuracy, weights = t["values"]
            points.append((1.0 - accuracy, (math.log10(weights) - lo) / (hi - lo)))
        curve.append(hypervolume(points, REFERENCE))
    return curve


def summarise(results: Sequence[Mapping[str, Any]], bounds: tuple[int, int]) -> dict[str, Any]:
    """Per algorithm: hypervolume at half and full budget, front size, best accuracy."""
    rows = []
    for algorithm in ALGORITHMS:
        runs = [r for r in results if r["algorithm"] == algorithm]
        if not runs:
            continue
        budget = runs[0]["budget"]
        curves = [hv_curve(r["trials"], bounds) for r in runs]
        half = [c[min(len(c), budget // 2) - 1] for c in curves if c]
        full = [c[-1] for c in curves if c]
        best = [
            max((t["values"][0] for t in r["trials"] if t["values"]), default=math.nan)
            for r in runs
        ]
        small = [
            min(
                (t["values"][1] for t in r["trials"] if t["values"] and t["values"][0] >= 0.95),
                default=math.inf,
            )
            for r in runs
        ]
        rows.append(
            {
                "algorithm": algorithm,
                "seeds": len(runs),
                "budget": budget,
                "hv_half": quantiles(half),
                "hv_full": quantiles(full),
                "best_accuracy_median": quantiles(best, (0.5,))[0],
                "smallest_95_median": sorted(small)[len(small) // 2],
                "sampler_seconds_per_trial": quantiles(
                    [r["sampler_seconds"] / max(1, len(r["trials"])) for r in runs], (0.5,)
                )[0],
            }
        )
    return {"bounds": list(bounds), "reference": list(REFERENCE), "epochs": EPOCHS, "rows": rows}


def render(summary: Mapping[str, Any]) -> str:
    rows = summary["rows"]
    if not rows:
        return ""
    n = rows[0]["budget"]
    lo, hi = summary["bounds"]
    head = (
        f"digits CNN ({summary['epochs']} epochs): maximise validation accuracy, minimise "
        f"weights ({lo:,} to {hi:,} in this space); {rows[0]['seeds']} seeds, {n} trials, "
        "one at a time, no pruning, no LR test. Hypervolume of (1 - accuracy, log-scaled "
        f"weights in [0, 1]) against {tuple(summary['reference'])}; larger is better.\n\n"
    )

    def iqr(q: Sequence[float]) -> str:
        return f"{fmt(q[1], 4)} [{fmt(q[0], 4)}, {fmt(q[2], 4)}]"

    table = markdown_table(
        [
            "algorithm",
            f"hypervolume after {n // 2} trials, median [IQR]",
            f"hypervolume after {n} trials, median [IQR]",
            "best accuracy (median)",
            "fewest weights at accuracy ≥ 0.95 (median)",
            "sampler s / trial",
        ],
        [
            [
                r["algorithm"],
                iqr(r["hv_half"]),
                iqr(r["hv_full"]),
                fmt(r["best_accuracy_median"], 4),
                f"{r['smallest_95_median']:,.0f}"
                if math.isfinite(r["smallest_95_median"])
                else "none",
                fmt(r["sampler_seconds_per_trial"]),
            ]
            for r in rows
        ],
    )
    return head + table


def plot(results: Sequence[Mapping[str, Any]], bounds: tuple[int, int], out: Path) -> None:
    """Median hypervolume (and IQR) against trials, one line per algorithm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for algorithm in ALGORITHMS:
        curves = [hv_curve(r["trials"], bounds) for r in results if r["algorithm"] == algorithm]
        if not curves:
            continue
        n = max(len(c) for c in curves)
        grid = np.array([c + [c[-1]] * (n - len(c)) for c in curves if c], dtype=float)
        xs = np.arange(1, n + 1)
        (line,) = ax.plot(xs, np.median(grid, axis=0), label=algorithm, lw=1.8)
        ax.fill_between(
            xs,
            np.quantile(grid, 0.25, axis=0),
            np.quantile(grid, 0.75, axis=0),
            color=line.get_color(),
            alpha=0.12,
        )
    ax.set_xlabel("trials")
    ax.set_ylabel("hypervolume (accuracy vs log weights)")
    ax.set_title("digits: accuracy against model size")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "multi_objective.png", dpi=90)
    plt.close(fig)


def _write(results: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    bounds = size_bounds()
    summary = summarise(results, bounds)
    write_json(out / "multi_objective_runs.json", results)
    write_json(out / "multi_objective.json", summary)
    (out / "multi_objective.md").write_text(render(summary), encoding="utf-8")
    plot(results, bounds, out)
    return summary


def run(out: Path, *, seeds: int, trials: int, workers: int) -> dict[str, Any]:
    """Every (algorithm, seed) study, then the table, JSON and plot in ``out``."""
    jobs = [Job(a, s, trials) for s in range(seeds) for a in ALGORITHMS]
    results = run_jobs(
        "multi_objective", out, jobs, run_job, workers=workers, initializer=init_torch_worker
    )
    results.sort(key=lambda r: (ALGORITHMS.index(r["algorithm"]), r["seed"]))
    return _write(results, out)


def rerender(out: Path) -> None:
    """Rebuild the table and plot from ``multi_objective_runs.json`` without training."""
    path = out / "multi_objective_runs.json"
    if path.exists():
        _write(json.loads(path.read_text(encoding="utf-8")), out)
