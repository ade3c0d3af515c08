"""Shared pieces: study specs, the in-process engine driver, tables and machine info.

The driver is the point of the whole package: it runs the product's own
:class:`rheostat.engine.Engine` (sampler, pruner, LR-range analysis, narrowing)
and only replaces the backend, so trials train in this process instead of a
subprocess or a Job. What the benchmarks measure is therefore exactly what a
user's study would do, minus process and scrape latency (which
:mod:`bench.overhead` measures on its own).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from rheostat.engine import (
    Engine,
    Finished,
    LrRangeFinished,
    Progress,
    StartLrRangeTest,
    StartTrial,
    StopTrial,
)
from rheostat.spec import Scalar, StudySpec, study_from_mapping

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"

#: ``report(step, value) -> stop?``: how an in-process trial hands the engine an
#: intermediate value and learns whether the pruner stopped it.
Reporter = Callable[[int, float], bool]
#: ``(params, number, report) -> (final value, optimizer steps spent)``.
TrialFn = Callable[[Mapping[str, Scalar], int, Reporter], tuple[float, int]]
#: ``(the engine's StartLrRangeTest) -> (lrs, raw losses)``.
LrTestFn = Callable[[StartLrRangeTest], tuple[list[float], list[float]]]


def quiet() -> None:
    """Silence Optuna's per-trial logging and known-harmless warnings in workers."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def init_torch_worker() -> None:
    """A pool worker that trains: one torch thread (the pool is the parallelism), quiet."""
    import torch

    torch.set_num_threads(1)
    quiet()


def make_spec(
    name: str,
    *,
    metric: str,
    direction: str,
    parameters: Sequence[Mapping[str, Any]],
    algorithm: str,
    seed: int,
    max_trials: int,
    pruner: str = "none",
    pruner_settings: Mapping[str, Any] | None = None,
    lr_range_test: Mapping[str, Any] | None = None,
    command: Sequence[str] = ("python", "-m", "rheostat_trainer.examples.synthetic"),
    args: Sequence[str] = (),
    parallelism: int = 1,
    objectives: Sequence[Mapping[str, str]] = (),
    algorithm_settings: Mapping[str, Any] | None = None,
) -> StudySpec:
    """A validated study spec, built through the same parser ``rheostat run`` uses.

    ``maxFailedTrials`` equals the budget: a diverged trial is a data point here,
    not a reason to end the benchmark early. ``objectives`` (metric, direction
    pairs), when given, replace ``metric`` and ``direction``.
    """
    goal: dict[str, Any] = (
        {"objectives": [dict(o) for o in objectives]}
        if objectives
        else {"objective": {"metric": metric, "direction": direction}}
    )
    spec: dict[str, Any] = {
        **goal,
        "algorithm": {"name": algorithm, "seed": seed, "settings": dict(algorithm_settings or {})},
        "parameters": [dict(p) for p in parameters],
        "budget": {
            "maxTrials": max_trials,
            "parallelism": parallelism,
            "maxFailedTrials": max_trials,
        },
        "earlyStopping": {"pruner": pruner, "settings": dict(pruner_settings or {})},
        "trialTemplate": {
            "spec": {
                "containers": [{"name": "trainer", "command": list(command), "args": list(args)}],
                "restartPolicy": "Never",
            }
        },
    }
    if lr_range_test is not None:
        spec["lrRangeTest"] = dict(lr_range_test)
    document = {
        "apiVersion": "rheostat.dev/v1alpha1",
        "kind": "TuningStudy",
        "metadata": {"name": name},
        "spec": spec,
    }
    return study_from_mapping(document).spec


def grid_parameters(
    parameters: Sequence[Mapping[str, Any]], levels: Mapping[str, int] | int
) -> list[dict[str, Any]]:
    """The same search space as a grid: every parameter becomes a categorical list.

    A log-scale float gets log-spaced points (3 significant digits), a linear float
    evenly spaced points, an int at most ``levels`` evenly spaced whole numbers; both
    ends are always included. Categorical lists are kept. ``levels`` is one number
    for all parameters or a per-name mapping (missing names get 3).
    """
    grid = []
    for parameter in parameters:
        name = str(parameter["name"])
        k = levels if isinstance(levels, int) else levels.get(name, 3)
        if parameter["type"] == "categorical":
            values: list[Any] = list(parameter["values"])
        elif parameter["type"] == "int":
            lo, hi = int(parameter["min"]), int(parameter["max"])
            values = sorted({round(v) for v in np.linspace(lo, hi, min(k, hi - lo + 1))})
        elif parameter.get("log"):
            raw = np.geomspace(float(parameter["min"]), float(parameter["max"]), k)
            values = [float(f"{v:.3g}") for v in raw]
        else:
            raw = np.linspace(float(parameter["min"]), float(parameter["max"]), k)
            values = [round(float(v), 6) for v in raw]
        grid.append({"name": name, "type": "categorical", "values": values})
    return grid


