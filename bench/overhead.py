"""Overhead against peers, and sampler latency as a study grows.

Overhead: the same study (30 trials of the synthetic trainer, 5 reports 0.2 s
apart, TPE, 2 at a time, no pruning) run three ways, each in a fresh process so
interpreter start-up and imports count for everyone:

* ``rheostat run`` (the local backend: a process per trial, metrics scraped over
  HTTP, SQLite storage, results and plots written at the end);
* a plain Optuna ``study.optimize(n_jobs=2)`` loop launching the same trainer;
* Ray Tune with ``OptunaSearch`` launching the same trainer from its trainables.

The floor is ``ceil(trials / parallelism) x`` the trainer's own wall time when run
alone (measured, so the trainer's interpreter start-up is part of the work, not
of anyone's overhead). Overhead per trial = (wall - floor) x parallelism / trials.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from bench.baselines import SPACE, trainer_args
from bench.common import REPO, fmt, markdown_table, quantiles, write_csv, write_json

LATENCY_SAMPLERS = ("tpe", "bayesian")


def _run_module(args: Sequence[str], timeout: float) -> tuple[dict[str, Any], float]:
    """Run ``python -m <args> --out F`` in a fresh process; (its JSON, outer wall seconds)."""
    with tempfile.TemporaryDirectory(prefix="rheostat-bench-") as folder:
        out = Path(folder) / "out.json"
        started = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", *args, "--out", str(out)],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}, time.perf_counter() - started
        wall = time.perf_counter() - started
        if out.exists():
            result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
        else:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            result = {"error": f"exit code {proc.returncode}: " + " | ".join(tail)}
        return result, wall


def _rheostat_run(trials: int, parallelism: int, steps: int, step_seconds: float) -> dict[str, Any]:
    """``rheostat run`` on a study YAML, exactly as a user would start it."""
    study = {
        "apiVersion": "rheostat.dev/v1alpha1",
        "kind": "TuningStudy",
        "metadata": {"name": "overhead"},
        "spec": {
            "objective": {"metric": "loss", "direction": "minimize"},
            "algorithm": {"name": "tpe", "seed": 0},
            "parameters": list(SPACE),
            "budget": {"maxTrials": trials, "parallelism": parallelism},
            "earlyStopping": {"pruner": "none"},
            "trialTemplate": {
                "spec": {
                    "containers": [
                        {
                            "name": "trainer",
                            "command": [
                                sys.executable,
                                "-m",
                                "rheostat_trainer.examples.synthetic",
                            ],
                            "args": trainer_args(steps, step_seconds),
                        }
                    ],
                    "restartPolicy": "Never",
                }
            },
        },
    }
    folder = Path(tempfile.mkdtemp(prefix="rheostat-bench-run-"))
    try:
        path = folder / "study.yaml"
        path.write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
        cli = Path(sys.executable).parent / "rheostat"
        command = [str(cli)] if cli.exists() else [sys.executable, "-m", "rheostat.cli"]
        started = time.perf_counter()
        proc = subprocess.run(
            [*command, "run", str(path), "--workdir", str(folder / "work"), "--no-progress"],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        wall = time.perf_counter() - started
        results_path = folder / "work" / "results.json"
        if proc.returncode != 0 or not results_path.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            return {"error": f"exit code {proc.returncode}: " + " | ".join(tail), "wall": wall}
        document = json.loads(results_path.read_text(encoding="utf-8"))
        status = document["status"]
        return {
            "best_value": status["bestTrial"]["value"],
            "complete": status["trials"]["complete"],
            "wall": wall,
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_overhead(
    out: Path, *, trials: int, parallelism: int, steps: int, step_seconds: float
) -> dict[str, Any]:
    """The three runners plus the trainer alone; writes overhead.{md,csv,json}."""
    common = [
        "--trials",
        str(trials),
        "--parallelism",
        str(parallelism),
        "--steps",
        str(steps),
        "--step-seconds",
        str(step_seconds),
    ]
    alone, _ = _run_module(["bench.baselines", "trainer", *common[:1], "5", *common[4:]], 300)
    trainer_seconds = quantiles(alone.get("seconds", []), (0.5,))[0]
    floor = math.ceil(trials / parallelism) * trainer_seconds
    runners: list[dict[str, Any]] = []
    rheostat = _rheostat_run(trials, parallelism, steps, step_seconds)
    runners.append({"runner": "rheostat run (local backend)", **rheostat})
    optuna_result, wall = _run_module(["bench.baselines", "optuna", *common], 600)
    runners.append({"runner": "plain Optuna study.optimize", **optuna_result, "wall": wall})
    ray_result, wall = _run_module(["bench.baselines", "ray", *common], 600)
    runners.append({"runner": "Ray Tune + OptunaSearch", **ray_result, "wall": wall})
    rows = []
    for r in runners:
        wall = float(r.get("wall", math.nan))
        ok = "error" not in r
        rows.append(
            {
                "runner": r["runner"],
                "trials": trials,
                "parallelism": parallelism,
                "complete": r.get("complete"),
                "wall_seconds": wall if ok else math.nan,
                "floor_seconds": floor,
                "overhead_per_trial_seconds": (wall - floor) * parallelism / trials
                if ok
                else math.nan,
                "best_value": r.get("best_value", math.nan),
                "ray_init_seconds": r.get("ray_init_seconds", math.nan),
                "error": r.get("error", ""),
            }
        )
    summary = {
        "trainer_alone_seconds": alone.get("seconds"),
        "trainer_alone_error": alone.get("error"),
        "trainer_seconds_median": trainer_seconds,
        "trainer_work_seconds": steps * step_seconds,
        "rows": rows,
        "raw": runners,
    }
    write_json(out / "overhead.json", summary)
    write_csv(out / "overhead.csv", rows)
    (out / "overhead.md").write_text(render_overhead(summary), encoding="utf-8")
    return summary


def render_overhead(summary: Mapping[str, Any]) -> str:
    rows = summary["rows"]
    first = rows[0]
    head = (
        f"{first['trials']} trials, {first['parallelism']} at a time. The trainer alone "
        f"(one process, {fmt(summary['trainer_work_seconds'])} s of work) takes "
        f"{fmt(summary['trainer_seconds_median'])} s wall (median of 5), so the floor is "
        f"{fmt(first['floor_seconds'])} s.\n\n"
    )
    table = [
        [
            r["runner"],
            f"{r['complete']}" if r["complete"] is not None else "—",
            fmt(r["wall_seconds"]),
            fmt(r["overhead_per_trial_seconds"]),
            fmt(r["best_value"]),
            fmt(r["ray_init_seconds"]),
            r["error"].replace("|", "/") if r["error"] else "",
        ]
        for r in rows
    ]
    return head + markdown_table(
        [
            "runner",
            "complete trials",
            "wall s",
            "overhead s / trial",
            "best loss",
            "ray.init s",
            "error",
        ],
        table,
    )


def run_latency(out: Path, *, sizes: Sequence[int], asks: int, timeout: float) -> dict[str, Any]:
    """Seconds per suggestion at each study size; writes sampler_latency.{md,csv,json,png}."""
    rows = []
    for sampler in LATENCY_SAMPLERS:
        capped = False
        for size in sizes:
            if capped:
                rows.append(
                    _latency_row(
                        sampler,
                        size,
                        asks,
                        None,
                        f"skipped: a smaller size hit the {timeout:.0f} s cap",
                    )
                )
                continue
            result, _ = _run_module(
                ["bench.latency", "--sampler", sampler, "--size", str(size), "--asks", str(asks)],
                timeout,
            )
            if "error" in result:
                capped = True
                rows.append(_latency_row(sampler, size, asks, None, str(result["error"])))
            else:
                rows.append(_latency_row(sampler, size, asks, result["ask_seconds"], ""))
    summary = {"asks": asks, "timeout_seconds": timeout, "rows": rows}
    write_json(out / "sampler_latency.json", summary)
    write_csv(
        out / "sampler_latency.csv",
        [{k: v for k, v in r.items() if k != "ask_seconds"} for r in rows],
    )
    (out / "sampler_latency.md").write_text(render_latency(summary), encoding="utf-8")
    plot_latency(summary, out)
    return summary


def _latency_row(
    sampler: str, size: int, asks: int, seconds: list[float] | None, note: str
) -> dict[str, Any]:
    q = quantiles(seconds or [], (0.5,))[0]
    return {
        "sampler": sampler,
        "trials_in_study": size,
        "asks": asks,
        "median_seconds_per_ask": q,
        "max_seconds_per_ask": max(seconds) if seconds else math.nan,
        "first_ask_seconds": seconds[0] if seconds else math.nan,
        "note": note,
        "ask_seconds": seconds or [],
    }


def render_latency(summary: Mapping[str, Any]) -> str:
    table = [
        [
            r["sampler"],
            str(r["trials_in_study"]),
            fmt(r["median_seconds_per_ask"]),
            fmt(r.get("first_ask_seconds")),
            fmt(r["max_seconds_per_ask"]),
            r["note"],
        ]
        for r in summary["rows"]
    ]
    return (
        f"{summary['asks']} timed `ask()` calls per size, each size in its own process, "
        f"capped at {summary['timeout_seconds']:.0f} s per size (fill included).\n\n"
        + markdown_table(
            [
                "sampler",
                "trials in study",
                "median s / ask",
                "first ask s (fresh process)",
                "max s / ask",
                "note",
            ],
            table,
        )
    )


def plot_latency(summary: Mapping[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for sampler in LATENCY_SAMPLERS:
        rows = [r for r in summary["rows"] if r["sampler"] == sampler]
        measured = [r for r in rows if _finite(r["median_seconds_per_ask"])]
        xs = [r["trials_in_study"] for r in measured]
        ys = [r["median_seconds_per_ask"] for r in measured]
        ax.plot(xs, ys, "o-", label=sampler)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("finished trials in the study")
    ax.set_ylabel("seconds per ask() (median)")
    ax.set_title("Sampler latency per suggestion")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "sampler_latency.png", dpi=110)
    plt.close(fig)


def _finite(value: float | None) -> bool:
    """A measured number (JSON turns NaN into null, so both mean "not measured")."""
    return value is not None and math.isfinite(value)


def rerender(out: Path) -> None:
    """Rewrite both sections' Markdown (and the latency plot) from their JSON."""
    path = out / "overhead.json"
    if path.exists():
        summary = json.loads(path.read_text(encoding="utf-8"))
        (out / "overhead.md").write_text(render_overhead(summary), encoding="utf-8")
    path = out / "sampler_latency.json"
    if path.exists():
        summary = json.loads(path.read_text(encoding="utf-8"))
        (out / "sampler_latency.md").write_text(render_latency(summary), encoding="utf-8")
        plot_latency(summary, out)
