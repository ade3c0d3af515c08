"""Run the benchmarks: ``python -m bench.run --full | --smoke [--only a,b] [--out DIR]``.

``--full`` rewrites ``bench/results/`` and the generated block of
``bench/README.md``; ``--smoke`` runs a tiny version of every section (1 seed,
a few trials, small sizes) into a temporary folder, so CI exercises every code
path without touching the committed numbers. ``--only`` runs some sections and
keeps the others' files, so a section can be refreshed on its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import multi_objective, overhead, sample_efficiency, synthetic_functions
from bench.common import REPO, RESULTS, fmt, machine_info, write_json

SECTIONS = ("sample_efficiency", "synthetic", "multi_objective", "overhead", "latency")
README = REPO / "bench" / "README.md"
BEGIN = "<!-- results:begin (written by python -m bench.run --full; do not edit) -->"
END = "<!-- results:end -->"


@dataclass(frozen=True)
class Sizes:
    """How big each section is; the full sizes target ~40 minutes on 2 CPU cores."""

    tasks: tuple[str, ...]
    seeds: int
    trials: int
    synthetic_seeds: int
    synthetic_trials: int
    overhead_trials: int
    overhead_step_seconds: float
    latency_sizes: tuple[int, ...]
    latency_asks: int
    latency_timeout: float
    multi_objective_seeds: int
    multi_objective_trials: int
    workers: int = 2


FULL = Sizes(
    tasks=("digits", "classify"),
    seeds=8,
    trials=30,
    synthetic_seeds=12,
    synthetic_trials=50,
    overhead_trials=30,
    overhead_step_seconds=0.2,
    latency_sizes=(50, 100, 200, 500, 1000),
    latency_asks=5,
    latency_timeout=240.0,
    multi_objective_seeds=8,
    multi_objective_trials=24,
)
SMOKE = Sizes(
    tasks=("digits", "classify"),
    seeds=1,
    trials=6,
    synthetic_seeds=1,
    synthetic_trials=8,
    overhead_trials=4,
    overhead_step_seconds=0.0,
    latency_sizes=(10, 20),
    latency_asks=1,
    latency_timeout=60.0,
    multi_objective_seeds=1,
    multi_objective_trials=4,
)


def run_sections(out: Path, sizes: Sizes, only: Sequence[str]) -> dict[str, float]:
    """Run the chosen sections into ``out``; returns each section's wall seconds."""
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    for section in only:
        started = time.perf_counter()
        print(f"bench: {section} ...", flush=True)
        if section == "sample_efficiency":
            sample_efficiency.run(
                out,
                tasks=sizes.tasks,
                seeds=sizes.seeds,
                trials=sizes.trials,
                workers=sizes.workers,
            )
        elif section == "synthetic":
            synthetic_functions.run(
                out,
                seeds=sizes.synthetic_seeds,
                trials=sizes.synthetic_trials,
                workers=sizes.workers,
            )
        elif section == "multi_objective":
            multi_objective.run(
                out,
                seeds=sizes.multi_objective_seeds,
                trials=sizes.multi_objective_trials,
                workers=sizes.workers,
            )
        elif section == "overhead":
            overhead.run_overhead(
                out,
                trials=sizes.overhead_trials,
                parallelism=2,
                steps=5,
                step_seconds=sizes.overhead_step_seconds,
            )
        elif section == "latency":
            overhead.run_latency(
                out,
                sizes=sizes.latency_sizes,
                asks=sizes.latency_asks,
                timeout=sizes.latency_timeout,
            )
        timings[section] = time.perf_counter() - started
        print(f"bench: {section} took {timings[section]:.0f} s", flush=True)
    return timings


