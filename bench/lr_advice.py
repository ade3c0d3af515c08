"""How good is the LR range test's advice? Ground truth from full trainings.

For each workload (optimizer, depth/width, batch size, epochs all differ) this
trains to the end at every learning rate of a log grid, several seeds each, and
calls the *good band* the grid LRs whose median final validation accuracy is
within ``BAND_POINTS`` of the best median. Then it runs the SDK's own sweep
(``rheostat_trainer.lr_range_test``) on the same workload with several seeds and
scores what :mod:`rheostat.lr_range` makes of each curve, for every suggestion
rule: in the band or not, the distance to it in decades, and, for the narrowed
range the search would get, whether it covers the band and how many decades of
it lie outside.

It also times the LR test against one full trial of a realistic workload
(:mod:`bench.lr_cost`), since on the tiny benchmark tasks 100 sweep steps are a
large share of a trial.

Raw results (grid scores, curves, timings) go to ``lr_advice_raw.json``; the
scoring is recomputed from them by ``--render``, so a change to the rules in
``lr_range.py`` is re-scored without retraining.

    python -m bench.lr_advice [--smoke] [--render] [--out bench/results]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import lr_cost
from bench.common import fmt, init_torch_worker, markdown_table, run_jobs, write_json

#: The good band: median accuracy within this much of the best median.
BAND_POINTS = 0.01
#: The LR test as a study runs it (examples/digits.yaml), and the search range it narrows.
SWEEP = {"min_lr": 1e-6, "max_lr": 3.0, "steps": 100}
SEARCH_RANGE = (1e-5, 1.0)


@dataclass(frozen=True)
class Workload:
    """One training setup: which data and model, which optimizer, how long."""

    name: str
    data: str  # "digits" (CNN) or "classify" (MLP), as in bench/tasks.py
    optimizer: str
    layers: int
    width: int
    batch_size: int
    epochs: int
    momentum: float = 0.9
    dropout: float = 0.1

    def title(self) -> str:
        model = "CNN" if self.data == "digits" else "MLP"
        return (
            f"{self.data} {model} {self.layers}x{self.width}, {self.optimizer}, "
            f"batch {self.batch_size}, {self.epochs} epochs"
        )


WORKLOADS: tuple[Workload, ...] = (
    # examples/digits.yaml's own defaults: the setup of the report.
    Workload("digits-sgd", "digits", "sgd", layers=2, width=32, batch_size=64, epochs=8),
    Workload("digits-adam", "digits", "adam", layers=3, width=48, batch_size=128, epochs=6),
    Workload("mlp-sgd", "classify", "sgd", layers=2, width=128, batch_size=32, epochs=12),
    Workload("mlp-adam", "classify", "adam", layers=4, width=64, batch_size=256, epochs=20),
)

#: Workloads the rules were never tuned on (issue 18: deeper nets, smaller batches, Adam
#: as well as SGD), scored apart with ``--held-out``.
HELD_OUT: tuple[Workload, ...] = (
    Workload("deep-digits-sgd", "digits", "sgd", layers=4, width=32, batch_size=16, epochs=4),
    Workload("deep-digits-adam", "digits", "adam", layers=4, width=64, batch_size=32, epochs=4),
    Workload("deep-mlp-sgd", "classify", "sgd", layers=6, width=64, batch_size=16, epochs=8),
    Workload("wide-mlp-adam", "classify", "adam", layers=3, width=256, batch_size=32, epochs=10),
)


def workload(name: str) -> Workload:
    """A workload of either set, by name."""
    return next(w for w in (*WORKLOADS, *HELD_OUT) if w.name == name)


@dataclass(frozen=True)
class Sizes:
    grid_per_decade: int
    grid_decades: tuple[float, float]  # log10 of the first and last grid LR
    seeds: int
    lr_test_seeds: int
    epochs_scale: float
    realistic_epochs: int


FULL = Sizes(4, (-4.0, 0.5), seeds=3, lr_test_seeds=3, epochs_scale=1.0, realistic_epochs=32)
SMOKE = Sizes(1, (-2.0, -1.0), seeds=1, lr_test_seeds=1, epochs_scale=0.0, realistic_epochs=1)


@dataclass(frozen=True)
class Job:
    workload: str
    kind: str  # "train" or "lr_test"
    lr: float
    seed: int
    epochs: int


def grid(sizes: Sizes) -> list[float]:
    lo, hi = sizes.grid_decades
    n = round((hi - lo) * sizes.grid_per_decade) + 1
    return [float(f"{10 ** (lo + k / sizes.grid_per_decade):.4g}") for k in range(n)]


def _setup(w: Workload, lr: float, seed: int) -> tuple[Any, Any, Any]:
    """Seeded model and optimizer for a workload, plus its data."""
    import torch

    from bench import tasks
    from rheostat_trainer.examples import digits

    torch.manual_seed(seed)
    knobs = digits.Knobs.from_params(
        {
            "lr": lr,
            "momentum": w.momentum,
            "dropout": w.dropout,
            "layers": w.layers,
            "width": w.width,
            "batch_size": w.batch_size,
            "optimizer": w.optimizer,
        }
    )
    data = tasks.TASKS[w.data].data()
    if w.data == "digits":
        model = digits.build_model(knobs)
    else:
        model = tasks.build_mlp(knobs, data[0].shape[1], tasks.CLASSIFY_CLASSES)
    return model, digits.build_optimizer(knobs, model), data


def run_job(job: Job) -> dict[str, Any]:
    """Train one (workload, lr, seed) to the end, or run the LR sweep once."""
    import torch
    from torch import nn

    from rheostat_trainer.examples import digits
    from rheostat_trainer.lr_finder import lr_range_test

    w = workload(job.workload)
    model, optimizer, (x_train, y_train, x_val, y_val) = _setup(w, job.lr, job.seed)
    shuffle = torch.Generator().manual_seed(job.seed)
    loss_fn = nn.CrossEntropyLoss()
    if job.kind == "lr_test":
        stream = digits.endless_batches(x_train, y_train, w.batch_size, shuffle)
        lrs, losses = lr_range_test(model, optimizer, loss_fn, stream, **SWEEP)  # type: ignore[arg-type]
        return {"lrs": lrs, "losses": losses}
    for _ in range(job.epochs):
        model.train()
        for inputs, targets in digits.batches(x_train, y_train, w.batch_size, shuffle):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(inputs), targets).backward()
            optimizer.step()
    accuracy, _ = digits.evaluate(model, x_val, y_val)
    return {"accuracy": accuracy if math.isfinite(accuracy) else 0.0}


# ------------------------------------------------------------------------- scoring


def _decades(lo: float, hi: float) -> float:
    return max(0.0, math.log10(hi) - math.log10(lo))


def band(scores: dict[float, list[float]], step: float) -> dict[str, Any]:
    """The good band, and its edges widened by half a grid step (a continuous LR is
    "in" the band when the nearest grid point is)."""
    medians = {lr: statistics.median(v) for lr, v in scores.items()}
    best = max(medians.values())
    good = sorted(lr for lr, m in medians.items() if m >= best - BAND_POINTS)
    half = 10 ** (step / 2)
    return {
        "best_median": best,
        "best_lr": max(medians, key=lambda lr: medians[lr]),
        "lrs": good,
        "lo": good[0],
        "hi": good[-1],
        "edge_lo": good[0] / half,
        "edge_hi": good[-1] * half,
        "contiguous": len(good) == sum(1 for lr in medians if good[0] <= lr <= good[-1]),
        "medians": {str(lr): m for lr, m in sorted(medians.items())},
    }


def score_suggestion(lr: float, b: dict[str, Any]) -> dict[str, Any]:
    distance = max(0.0, math.log10(b["edge_lo"] / lr), math.log10(lr / b["edge_hi"]))
    return {"lr": lr, "in_band": distance == 0.0, "decades_off": distance}


def score_range(lower: float, upper: float, b: dict[str, Any]) -> dict[str, Any]:
    outside = _decades(lower, min(upper, b["edge_lo"])) + _decades(max(lower, b["edge_hi"]), upper)
    return {
        "lower": lower,
        "upper": upper,
        "covers": lower <= b["lo"] and upper >= b["hi"],
        "decades": _decades(lower, upper),
        "decades_outside": outside,
    }


def score(raw: dict[str, Any]) -> dict[str, Any]:
    """Every rule of lr_range.py on every curve, against every workload's band."""
    from rheostat import lr_range

    step = 1.0 / raw["sizes"]["grid_per_decade"]
    per_workload: list[dict[str, Any]] = []
    for w in raw["workloads"]:
        scores = {float(k): v for k, v in w["grid"].items()}
        b = band(scores, step)
        curves: list[dict[str, Any]] = []
        for curve in w["curves"]:
            rules: dict[str, Any] = {}
            try:
                lr_range.analyse(curve["lrs"], curve["losses"], bounds=SEARCH_RANGE)
            except lr_range.LrRangeError as refusal:  # no advice: the study searches its range
                curves.append({"seed": curve["seed"], "refused": str(refusal), "rules": {}})
                continue
            for rule in lr_range.SUGGESTION_RULES:
                res = lr_range.analyse(curve["lrs"], curve["losses"], rule, bounds=SEARCH_RANGE)
                if res.rule != rule:
                    rules[rule] = None
                    continue
                rules[rule] = {
                    **score_suggestion(res.suggested_lr, b),
                    "range": score_range(res.lower, res.upper, b),
                }
            curves.append({"seed": curve["seed"], "rules": rules})
        per_workload.append({"name": w["name"], "title": w["title"], "band": b, "curves": curves})
    summary: dict[str, Any] = {}
    for rule in lr_range.SUGGESTION_RULES:
        hits = 0
        covered = 0
        outside: list[float] = []
        for w in per_workload:
            got = [c["rules"][rule] for c in w["curves"] if c["rules"].get(rule) is not None]
            # A workload counts when the median seed's suggestion is in band.
            if got and sum(g["in_band"] for g in got) * 2 > len(got):
                hits += 1
            if got and all(g["range"]["covers"] for g in got):
                covered += 1
            if got:
                outside.append(_median([g["range"]["decades_outside"] for g in got]))
        summary[rule] = {
            "workloads_in_band": hits,
            "workloads_range_covers": covered,
            "worst_median_decades_outside": max(outside) if outside else math.nan,
        }
    return {"workloads": per_workload, "summary": summary}


