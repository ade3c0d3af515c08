"""The GPU check (``make gpu-check``): a real study on one CUDA GPU in under 5 minutes.

It runs ``rheostat run bench/gpu_study.yaml`` (the LR range test, then 4 trials of
the wide CNN in ``rheostat_trainer.examples.gpu_cnn``), and measures what the SDK's
``report()`` costs per training step (steady state: each trial's first call,
which starts the metrics server once, is shown apart) as a share of the step's time; the goal is
at most 1 %. The trainer times its own ``report()`` calls (one per step, the worst
case) and appends the totals to a file this script reads back. The result goes
to bench/results/gpu.md.

Without CUDA it says so and exits 0, writing nothing: it is a check for the day a
GPU is at hand, not a test. ``--cpu-smoke`` runs a tiny version on the CPU so the
logic is exercised here (tests/unit/test_gpu_check.py), writing only to --out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import REPO

STUDY = REPO / "bench" / "gpu_study.yaml"
RESULT = REPO / "bench" / "results" / "gpu.md"
GOAL_PERCENT = 1.0
TIME_LIMIT_S = 300.0
#: Trainer args that make the smoke a few seconds per process on one CPU thread.
SMOKE_ARGS = ["--epochs", "1", "--samples", "1024", "--size", "8", "--width", "4", "--blocks", "1"]


def study_document(timings: Path, smoke: bool) -> dict[str, Any]:
    """The committed study, with the timings file added and, for the smoke, shrunk."""
    doc: dict[str, Any] = yaml.safe_load(STUDY.read_text(encoding="utf-8"))
    spec = doc["spec"]
    trainer = spec["trialTemplate"]["spec"]["containers"][0]
    args = SMOKE_ARGS if smoke else list(trainer.get("args", []))
    trainer["args"] = [*args, "--timings", str(timings)]
    if smoke:
        spec["lrRangeTest"]["steps"] = 60
        spec["budget"]["trialTimeout"] = 60
    return doc


def _rheostat() -> str:
    """The ``rheostat`` script of this interpreter's environment (not whatever is on PATH)."""
    beside = Path(sys.executable).with_name("rheostat")
    return str(beside) if beside.exists() else shutil.which("rheostat") or "rheostat"


def run_study(workdir: Path, smoke: bool) -> dict[str, Any]:
    """Run the study through ``rheostat run``; its results, report timings and wall time."""
    timings = workdir / "timings.jsonl"
    study = workdir / "gpu_study.yaml"
    study.write_text(yaml.safe_dump(study_document(timings, smoke)), encoding="utf-8")
    start = time.perf_counter()
    subprocess.run(
        [_rheostat(), "run", str(study), "--workdir", str(workdir / "run"), "--no-progress"],
        check=True,
        timeout=TIME_LIMIT_S + 60,
    )
    wall = time.perf_counter() - start
    results: dict[str, Any] = json.loads((workdir / "run" / "results.json").read_text())
    lines = timings.read_text(encoding="utf-8").splitlines() if timings.exists() else []
    return {"wall_s": wall, "results": results, "timings": [json.loads(x) for x in lines]}


def summarise(run: dict[str, Any]) -> dict[str, Any]:
    """The numbers gpu.md states: trials, LR suggestion, report() overhead, wall time."""
    trials = run["results"]["trials"]
    timings = run["timings"]
    steps = sum(int(t["steps"]) - 1 for t in timings)
    report_s = sum(float(t["report_s"]) for t in timings)
    step_s = sum(float(t["step_s"]) for t in timings)
    lr = run["results"].get("lrRangeTest") or {}
    return {
        "device": timings[0]["device"] if timings else "unknown",
        "wall_s": run["wall_s"],
        "trials": len(trials),
        "complete": sum(1 for t in trials if t["state"] == "complete"),
        "best": max((t["value"] for t in trials if t["value"] is not None), default=None),
        "suggested_lr": lr.get("suggestedLr"),
        "steps": steps,
        "first_report_ms": 1e3 * max((float(t["first_report_s"]) for t in timings), default=0.0),
        "report_us": 1e6 * report_s / steps if steps else float("nan"),
        "step_ms": 1e3 * step_s / steps if steps else float("nan"),
        "overhead_percent": 100.0 * report_s / step_s if step_s else float("nan"),
    }


def _g(value: float | None) -> str:
    """A number to 4 significant digits (what the contract keeps), or ``None``."""
    return "None" if value is None else f"{value:.4g}"


def markdown(s: dict[str, Any], gpu: str) -> str:
    """bench/results/gpu.md."""
    verdict = "meets" if s["overhead_percent"] <= GOAL_PERCENT else "misses"
    within = "within" if s["wall_s"] <= TIME_LIMIT_S else "over"
    return "\n".join(
        [
            "# GPU check (`make gpu-check`)",
            "",
            f"GPU: {gpu}; trainer device: {s['device']}.",
            "Study: bench/gpu_study.yaml through `rheostat run` (LR range test, then",
            "trials of rheostat_trainer.examples.gpu_cnn, one at a time).",
            "",
            "| measure | value |",
            "|---|---|",
            f"| wall time | {s['wall_s']:.1f} s ({within} the {TIME_LIMIT_S:.0f} s budget) |",
            f"| trials (succeeded) | {s['trials']} ({s['complete']}) |",
            f"| best accuracy | {_g(s['best'])} |",
            f"| LR range test suggestion | {_g(s['suggested_lr'])} |",
            f"| training steps timed (each trial's first left out) | {s['steps']} |",
            f"| first report() of a trial (starts the metrics server) | "
            f"{s['first_report_ms']:.2f} ms |",
            f"| mean step time | {s['step_ms']:.3f} ms |",
            f"| mean report() time | {s['report_us']:.1f} us |",
            f"| report() overhead | {s['overhead_percent']:.3f} % of step time "
            f"({verdict} the {GOAL_PERCENT:.0f} % goal) |",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny run on the CPU")
    parser.add_argument("--out", type=Path, help=f"the report (default {RESULT})")
    args = parser.parse_args(argv)
    import torch  # the check's only torch use; imported late so --help stays quick

    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU here; nothing run, nothing written")
        return 0
    gpu = "none (CPU smoke)" if args.cpu_smoke else torch.cuda.get_device_name(0)
    out = args.out or (None if args.cpu_smoke else RESULT)
    with tempfile.TemporaryDirectory(prefix="rheostat-gpu-check-") as folder:
        summary = summarise(run_study(Path(folder), args.cpu_smoke))
    text = markdown(summary, gpu)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
