"""Sample efficiency on real training, and what the LR range test buys.

Every (task, algorithm, seed) is one study of ``trials`` trials driven through the
real engine (:func:`bench.common.drive`), trained in-process on one CPU thread;
studies run in parallel worker processes. The two ``+lr`` variants add the
product's LR range test (``apply: narrow``) before the first trial; its optimizer
steps are charged to the study's compute, so its payoff is net of its cost.
The median pruner of ``examples/digits.yaml`` is on for every algorithm.

Reported per task: best-so-far validation accuracy by trial and by optimizer step
(median and interquartile band across seeds, PNG), trials and optimizer steps to
reach a target, total compute, and the LR test's cost as a fraction of one trial.
The target is the median final best of random search, so the question answered
is "how soon does each algorithm get what random search gets with the whole
budget?".
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    best_so_far,
    drive,
    fmt,
    grid_parameters,
    init_torch_worker,
    machine_info,
    make_spec,
    markdown_table,
    note_rerun,
    quantiles,
    run_jobs,
    write_csv,
    write_json,
)

ALGORITHMS: tuple[str, ...] = ("grid", "random", "tpe", "bayesian", "tpe+lr", "bayesian+lr")


@dataclass(frozen=True)
class Job:
    task: str
    algorithm: str
    seed: int
    trials: int


def run_job(job: Job) -> dict[str, Any]:
    """One study: build its spec, drive it through the engine, summarise it."""
    from bench import tasks

    task = tasks.TASKS[job.task]
    base, _, lr = job.algorithm.partition("+")
    parameters = list(task.parameters)
    if base == "grid":
        parameters = grid_parameters(parameters, task.grid_levels)
    spec = make_spec(
        f"{task.name}-{base}",
        metric="accuracy",
        direction="maximize",
        parameters=parameters,
        algorithm=base,
        seed=job.seed,
        max_trials=job.trials,
        pruner="median",
        pruner_settings=task.pruner_settings,
        lr_range_test=task.lr_range_test if lr else None,
        command=("python", "-m", "rheostat_trainer.examples.digits"),
    )

    def trial(params: Mapping[str, Any], number: int, report: Any) -> tuple[float, int]:
        return tasks.train(task, params, 1000 * job.seed + number, report)

    run = drive(spec, trial, lambda action: tasks.lr_test(task, action, 1000 * job.seed + 999))
    return {
        "task": job.task,
        "algorithm": job.algorithm,
        "seed": job.seed,
        "full_trial_steps": task.epochs * task.steps_per_epoch(),
        "budget": job.trials,
        **run.to_dict(),
    }


def run(
    out: Path, *, tasks: Sequence[str], seeds: int, trials: int, workers: int
) -> dict[str, Any]:
    """Run every study, then write the tables, CSV, JSON and plots into ``out``."""
    jobs = [Job(t, a, s, trials) for t in tasks for s in range(seeds) for a in ALGORITHMS]
    results = run_jobs(
        "sample_efficiency", out, jobs, run_job, workers=workers, initializer=init_torch_worker
    )
    results.sort(key=lambda r: (r["task"], ALGORITHMS.index(r["algorithm"]), r["seed"]))
    summary = summarise(results, tasks)
    write_json(out / "sample_efficiency_runs.json", results)
    write_json(out / "sample_efficiency.json", summary)
    write_csv(out / "sample_efficiency.csv", summary["rows"])
    (out / "sample_efficiency.md").write_text(render(summary), encoding="utf-8")
    plot(results, summary, out)
    return summary


def _curves(result: Mapping[str, Any]) -> tuple[list[float], list[int]]:
    """Best-so-far accuracy per trial, and cumulative optimizer steps (LR test first)."""
    values = [t["value"] if t["state"] == "complete" else None for t in result["trials"]]
    best = best_so_far(values, "maximize")
    steps, total = [], int(result["lr_steps"])
    for t in result["trials"]:
        total += int(t["steps"])
        steps.append(total)
    return best, steps


def _reach(best: Sequence[float], steps: Sequence[int], target: float) -> tuple[float, float]:
    """(trials, optimizer steps) until best-so-far first reaches ``target``; inf if never."""
    for i, value in enumerate(best):
        if not math.isnan(value) and value >= target - 1e-9:
            return float(i + 1), float(steps[i])
    return math.inf, math.inf


def _median(values: Sequence[float]) -> float:
    finite_or_inf = sorted(values)
    if not finite_or_inf:
        return math.nan
    n = len(finite_or_inf)
    mid = (
        finite_or_inf[n // 2] if n % 2 else (finite_or_inf[n // 2 - 1] + finite_or_inf[n // 2]) / 2
    )
    return float(mid)


def summarise(results: Sequence[Mapping[str, Any]], tasks: Sequence[str]) -> dict[str, Any]:
    """Per task and algorithm: final best, trials/steps to target, compute, LR-test cost."""
    rows: list[dict[str, Any]] = []
    targets: dict[str, float] = {}
    lr_tests: list[dict[str, Any]] = []
    for task in tasks:
        mine = [r for r in results if r["task"] == task]
        random_final = [_curves(r)[0][-1] for r in mine if r["algorithm"] == "random"]
        target = quantiles(random_final, (0.5,))[0]
        targets[task] = target
        for algorithm in ALGORITHMS:
            runs = [r for r in mine if r["algorithm"] == algorithm]
            if not runs:
                continue
            finals, reach_trials, reach_steps, totals, sampler = [], [], [], [], []
            for r in runs:
                best, steps = _curves(r)
                finals.append(best[-1])
                t, s = _reach(best, steps, target)
                reach_trials.append(t)
                reach_steps.append(s)
                totals.append(float(steps[-1]) if steps else float(r["lr_steps"]))
                sampler.append(r["sampler_seconds"] / max(1, len(r["trials"])))
            q25, q50, q75 = quantiles(finals)
            full = runs[0]["full_trial_steps"]
            lr_steps = [float(r["lr_steps"]) for r in runs if r["lr_steps"]]
            pruned = [sum(t["state"] == "pruned" for t in r["trials"]) for r in runs]
            # A study can end before its budget: the engine stops asking once the
            # sampler has proposed already-tried parameters 20 times in a row.
            ran = [len(r["trials"]) for r in runs]
            rows.append(
                {
                    "task": task,
                    "algorithm": algorithm,
                    "seeds": len(runs),
                    "budget": job_budget(runs),
                    "trials_run_median": _median([float(n) for n in ran]),
                    "trials_run_min": min(ran),
                    "ended_early": sum(n < job_budget(runs) for n in ran),
                    "final_best_median": q50,
                    "final_best_q25": q25,
                    "final_best_q75": q75,
                    "target": target,
                    "reached": sum(math.isfinite(t) for t in reach_trials),
                    "trials_to_target_median": _median(reach_trials),
                    "steps_to_target_median": _median(reach_steps),
                    "total_steps_median": _median(totals),
                    "pruned_trials_median": _median([float(p) for p in pruned]),
                    "lr_test_steps_median": _median(lr_steps) if lr_steps else math.nan,
                    "lr_test_fraction_of_trial": (_median(lr_steps) / full)
                    if lr_steps
                    else math.nan,
                    "full_trial_steps": full,
                    "sampler_seconds_per_trial": _median(sampler),
                }
            )
        for r in mine:
            if r["lr_test"] and r["algorithm"].endswith("+lr"):
                trial_seconds = [t["seconds"] for t in r["trials"] if t["state"] == "complete"]
                lr_tests.append(
                    {
                        "task": task,
                        "algorithm": r["algorithm"],
                        "seed": r["seed"],
                        "steps": r["lr_steps"],
                        "seconds": r["lr_seconds"],
                        "median_complete_trial_seconds": _median(trial_seconds),
                        "suggested_lr": r["lr_test"].get("suggestedLr"),
                        "narrowed_to": r["lr_test"].get("narrowedTo"),
                    }
                )
    return {"targets": targets, "rows": rows, "lr_tests": lr_tests}


def job_budget(runs: Sequence[Mapping[str, Any]]) -> int:
    """The trial budget the studies were given (stored with each run)."""
    return int(max(r.get("budget", len(r["trials"])) for r in runs))


def render(summary: Mapping[str, Any]) -> str:
    """The Markdown tables of this section."""
    parts = []
    for task, target in summary["targets"].items():
        rows = [r for r in summary["rows"] if r["task"] == task]
        seeds = rows[0]["seeds"] if rows else 0
        parts.append(
            f"#### {task}: target accuracy {fmt(target, 4)} "
            f"(median final best of random search), {seeds} seeds\n\n"
        )
        table = []
        for r in rows:
            steps_to = r["steps_to_target_median"]
            table.append(
                [
                    r["algorithm"],
                    f"{fmt(r['final_best_median'], 4)} [{fmt(r['final_best_q25'], 4)}, "
                    f"{fmt(r['final_best_q75'], 4)}]",
                    f"{fmt(r['trials_run_median'])} (min {r['trials_run_min']}; "
                    f"{r['ended_early']}/{r['seeds']} early)",
                    f"{r['reached']}/{r['seeds']}",
                    fmt(r["trials_to_target_median"]),
                    "∞" if math.isinf(steps_to) else f"{steps_to:,.0f}",
                    f"{r['total_steps_median']:,.0f}",
                    fmt(r["pruned_trials_median"]),
                    "—"
                    if math.isnan(r["lr_test_steps_median"])
                    else f"{r['lr_test_steps_median']:.0f} "
                    f"({100 * r['lr_test_fraction_of_trial']:.0f} %)",
                    fmt(r["sampler_seconds_per_trial"]),
                ]
            )
        parts.append(
            markdown_table(
                [
                    "algorithm",
                    "final best acc., median [IQR]",
                    f"trials run of {rows[0]['budget']} (median)",
                    "reached target",
                    "trials to target (median)",
                    "optimizer steps to target (median, LR test incl.)",
                    "total optimizer steps (median)",
                    "pruned trials (median)",
                    "LR test steps (% of one full trial)",
                    "sampler s / trial",
                ],
                table,
            )
        )
        parts.append("\n")
    tests = summary["lr_tests"]
    if tests:
        parts.append("#### The LR range test, per study\n\n")
        table = []
        for t in tests:
            narrowed = t["narrowed_to"]
            table.append(
                [
                    t["task"],
                    t["algorithm"],
                    str(t["seed"]),
                    str(t["steps"]),
                    f"{t['seconds']:.2f}",
                    fmt(t["median_complete_trial_seconds"]),
                    fmt(t["suggested_lr"]),
                    f"{fmt(narrowed[0])} to {fmt(narrowed[1])}" if narrowed else "not narrowed",
                ]
            )
        parts.append(
            markdown_table(
                [
                    "task",
                    "study",
                    "seed",
                    "sweep steps",
                    "sweep s",
                    "median complete trial s",
                    "suggested lr",
                    "lr range searched (user range 1e-05 to 1)",
                ],
                table,
            )
        )
    return "".join(parts)


def plot(results: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], out: Path) -> None:
    """Best-so-far accuracy against trials and against optimizer steps, per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = list(summary["targets"])
    fig, axes = plt.subplots(len(tasks), 2, figsize=(13, 4.6 * len(tasks)), squeeze=False)
    for row, task in enumerate(tasks):
        mine = [r for r in results if r["task"] == task]
        max_steps = max((_curves(r)[1][-1] for r in mine if r["trials"]), default=1)
        xs_steps = np.linspace(0, max_steps, 300)
        for algorithm in ALGORITHMS:
            runs = [r for r in mine if r["algorithm"] == algorithm]
            if not runs:
                continue
            curves = [_curves(r) for r in runs]
            # A study that ended early keeps its best: carry it forward to the budget.
            n = job_budget(runs)
            by_trial = np.array(
                [c[0] + [c[0][-1]] * (n - len(c[0])) if c[0] else [np.nan] * n for c in curves],
                dtype=float,
            )
            xs = np.arange(1, n + 1)
            style = "--" if algorithm.endswith("+lr") else "-"
            (line,) = axes[row][0].plot(
                xs, np.nanmedian(by_trial, axis=0), style, label=algorithm, lw=1.8
            )
            axes[row][0].fill_between(
                xs,
                np.nanquantile(by_trial, 0.25, axis=0),
                np.nanquantile(by_trial, 0.75, axis=0),
                color=line.get_color(),
                alpha=0.12,
            )
            by_step = []
            for best, steps in curves:
                idx = np.searchsorted(np.asarray(steps), xs_steps, side="right") - 1
                values = np.where(idx >= 0, np.asarray(best)[np.clip(idx, 0, None)], np.nan)
                by_step.append(values)
            stacked = np.array(by_step, dtype=float)
            with np.errstate(all="ignore"):
                axes[row][1].plot(
                    xs_steps,
                    _nan_quantile(stacked, 0.5),
                    style,
                    color=line.get_color(),
                    label=algorithm,
                    lw=1.8,
                )
        target = summary["targets"][task]
        finals = [r["final_best_q75"] for r in summary["rows"] if r["task"] == task]
        top = max([target, *[f for f in finals if f is not None]]) + 0.02
        for ax in axes[row]:
            ax.axhline(target, color="grey", lw=0.8, ls=":")
            ax.set_ylabel("best validation accuracy so far")
            ax.grid(alpha=0.3)
            # Zoom on the interesting band: failed early trials would squash it.
            ax.set_ylim(bottom=max(0.0, target - 0.15), top=min(1.005, top))
        axes[row][0].set_title(f"{task}: median and IQR over seeds, by trial")
        axes[row][0].set_xlabel("trial")
        axes[row][1].set_title(f"{task}: median by optimizer steps (LR test charged first)")
        axes[row][1].set_xlabel("optimizer steps")
        axes[row][0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "sample_efficiency.png", dpi=110)
    plt.close(fig)