# ------------------------------------------------------------------------- reports


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def render(raw: dict[str, Any], out: Path, name: str = "lr_advice") -> dict[str, Any]:
    from rheostat import lr_range

    scored = score(raw)
    n = len(raw["workloads"])
    lines = [
        "# LR range test advice against ground truth (bench/lr_advice.py)\n",
        f"Good band: grid LRs ({raw['sizes']['grid_per_decade']} per decade) whose median "
        f"final accuracy over {raw['sizes']['seeds']} seeds is within {BAND_POINTS} of the best "
        f"median. LR test: the SDK sweep {SWEEP}, {raw['sizes']['lr_test_seeds']} seeds, "
        f"narrowing within {SEARCH_RANGE}. A suggestion is in band when the nearest grid LR "
        "is; per workload a rule counts when most seeds are in band.\n",
    ]
    headers = ["rule", f"in band (of {n})", f"narrowed range covers band, every seed (of {n})"]
    headers.append("decades of the range outside the band (worst workload, median seed)")
    rows = [
        [
            r,
            str(s["workloads_in_band"]),
            str(s["workloads_range_covers"]),
            fmt(s["worst_median_decades_outside"], 2),
        ]
        for r, s in scored["summary"].items()
    ]
    lines += ["## Summary\n", markdown_table(headers, rows)]
    for w in scored["workloads"]:
        b = w["band"]
        lines.append(
            f"## {w['name']}: {w['title']}\n\nBand {fmt(b['lo'])} to {fmt(b['hi'])} "
            f"(best median {fmt(b['best_median'], 4)} at {fmt(b['best_lr'])}"
            f"{'' if b['contiguous'] else ', not contiguous'}).\n"
        )
        headers = ["rule", "suggestions (per seed)", "in band", "decades off (median)"]
        headers += ["narrowed range (median)", "covers band", "decades outside (median)"]
        rows = []
        refused = [c for c in w["curves"] if "refused" in c]
        if refused:
            lines.append(
                f"No advice from {len(refused)} of {len(w['curves'])} curves (a study then "
                f"searches its whole range): {refused[0]['refused']}\n"
            )
        for rule in lr_range.SUGGESTION_RULES:
            got = [c["rules"][rule] for c in w["curves"] if c["rules"].get(rule) is not None]
            if not got:
                rows.append([rule, "none", "—", "—", "—", "—", "—"])
                continue
            rows.append(
                [
                    rule,
                    ", ".join(fmt(g["lr"]) for g in got),
                    f"{sum(g['in_band'] for g in got)}/{len(got)}",
                    fmt(_median([g["decades_off"] for g in got]), 2),
                    f"{fmt(_median([g['range']['lower'] for g in got]))} to "
                    f"{fmt(_median([g['range']['upper'] for g in got]))}",
                    f"{sum(g['range']['covers'] for g in got)}/{len(got)}",
                    fmt(_median([g["range"]["decades_outside"] for g in got]), 2),
                ]
            )
        lines.append(markdown_table(headers, rows))
        med = ", ".join(f"{fmt(float(k))}: {fmt(v, 3)}" for k, v in b["medians"].items())
        lines.append(f"Median accuracy by LR: {med}\n")
    cost = raw.get("realistic")
    if cost:
        lines.append(lr_cost.markdown(cost))
    lines.append(f"Run time: {fmt(raw['seconds'])} s wall on {raw['workers']} workers.\n")
    (out / f"{name}.md").write_text("\n".join(lines), encoding="utf-8")
    plot(scored, out / f"{name}.png")
    write_json(
        out / f"{name}.json", {"sizes": raw["sizes"], "sweep": SWEEP, **scored, "realistic": cost}
    )
    return scored


