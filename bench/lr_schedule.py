"""Does the LR range test's schedule advice hold? Ground truth from one-cycle trainings.

For each workload of :mod:`bench.lr_advice` this trains to the end with PyTorch's
``OneCycleLR`` at every peak LR of a log grid (PyTorch's default start, peak / 25),
several seeds each, and calls the *good band* of peaks the grid LRs whose median final
validation accuracy is within ``BAND_POINTS`` of the best median. Then it runs the
SDK's sweep on the same workload with several seeds, takes :func:`rheostat.lr_range.
schedule_bounds` of each curve (what ``lrRangeTest.apply: schedule`` gives a study),
and scores the advice: is the advised peak in the band, how far off in decades, and
what a one-cycle training from the advised base to the advised peak
(``rt.one_cycle``) scores against the best median. The band of the constant-LR
grid (``lr_advice_raw.json``, when present) is shown beside it.

    python -m bench.lr_schedule [--smoke] [--render] [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import lr_advice
from bench.common import fmt, init_torch_worker, markdown_table, run_jobs, write_json
from bench.lr_advice import (
    BAND_POINTS,
    FULL,
    HELD_OUT,
    SMOKE,
    WORKLOADS,
    Sizes,
    Workload,
    _setup,
    band,
    grid,
    score_suggestion,
    workload,
)

#: ``OneCycleLR``'s default ``div_factor``: the ground-truth grid starts each cycle here.
DEFAULT_DIV = 25.0


@dataclass(frozen=True)
class Job:
    workload: str
    kind: str  # "train" (one-cycle to `peak` from `base`) or "lr_test"
    base: float
    peak: float
    seed: int
    epochs: int


def run_job(job: Job) -> dict[str, Any]:
    """Train one (workload, base, peak, seed) with one-cycle, or run the LR sweep once
    (exactly section 6's, :func:`bench.lr_advice.run_job`)."""
    import torch
    from torch import nn
    from torch.optim.lr_scheduler import OneCycleLR

    from rheostat_trainer.examples import digits

    if job.kind == "lr_test":
        return lr_advice.run_job(lr_advice.Job(job.workload, "lr_test", 0.0, job.seed, 0))
    w = workload(job.workload)
    model, optimizer, (x_train, y_train, x_val, y_val) = _setup(w, job.peak, job.seed)
    shuffle = torch.Generator().manual_seed(job.seed)
    loss_fn = nn.CrossEntropyLoss()
    steps = job.epochs * (len(x_train) // w.batch_size + 1)
    scheduler = OneCycleLR(
        optimizer, max_lr=job.peak, total_steps=steps, div_factor=job.peak / job.base
    )
    done = 0
    for _ in range(job.epochs):
        model.train()
        for inputs, targets in digits.batches(x_train, y_train, w.batch_size, shuffle):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(inputs), targets).backward()
            optimizer.step()
            if done < steps - 1:
                scheduler.step()
                done += 1
    accuracy, _ = digits.evaluate(model, x_val, y_val)
    return {"accuracy": accuracy if math.isfinite(accuracy) else 0.0}


def advised(lrs: Sequence[float], losses: Sequence[float]) -> tuple[float, float] | None:
    """What a study with ``apply: schedule`` would get from this curve."""
    from rheostat.lr_range import LrRangeError, analyse

    try:
        return analyse(lrs, losses).schedule
    except LrRangeError:
        return None


def collect(
    sizes: Sizes,
    out: Path,
    workers: int,
    chosen: Sequence[Workload] = WORKLOADS,
    name: str = "lr_schedule",
) -> dict[str, Any]:
    """Phase 1: the peak grid and the LR tests; phase 2: one-cycle at the advice."""
    start = time.monotonic()
    peaks = grid(sizes)
    first: list[Job] = []
    for w in chosen:
        epochs = max(1, round(w.epochs * sizes.epochs_scale))
        first += [
            Job(w.name, "train", p / DEFAULT_DIV, p, s, epochs)
            for p in peaks
            for s in range(sizes.seeds)
        ]
        first += [Job(w.name, "lr_test", 0.0, 0.0, s, 0) for s in range(sizes.lr_test_seeds)]
    results = run_jobs(name, out, first, run_job, workers=workers, initializer=init_torch_worker)
    workloads: list[dict[str, Any]] = []
    second: list[Job] = []
    for w in chosen:
        epochs = max(1, round(w.epochs * sizes.epochs_scale))
        mine = [(j, r) for j, r in zip(first, results, strict=True) if j.workload == w.name]
        scores: dict[str, list[float]] = {}
        for j, r in mine:
            if j.kind == "train":
                scores.setdefault(str(j.peak), []).append(r["accuracy"])
        curves = []
        for j, r in mine:
            if j.kind == "lr_test":
                bounds = advised(r["lrs"], r["losses"])
                curves.append({"seed": j.seed, **r, "advised": bounds})
                if bounds is not None:
                    second += [
                        Job(w.name, "train", bounds[0], bounds[1], s, epochs)
                        for s in range(sizes.seeds)
                    ]
        workloads.append({**asdict(w), "title": w.title(), "grid": scores, "curves": curves})
    trained = run_jobs(
        f"{name}_advised", out, second, run_job, workers=workers, initializer=init_torch_worker
    )
    for w in workloads:
        for curve in w["curves"]:
            if curve["advised"] is None:
                continue
            base, peak = curve["advised"]
            curve["advised_accuracy"] = [
                r["accuracy"]
                for j, r in zip(second, trained, strict=True)
                if j.workload == w["name"] and (j.base, j.peak) == (base, peak)
            ]
    return {
        "sizes": asdict(sizes),
        "workloads": workloads,
        "seconds": time.monotonic() - start,
        "workers": workers,
    }


def score(raw: dict[str, Any], constant: dict[str, Any] | None) -> dict[str, Any]:
    """Bands, advice in or out, and the advised schedule's accuracy per workload."""
    sizes = raw["sizes"]
    step = 1.0 / sizes["grid_per_decade"]
    constant_bands = {}
    for w in (constant or {}).get("workloads", []):
        grid_scores = {float(lr): v for lr, v in w["grid"].items()}
        constant_bands[w["name"]] = band(grid_scores, step)
    workloads = []
    for w in raw["workloads"]:
        b = band({float(lr): v for lr, v in w["grid"].items()}, step)
        curves = []
        for curve in w["curves"]:
            # The rules as they are now; the trainings ran at the advice of their day.
            now = advised(curve["lrs"], curve["losses"])
            if now is None:
                curves.append({"seed": curve["seed"], "advised": None})
                continue
            base, peak = now
            trained = curve["advised"] is not None and tuple(curve["advised"]) == now
            accuracy = (curve.get("advised_accuracy") or []) if trained else []
            curves.append(
                {
                    "seed": curve["seed"],
                    "advised": [base, peak],
                    "peak": score_suggestion(peak, b),
                    "median_accuracy": statistics.median(accuracy) if accuracy else None,
                }
            )
        usable = [c for c in curves if c["advised"] is not None]
        in_band = sum(1 for c in usable if c["peak"]["in_band"])
        refused = len(curves) - len(usable)
        medians = [c["median_accuracy"] for c in usable if c["median_accuracy"] is not None]
        workloads.append(
            {
                "name": w["name"],
                "title": w["title"],
                "band": b,
                "constant_band": constant_bands.get(w["name"]),
                "curves": curves,
                "peak_in_band": f"{in_band}/{len(curves)}"
                + (f" ({refused} no advice)" if refused else ""),
                "in_band_majority": in_band * 2 > len(curves),
                "advised_median_accuracy": statistics.median(medians) if medians else None,
                "shortfall": b["best_median"] - statistics.median(medians) if medians else None,
            }
        )
    return {
        "band_points": BAND_POINTS,
        "workloads": workloads,
        "workloads_in_band": sum(1 for w in workloads if w["in_band_majority"]),
        "seconds": raw["seconds"],
    }


def render(raw: dict[str, Any], out: Path, name: str = "lr_schedule") -> dict[str, Any]:
    held_out = name.endswith("_heldout")
    constant_path = out / ("lr_advice_heldout_raw.json" if held_out else "lr_advice_raw.json")
    constant = json.loads(constant_path.read_text()) if constant_path.exists() else None
    scored = score(raw, constant)
    write_json(out / f"{name}.json", scored)
    rows = []
    for w in scored["workloads"]:
        b, cb = w["band"], w["constant_band"]
        advice = [c["advised"] for c in w["curves"] if c["advised"]]
        advice_text = "; ".join(f"{fmt(a[0])} / {fmt(a[1])}" for a in advice) or "none"
        rows.append(
            [
                w["name"],
                f"{fmt(b['lo'])} .. {fmt(b['hi'])} (best {fmt(b['best_median'], 4)})",
                f"{fmt(cb['lo'])} .. {fmt(cb['hi'])} (best {fmt(cb['best_median'], 4)})"
                if cb
                else "-",
                advice_text,
                w["peak_in_band"],
                fmt(w["advised_median_accuracy"], 4),
                fmt(w["shortfall"], 4),
            ]
        )
    table = markdown_table(
        [
            "workload",
            "one-cycle peak band (median acc.)",
            "constant-LR band",
            "advised base / peak per seed",
            "peak in band",
            "advised one-cycle acc.",
            "below best",
        ],
        rows,
    )
    text = "\n".join(
        [
            "# The LR range test's schedule advice against one-cycle ground truth",
            "",
            f"Good band: peaks whose median final accuracy is within {BAND_POINTS} of the best "
            "median of a one-cycle grid (start at peak / 25, PyTorch's default). Advice: "
            "`schedule_bounds` of each seed's range-test curve, as `lrRangeTest.apply: "
            "schedule` gives a study; its accuracy is one-cycle from the advised base to the "
            "advised peak (`rt.one_cycle`), median over seeds.",
            "",
            table,
            "",
            f"Advised peak in the band (majority of seeds) on {scored['workloads_in_band']} "
            f"of {len(scored['workloads'])} workloads; {raw['workers']} workers, "
            f"{raw['seconds']:.0f} s.",
            "",
            f"![one-cycle accuracy against peak LR]({name}.png)",
            "",
        ]
    )
    (out / f"{name}.md").write_text(text, encoding="utf-8")
    plot(raw, scored, out / f"{name}.png")
    return scored


def plot(raw: dict[str, Any], scored: dict[str, Any], path: Path) -> None:
    """Top: each workload's range-test curve with the advised base and peak; bottom:
    one-cycle accuracy against peak LR, the good band shaded, the advised peaks marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rheostat.lr_range import smooth

    n = len(raw["workloads"])
    fig, axes = plt.subplots(2, n, figsize=(4 * n, 6.5), squeeze=False)
    for k, (w, s) in enumerate(zip(raw["workloads"], scored["workloads"], strict=True)):
        top, bottom = axes[0][k], axes[1][k]
        if w["curves"]:
            curve = w["curves"][0]
            top.plot(curve["lrs"], smooth(curve["losses"]), color="tab:blue")
            if s["curves"] and s["curves"][0]["advised"]:  # the rules as they are now
                for lr in s["curves"][0]["advised"]:
                    top.axvline(lr, color="tab:purple", linestyle="--")
        top.set_xscale("log")
        top.set_title(w["name"], fontsize=9)
        peaks = sorted(float(p) for p in w["grid"])
        medians = [statistics.median(w["grid"][str(p)]) for p in peaks]
        bottom.plot(peaks, medians, marker="o", color="tab:blue")
        bottom.axvspan(s["band"]["edge_lo"], s["band"]["edge_hi"], color="tab:green", alpha=0.15)
        for c in s["curves"]:
            if c["advised"]:
                bottom.axvline(c["advised"][1], color="tab:purple", linestyle="--")
        bottom.set_xscale("log")
        bottom.set_xlabel("peak learning rate")
    axes[0][0].set_ylabel("smoothed loss (seed 0)")
    axes[1][0].set_ylabel("median final val accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, under a minute")
    parser.add_argument("--render", action="store_true", help="re-score the stored raw JSON")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--held-out", action="store_true", help="the workloads no rule was tuned on"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "lr_schedule_heldout" if args.held_out else "lr_schedule"
    raw_path = args.out / f"{name}_raw.json"
    if args.render:
        raw = json.loads(raw_path.read_text(encoding="utf-8"))
    else:
        chosen = HELD_OUT if args.held_out else WORKLOADS
        raw = collect(SMOKE if args.smoke else FULL, args.out, args.workers, chosen, name)
        write_json(raw_path, raw)
    scored = render(raw, args.out, name)
    print(
        f"schedule advice: peak in band on {scored['workloads_in_band']} of "
        f"{len(scored['workloads'])} workloads"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