def _nan_quantile(stacked: Any, q: float) -> Any:
    """Column quantile that stays NaN while fewer than half the seeds have a value."""
    import numpy as np

    filled = np.where(np.isnan(stacked), -np.inf, stacked)
    return np.where(
        np.isinf(np.quantile(filled, q, axis=0)), np.nan, np.quantile(filled, q, axis=0)
    )


def rerender(out: Path) -> None:
    """Rebuild tables, CSV and plot from ``sample_efficiency_runs.json`` without training."""
    path = out / "sample_efficiency_runs.json"
    if not path.exists():
        return
    results = json.loads(path.read_text(encoding="utf-8"))
    tasks = list(dict.fromkeys(r["task"] for r in results))
    summary = summarise(results, tasks)
    write_json(out / "sample_efficiency.json", summary)
    write_csv(out / "sample_efficiency.csv", summary["rows"])
    (out / "sample_efficiency.md").write_text(render(summary), encoding="utf-8")
    plot(results, summary, out)


def rerun(
    out: Path,
    *,
    algorithms: Sequence[str],
    seeds: int,
    trials: int,
    workers: int,
    first_seed: int = 0,
) -> None:
    """Rerun some algorithms' studies and splice them into the stored runs.

    The other algorithms' rows stay those of the stored run, so one sampler change
    can be measured without retraining the whole grid; the tables are rebuilt.
    """
    started = machine_info()
    path = out / "sample_efficiency_runs.json"
    stored = json.loads(path.read_text(encoding="utf-8"))
    tasks = list(dict.fromkeys(r["task"] for r in stored))
    chosen = range(first_seed, seeds)
    jobs = [Job(t, a, s, trials) for t in tasks for s in chosen for a in algorithms]
    fresh = run_jobs(
        "sample_efficiency_rerun",
        out,
        jobs,
        run_job,
        workers=workers,
        initializer=init_torch_worker,
    )
    kept = [r for r in stored if r["algorithm"] not in algorithms or r["seed"] not in chosen]
    results = kept + fresh
    results.sort(key=lambda r: (r["task"], ALGORITHMS.index(r["algorithm"]), r["seed"]))
    write_json(path, results)
    rerender(out)
    seeds_run = f"seeds {first_seed}-{seeds - 1}"
    note_rerun(out, f"sample_efficiency: {', '.join(algorithms)} ({seeds_run})", started)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Rerun some algorithms into stored results.")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--algorithms", default="bayesian,bayesian+lr")
    parser.add_argument("--seeds", type=int, default=8, help="seeds first-seed..seeds-1")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rerun(
        args.out,
        algorithms=args.algorithms.split(","),
        seeds=args.seeds,
        trials=args.trials,
        workers=args.workers,
        first_seed=args.first_seed,
    )