@dataclass
class TrialRecord:
    """One trial as the benchmark saw it, in launch order."""

    number: int
    state: str
    value: float | None
    steps: int
    seconds: float
    params: dict[str, Scalar]


@dataclass
class StudyRun:
    """One whole study driven through the engine."""

    phase: str
    trials: list[TrialRecord] = field(default_factory=list)
    lr_steps: int = 0
    lr_seconds: float = 0.0
    lr_test: dict[str, Any] | None = None
    sampler_seconds: float = 0.0
    wall_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def drive(spec: StudySpec, run_trial: TrialFn, run_lr_test: LrTestFn | None = None) -> StudyRun:
    """Run ``spec`` to its end through the real engine, one trial at a time.

    Sequential on purpose (``parallelism: 1``): every suggestion sees every earlier
    result, which is the sampler's best case and makes runs reproducible by seed.
    Time spent inside ``next_actions`` (where the engine asks the sampler) is
    recorded as sampler time.
    """
    quiet()
    started = time.perf_counter()
    objective = spec.objective
    if objective is None:
        raise ValueError("drive() runs one-objective studies; several: bench.multi_objective")
    study = optuna.create_study(direction=objective.direction)
    engine = Engine.open(spec, study)
    run = StudyRun(phase=engine.phase)
    metric = objective.metric
    launched: list[tuple[int, int, float, dict[str, Scalar]]] = []
    guard = 0
    while not engine.done:
        guard += 1
        if guard > 10 * spec.budget.max_trials + 10:
            raise RuntimeError(f"the engine did not finish (phase {engine.phase})")
        ask_started = time.perf_counter()
        actions = engine.next_actions(time.monotonic())
        run.sampler_seconds += time.perf_counter() - ask_started
        if not actions and not engine.done:
            raise RuntimeError(f"the engine asked for nothing in phase {engine.phase}")
        for action in actions:
            if isinstance(action, StartLrRangeTest):
                if run_lr_test is None:
                    raise RuntimeError("the study has an LR range test but no runner for it")
                t0 = time.perf_counter()
                lrs, losses = run_lr_test(action)
                run.lr_seconds = time.perf_counter() - t0
                run.lr_steps = len(lrs)
                # The contract's precision: 4 significant digits, as a trainer writes them.
                engine.observe(
                    LrRangeFinished(
                        lrs=[float(f"{v:.4g}") for v in lrs],
                        losses=[float(f"{v:.4g}") for v in losses],
                    ),
                    time.monotonic(),
                )
                run.lr_test = engine.status().get("lrRangeTest")
            elif isinstance(action, StartTrial):
                t0 = time.perf_counter()
                steps, number = _run_one(engine, action, metric, run_trial)
                launched.append((number, steps, time.perf_counter() - t0, dict(action.params)))
            elif isinstance(action, StopTrial):
                continue  # only a trial that already ran to its end; nothing runs here
    views = {view.number: view for view in engine.trials()}
    for number, steps, seconds, params in launched:
        view = views.get(number)
        state = view.state if view is not None else "retried"
        value = view.value if view is not None else None
        run.trials.append(TrialRecord(number, state, value, steps, seconds, params))
    run.phase = engine.phase
    run.wall_seconds = time.perf_counter() - started
    return run


def _run_one(
    engine: Engine, action: StartTrial, metric: str, run_trial: TrialFn
) -> tuple[int, int]:
    pruned = False

    def report(step: int, value: float) -> bool:
        nonlocal pruned
        follow_up = engine.observe(Progress(action.number, step, value), time.monotonic())
        pruned = any(isinstance(a, StopTrial) and a.number == action.number for a in follow_up)
        return pruned

    value, steps = run_trial(action.params, action.number, report)
    if not pruned:
        engine.observe(Finished(action.number, 0, {metric: value}), time.monotonic())
    return steps, action.number