def summary_markdown(out: Path) -> str:
    """Every section's tables and the machine, as one Markdown block."""
    machine_path = out / "machine.json"
    parts = []
    if machine_path.exists():
        m = json.loads(machine_path.read_text(encoding="utf-8"))
        versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        timings = ", ".join(f"{k} {v:.0f} s" for k, v in m.get("section_seconds", {}).items())
        parts.append(
            f"Measured {m['date']} on {m['cpu']}, {m['usable_cores']} usable cores "
            f"(shared with other work; load average at start {m['load_average_at_start']}), "
            f"{m['memory_gib']} GiB, no GPU; Python {m['python']}; {versions}; "
            f"commit {m['git_commit']}. Section wall times: {timings}.\n"
        )
        for r in m.get("reruns", []):
            parts.append(
                f"Rerun since, spliced into the stored results: {r['what']}, "
                f"{r['date']}, commit {r['git_commit']}, load average at start "
                f"{r['load_average_at_start']}.\n"
            )
    lines = headlines(out)
    if lines:
        parts.append("### Headlines\n\n" + "\n".join(f"- {line}" for line in lines) + "\n")
    titles = {
        "sample_efficiency.md": "Sample efficiency on real training (plot: sample_efficiency.png)",
        "synthetic.md": "Simple regret on synthetic functions (plot: synthetic.png)",
        "multi_objective.md": "Several objectives: accuracy against model size "
        "(plot: multi_objective.png)",
        "overhead.md": "Overhead against peers",
        "sampler_latency.md": "Sampler latency per suggestion (plot: sampler_latency.png)",
    }
    for name, title in titles.items():
        path = out / name
        if path.exists():
            parts.append(f"### {title}\n\n{path.read_text(encoding='utf-8')}")
    return "\n".join(parts)


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _trials(value: float | None) -> str:
    return "never (median)" if value is None or math.isinf(value) else f"{value:g}"


def _pareto_line(out: Path) -> list[str]:
    pareto = _read(out / "multi_objective.json")
    if not pareto or not pareto["rows"]:
        return []
    n = pareto["rows"][0]["budget"]
    parts = [f"{r['algorithm']} {fmt(r['hv_full'][1], 4)}" for r in pareto["rows"]]
    return [
        f"**Several objectives** (digits accuracy vs weights), median hypervolume after "
        f"{n} trials: " + ", ".join(parts) + "."
    ]


def headlines(out: Path) -> list[str]:
    """One line per finding, computed from the sections' JSON (no number typed in)."""
    lines: list[str] = []
    efficiency = _read(out / "sample_efficiency.json")
    if efficiency:
        for task, target in efficiency["targets"].items():
            rows = {r["algorithm"]: r for r in efficiency["rows"] if r["task"] == task}
            pairs = []
            for base in ("tpe", "bayesian"):
                plain, narrowed = rows.get(base), rows.get(f"{base}+lr")
                if plain is None or narrowed is None:
                    continue
                pairs.append(
                    f"{base} {fmt(plain['final_best_median'], 4)} → {base}+lr "
                    f"{fmt(narrowed['final_best_median'], 4)} median best accuracy, trials to "
                    f"target {_trials(plain['trials_to_target_median'])} → "
                    f"{_trials(narrowed['trials_to_target_median'])}"
                )
            lr_row = rows.get("tpe+lr") or rows.get("bayesian+lr")
            cost = ""
            if lr_row and lr_row["lr_test_fraction_of_trial"] is not None:
                cost = (
                    f"; the LR test cost {fmt(lr_row['lr_test_steps_median'])} optimizer steps, "
                    f"{100 * lr_row['lr_test_fraction_of_trial']:.0f} % of one full trial"
                )
            early = [
                f"{r['algorithm']} {r['ended_early']}/{r['seeds']}"
                for r in rows.values()
                if r.get("ended_early")
            ]
            if early:
                cost += (
                    "; studies that ended before the budget (the engine stops after 20 "
                    "duplicate proposals in a row): " + ", ".join(early)
                )
            best = max(rows.values(), key=lambda r: r["final_best_median"] or 0.0)
            lines.append(
                f"**{task}** (target {fmt(target, 4)}): "
                + "; ".join(pairs)
                + cost
                + f"; best median final accuracy: {best['algorithm']}."
            )
    synthetic = _read(out / "synthetic.json")
    if synthetic:
        n = synthetic["trials"]
        winners = []
        for function in dict.fromkeys(r["function"] for r in synthetic["rows"]):
            mine = [r for r in synthetic["rows"] if r["function"] == function]
            best = min(mine, key=lambda r: r[f"regret_at_{n}_median"])
            winners.append(f"{function} {best['algorithm']} ({fmt(best[f'regret_at_{n}_median'])})")
        lines.append(
            f"**Synthetic functions**, lowest median regret after {n} trials: "
            + ", ".join(winners)
            + "."
        )
    lines += _pareto_line(out)
    overhead_json = _read(out / "overhead.json")
    if overhead_json:
        parts = []
        for r in overhead_json["rows"]:
            if r["error"]:
                parts.append(f"{r['runner']}: failed ({r['error'][:120]})")
            else:
                parts.append(
                    f"{r['runner']} {fmt(r['overhead_per_trial_seconds'])} s "
                    f"(wall {fmt(r['wall_seconds'])} s)"
                )
        lines.append("**Overhead per trial** over the trainer's own time: " + "; ".join(parts))
    latency = _read(out / "sampler_latency.json")
    if latency:
        parts = []
        for sampler in ("tpe", "bayesian"):
            sizes = [r for r in latency["rows"] if r["sampler"] == sampler]
            done = [r for r in sizes if r["median_seconds_per_ask"] is not None]
            if done:
                last = done[-1]
                parts.append(
                    f"{sampler} {fmt(last['median_seconds_per_ask'])} s per ask at "
                    f"{last['trials_in_study']} trials"
                )
            if len(done) < len(sizes):
                parts.append(f"{sampler} beyond that: {sizes[len(done)]['note']}")
        lines.append("**Sampler latency**: " + "; ".join(parts) + ".")
    return lines


