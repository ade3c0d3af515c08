"""What the LR range test costs next to one trial of a realistic workload.

On the tiny benchmark tasks 100 sweep steps are a large share of a trial, so the
cost is measured on a trial that takes tens of CPU seconds: a digits CNN 3x128
trained on augmented copies of the training set (shifted a pixel each way, with
pixel noise), SGD with momentum, batch 64, validated after every epoch.

In the product the LR test and every trial are separate runs (a Job each), so
each run here is a fresh ``python -m bench.lr_cost --part ...`` process that
imports torch, loads the data and builds the model exactly as the other does,
then either sweeps or trains. Two shares are reported, both in CPU seconds:

- **compute**: the sweep against the training loop (evaluation included), each
  timed from after the identical setup to its end, in its own cold process, so
  neither side carries the other's warm-up;
- **whole run**: the two processes' total CPU (interpreter start, imports, data
  and model setup included), read from ``getrusage(RUSAGE_CHILDREN)``, i.e. what
  a Job costs besides scheduling.

The trial records cumulative CPU seconds and validation accuracy after every
epoch, so the share for a shorter trial of the same workload is read off the same
run, not chosen after the fact.

    python -m bench.lr_cost [--smoke] [--out bench/results]   # updates lr_advice_raw.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.common import REPO

#: The sweep a study runs (examples/digits.yaml).
SWEEP = {"min_lr": 1e-6, "max_lr": 3.0, "steps": 100}
COPIES, BATCH, LAYERS, WIDTH, LR = 4, 64, 3, 128, 0.05


def title(epochs: int) -> str:
    return (
        f"digits CNN {LAYERS}x{WIDTH} on {COPIES} augmented copies per epoch, SGD, "
        f"batch {BATCH}, {epochs} epochs"
    )


def _augmented(x: Any, generator: Any) -> Any:
    """Digits shifted by up to one pixel each way, with pixel noise: a new copy per call."""
    import torch

    shifts = torch.randint(-1, 2, (2,), generator=generator).tolist()
    moved = torch.roll(x, shifts=(shifts[0], shifts[1]), dims=(2, 3))
    return (moved + 0.05 * torch.randn(x.shape, generator=generator)).clamp(0.0, 1.0)


def _epoch(x: Any, y: Any, generator: Any) -> Iterator[tuple[Any, Any]]:
    """One epoch: ``COPIES`` augmented passes over the training set."""
    from rheostat_trainer.examples import digits

    for _ in range(COPIES):
        yield from digits.batches(_augmented(x, generator), y, BATCH, generator)


def part(kind: str, seed: int, epochs: int) -> dict[str, Any]:
    """One run, as its own Job would do it: set up, then sweep (``lr_test``) or train."""
    import torch
    from torch import nn

    from rheostat_trainer.examples import digits
    from rheostat_trainer.lr_finder import lr_range_test

    torch.set_num_threads(1)
    knobs = digits.Knobs(lr=LR, layers=LAYERS, width=WIDTH, batch_size=BATCH)
    x_train, y_train, x_val, y_val = digits.load_data(torch.device("cpu"))
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = digits.build_model(knobs)
    optimizer = digits.build_optimizer(knobs, model)
    loss_fn = nn.CrossEntropyLoss()
    setup_cpu = time.process_time()
    if kind == "lr_test":

        def endless() -> Iterator[tuple[Any, Any]]:
            while True:
                yield from _epoch(x_train, y_train, gen)

        stream = itertools.islice(endless(), 10**6)
        lrs, _ = lr_range_test(
            model,
            optimizer,
            loss_fn,
            stream,
            min_lr=SWEEP["min_lr"],
            max_lr=SWEEP["max_lr"],
            steps=int(SWEEP["steps"]),
        )
        compute = time.process_time() - setup_cpu
        return {"setup_cpu": setup_cpu, "compute_cpu": compute, "steps": len(lrs)}
    steps, cumulative, accuracy = 0, [], []
    for _ in range(epochs):
        model.train()
        for inputs, targets in _epoch(x_train, y_train, gen):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(inputs), targets).backward()
            optimizer.step()
            steps += 1
        accuracy.append(digits.evaluate(model, x_val, y_val)[0])
        cumulative.append(time.process_time() - setup_cpu)
    return {
        "setup_cpu": setup_cpu,
        "compute_cpu": cumulative[-1],
        "steps": steps,
        "steps_per_epoch": steps // epochs,
        "cumulative_cpu": cumulative,
        "accuracy": accuracy,
    }


def _run(kind: str, seed: int, epochs: int) -> dict[str, Any]:
    """``part`` in a fresh process; adds the process's total CPU and wall seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    command = [sys.executable, "-m", "bench.lr_cost", "--part", kind, "--seed", str(seed)]
    done = subprocess.run(
        [*command, "--epochs", str(epochs)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["wall"] = time.monotonic() - start
    return result


def measure(epochs: int, lr_tests: int) -> dict[str, Any]:
    """``lr_tests`` sweeps (seeds 0..) and one trial, each in its own process, one at a time."""
    sweeps = [_run("lr_test", seed, epochs) for seed in range(lr_tests)]
    trial = _run("trial", 0, epochs)
    sweep_compute = statistics.median(s["compute_cpu"] for s in sweeps)
    sweep_process = statistics.median(s["process_cpu"] for s in sweeps)
    sweep_steps = statistics.median(s["steps"] for s in sweeps)
    per_epoch = [
        {
            "epochs": i + 1,
            "trial_cpu_seconds": cpu,
            "accuracy": acc,
            "lr_test_share": sweep_compute / cpu,
        }
        for i, (cpu, acc) in enumerate(zip(trial["cumulative_cpu"], trial["accuracy"], strict=True))
    ]
    sweep_ms = 1000 * sweep_compute / sweep_steps
    train_ms = 1000 * trial["compute_cpu"] / trial["steps"]
    return {
        "title": title(epochs),
        "epochs": epochs,
        "trial_cpu_seconds": trial["compute_cpu"],
        "trial_process_cpu_seconds": trial["process_cpu"],
        "trial_steps": trial["steps"],
        "trial_accuracy": trial["accuracy"][-1],
        "lr_test_cpu_seconds": sweep_compute,
        "lr_test_process_cpu_seconds": sweep_process,
        "lr_test_steps": sweep_steps,
        "lr_test_share": sweep_compute / trial["compute_cpu"],
        "lr_test_process_share": sweep_process / trial["process_cpu"],
        "sweep_ms_per_step": sweep_ms,
        "train_ms_per_step": train_ms,
        "lr_tests": sweeps,
        "per_epoch": per_epoch,
    }


def markdown(cost: dict[str, Any]) -> str:
    """The section of lr_advice.md; older raw files (one in-process timing) still render."""
    from bench.common import fmt

    text = (
        f"## LR test cost on a realistic workload\n\n{cost['title']}: one trial "
        f"{fmt(cost['trial_cpu_seconds'])} CPU s ({cost['trial_steps']} steps, accuracy "
        f"{fmt(cost['trial_accuracy'], 4)}); the LR test {fmt(cost['lr_test_cpu_seconds'])} "
        f"CPU s ({fmt(cost['lr_test_steps'])} steps) = **{100 * cost['lr_test_share']:.1f} %** "
        "of one trial"
    )
    if "lr_test_process_share" not in cost:
        return text + ".\n"
    text += (
        f" (compute after setup, each in its own process; median of {len(cost['lr_tests'])} "
        f"sweeps). A sweep step costs {fmt(cost['sweep_ms_per_step'])} ms of CPU, a training "
        f"step {fmt(cost['train_ms_per_step'])} ms (evaluation included). Whole processes "
        f"(interpreter, imports, data and model setup included): LR test "
        f"{fmt(cost['lr_test_process_cpu_seconds'])} CPU s, trial "
        f"{fmt(cost['trial_process_cpu_seconds'])} CPU s = "
        f"**{100 * cost['lr_test_process_share']:.1f} %**.\n\n"
    )
    rows = [
        f"| {p['epochs']} | {fmt(p['trial_cpu_seconds'])} | {fmt(p['accuracy'], 4)} | "
        f"{100 * p['lr_test_share']:.1f} % |"
        for p in cost["per_epoch"]
    ]
    return (
        text
        + "The same trial after each epoch (LR test compute as a share of the trial so far):\n\n"
        + "| epochs | trial CPU s | val accuracy | LR test share |\n|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("lr_test", "trial"), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=32)
    parser.add_argument("--lr-tests", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="1 epoch, 1 sweep")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    if args.part:
        print(json.dumps(part(args.part, args.seed, args.epochs)))
        return 0
    from bench import lr_advice
    from bench.common import write_json

    cost = measure(1, 1) if args.smoke else measure(args.epochs, args.lr_tests)
    raw_path = args.out / "lr_advice_raw.json"
    raw = json.loads(raw_path.read_text(encoding="utf-8"))
    raw["realistic"] = cost
    write_json(raw_path, raw)
    lr_advice.render(raw, args.out)
    print(markdown(cost))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