def best_so_far(values: Sequence[float | None], direction: str) -> list[float]:
    """Running best of the complete trials' values (NaN until the first one)."""
    better = max if direction == "maximize" else min
    best = math.nan
    out = []
    for value in values:
        if value is not None and math.isfinite(value):
            best = value if math.isnan(best) else better(best, value)
        out.append(best)
    return out


def quantiles(values: Sequence[float], qs: Sequence[float] = (0.25, 0.5, 0.75)) -> list[float]:
    """Quantiles ignoring NaN (NaN if nothing is finite)."""
    array = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if array.size == 0:
        return [math.nan for _ in qs]
    return [float(q) for q in np.quantile(array, qs)]


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a Markdown table: 3 significant digits, '—' for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if math.isinf(value):
        return "∞"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows of dicts as CSV (columns from the first row)."""
    if not rows:
        path.write_text("")
        return
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_json(path: Path, data: Any) -> None:
    """JSON with NaN/inf turned into null, so every reader can parse it."""
    path.write_text(json.dumps(_jsonable(data), indent=1, sort_keys=False) + "\n", encoding="utf-8")


def _jsonable(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, Mapping):
        return {str(k): _jsonable(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_jsonable(v) for v in data]
    return data


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, memory, load, versions, commit."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = math.nan
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory_gib = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": memory_gib,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "versions": {
            name: _version(name)
            for name in ("rheostat", "optuna", "torch", "numpy", "scikit-learn", "ray", "scipy")
        },
        "git_commit": commit or "unknown",
    }


def note_rerun(out: Path, what: str, started: Mapping[str, Any]) -> None:
    """Record in ``machine.json`` that some rows were rerun since the full run it
    describes: what, when, at which commit and under which load (``started`` is
    :func:`machine_info` taken when the rerun began). The README block prints it."""
    path = out / "machine.json"
    if not path.exists():
        return
    machine = json.loads(path.read_text(encoding="utf-8"))
    keys = ("date", "git_commit", "load_average_at_start")
    machine.setdefault("reruns", []).append({"what": what, **{k: started[k] for k in keys}})
    write_json(path, machine)


def run_jobs(
    name: str,
    out: Path,
    jobs: Sequence[Any],
    worker: Callable[[Any], dict[str, Any]],
    *,
    workers: int,
    initializer: Callable[[], None] | None = None,
    attempts: int = 3,
) -> list[dict[str, Any]]:
    """Run ``worker(job)`` for every job in spawned processes; resumable and crash-proof.

    Each result is appended to ``out/partial/<name>.jsonl`` as soon as it arrives,
    so an interrupted section resumes where it stopped, and a worker process that
    dies (a crash, a kill from outside) breaks the pool loudly instead of leaving
    ``Pool.imap`` waiting forever: the jobs still missing are retried in a fresh pool.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    partial = out / "partial" / f"{name}.jsonl"
    partial.parent.mkdir(parents=True, exist_ok=True)
    done: dict[str, dict[str, Any]] = {}
    if partial.exists():
        for line in partial.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                done[record["job_key"]] = record["result"]
    keys = [json.dumps(asdict(job), sort_keys=True) for job in jobs]
    for attempt in range(1, attempts + 1):
        pending = [(key, job) for key, job in zip(keys, jobs, strict=True) if key not in done]
        if not pending:
            break
        context = multiprocessing.get_context("spawn")
        try:
            with ProcessPoolExecutor(workers, mp_context=context, initializer=initializer) as pool:
                futures = {pool.submit(worker, job): key for key, job in pending}
                for future in as_completed(futures):
                    key = futures[future]
                    done[key] = future.result()
                    with partial.open("a", encoding="utf-8") as fh:
                        fh.write(
                            json.dumps(_jsonable({"job_key": key, "result": done[key]})) + "\n"
                        )
                    print(f"bench: {name} {len(done)}/{len(jobs)}", flush=True)
        except BrokenProcessPool as error:
            print(f"bench: {name}: a worker died ({error}); attempt {attempt} of {attempts}")
    missing = [key for key in keys if key not in done]
    if missing:
        raise RuntimeError(f"{name}: {len(missing)} jobs never finished, e.g. {missing[0]}")
    partial.unlink()
    if not any(partial.parent.iterdir()):
        partial.parent.rmdir()
    return [done[key] for key in keys]