def rerender(out: Path) -> None:
    """Rebuild every section's tables and plots from its stored JSON (no re-run)."""
    sample_efficiency.rerender(out)
    synthetic_functions.rerender(out)
    multi_objective.rerender(out)
    overhead.rerender(out)


def update_readme(block: str) -> None:
    """Replace the generated block of bench/README.md (append one if missing)."""
    text = README.read_text(encoding="utf-8") if README.exists() else "# Benchmarks\n"
    generated = f"{BEGIN}\n{block.rstrip()}\n{END}"
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + generated + tail
    else:
        text = text.rstrip() + "\n\n## Results\n\n" + generated + "\n"
    README.write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--full", action="store_true", help="full sizes; rewrite bench/results/")
    mode.add_argument("--smoke", action="store_true", help="tiny sizes; a temporary folder")
    mode.add_argument(
        "--render",
        action="store_true",
        help="rebuild tables, plots and the README block from the stored JSON; run nothing",
    )
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--out", type=Path, help="output folder (overrides the default)")
    parser.add_argument(
        "--workers",
        type=int,
        help="studies run at a time (default 2); results do not depend on it, wall times do",
    )
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    sizes = FULL if args.full else SMOKE
    if args.workers:
        sizes = dataclasses.replace(sizes, workers=args.workers)
    if args.render:
        out = args.out or RESULTS
        rerender(out)
        _write_summary(out)
        return 0
    out = args.out or (RESULTS if args.full else Path(tempfile.mkdtemp(prefix="rheostat-bench-")))
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    previous = out / "machine.json"
    section_seconds: dict[str, float] = {}
    if previous.exists():
        section_seconds = json.loads(previous.read_text(encoding="utf-8")).get(
            "section_seconds", {}
        )
    section_seconds |= run_sections(out, sizes, only)
    machine["section_seconds"] = section_seconds
    machine["sizes"] = sizes.__dict__
    write_json(out / "machine.json", machine)
    _write_summary(out)
    return 0


def _write_summary(out: Path) -> None:
    """SUMMARY.md in ``out``, and the README's block when ``out`` is the committed folder."""
    block = summary_markdown(out)
    (out / "SUMMARY.md").write_text(block, encoding="utf-8")
    if out.resolve() == RESULTS.resolve():
        update_readme(block)
    print(f"bench: results in {out}")


if __name__ == "__main__":
    sys.exit(main())