def plot(scored: dict[str, Any], path: Path) -> None:
    """Median accuracy by LR per workload, the band shaded, each seed's suggestions marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = scored["workloads"]
    fig, axes = plt.subplots(1, len(workloads), figsize=(4 * len(workloads), 3.4), squeeze=False)
    markers = {"valley": "v", "steep": "^", "minimum": "o", "slide": "s"}
    for ax, w in zip(axes[0], workloads, strict=True):
        b = w["band"]
        lrs = [float(k) for k in b["medians"]]
        ax.plot(lrs, list(b["medians"].values()), "k.-", lw=1)
        ax.axvspan(b["edge_lo"], b["edge_hi"], color="tab:green", alpha=0.2, label="good band")
        for i, (rule, marker) in enumerate(markers.items()):
            got = [c["rules"][rule]["lr"] for c in w["curves"] if c["rules"].get(rule) is not None]
            ax.plot(got, [0.05 + 0.05 * i] * len(got), marker, ls="", label=rule, alpha=0.8)
        ax.set_xscale("log")
        ax.set_ylim(0, 1)
        ax.set_title(w["name"], fontsize=9)
        ax.set_xlabel("learning rate")
    axes[0][0].set_ylabel("median final val accuracy")
    axes[0][-1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def collect(
    sizes: Sizes,
    out: Path,
    workers: int,
    workloads: Sequence[Workload] = WORKLOADS,
    name: str = "lr_advice",
) -> dict[str, Any]:
    start = time.monotonic()
    lrs = grid(sizes)
    jobs: list[Job] = []
    for w in workloads:
        epochs = max(1, round(w.epochs * sizes.epochs_scale))
        jobs += [Job(w.name, "train", lr, s, epochs) for lr in lrs for s in range(sizes.seeds)]
        jobs += [Job(w.name, "lr_test", 0.0, s, 0) for s in range(sizes.lr_test_seeds)]
    results = run_jobs(name, out, jobs, run_job, workers=workers, initializer=init_torch_worker)
    rows = []
    for w in workloads:
        mine = [(j, r) for j, r in zip(jobs, results, strict=True) if j.workload == w.name]
        scores: dict[str, list[float]] = {}
        for j, r in mine:
            if j.kind == "train":
                scores.setdefault(str(j.lr), []).append(r["accuracy"])
        curves = [{"seed": j.seed, **r} for j, r in mine if j.kind == "lr_test"]
        rows.append({**asdict(w), "title": w.title(), "grid": scores, "curves": curves})
    held_out = workloads is HELD_OUT
    realistic = None if held_out else lr_cost.measure(sizes.realistic_epochs, sizes.lr_test_seeds)
    return {
        "sizes": asdict(sizes),
        "workloads": rows,
        "realistic": realistic,
        "seconds": time.monotonic() - start,
        "workers": workers,
    }


def main(argv: Sequence[str] | None = None) -> int:
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, under a minute")
    parser.add_argument("--render", action="store_true", help="re-score the stored raw JSON")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--held-out", action="store_true", help="the workloads no rule was tuned on"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "lr_advice_heldout" if args.held_out else "lr_advice"
    raw_path = args.out / f"{name}_raw.json"
    if args.render:
        raw = json.loads(raw_path.read_text(encoding="utf-8"))
    else:
        workloads = HELD_OUT if args.held_out else WORKLOADS
        sizes = SMOKE if args.smoke else FULL
        raw = collect(sizes, args.out, args.workers, workloads, name)
        write_json(raw_path, raw)
    scored = render(raw, args.out, name)
    for rule, s in scored["summary"].items():
        print(
            f"{rule}: in band on {s['workloads_in_band']}, range covers on "
            f"{s['workloads_range_covers']} of {len(scored['workloads'])} workloads"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
