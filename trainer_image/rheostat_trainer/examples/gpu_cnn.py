"""A wide CNN on synthetic 32x32 images: enough arithmetic to keep one GPU busy.

Used by ``bench/gpu_check.py`` (``make gpu-check``). The data is generated on the
device from a fixed seed (no download, no host-to-device copies in the loop). Each
class is a smooth random pattern, shifted a few pixels and buried in noise, so a CNN
can learn it and the trials' scores differ by their knobs. (Labels from a random
linear projection of the pixels, as first written here, are not learnable by a net
that pools positions away: the first run on a GPU scored chance on every trial.)
It runs on CUDA when available, else CPU.

The trainer reports the training loss on *every* step (the worst case for the
SDK) and times each ``report()`` call; with ``--timings FILE`` it appends one JSON
line per run with the total report time and the total step time, so the check can
state ``report()``'s overhead as a share of step time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

import rheostat_trainer as rt

CLASSES = 10
#: The patterns' amplitude against unit noise: learnable, yet far from trivial in 5 epochs.
SIGNAL = 0.15


def _params() -> dict[str, Any]:
    try:
        return rt.params()
    except rt.EnvError as exc:
        print(f"gpu_cnn: {exc}; using the defaults", file=sys.stderr)
        return {}


def make_data(
    n: int, size: int, device: torch.device, seed: int = 1234
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` noisy images of 3 x size x size, each its class's pattern shifted at random."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(CLASSES, 3, max(1, size // 4), max(1, size // 4), generator=gen)
    patterns = nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    patterns = patterns / patterns.std()
    y = torch.randint(0, CLASSES, (n,), generator=gen)
    reach = max(1, size // 8)
    shifts = torch.randint(-reach, reach + 1, (n, 2), generator=gen)
    signal = patterns[y]
    for dx, dy in torch.unique(shifts, dim=0).tolist():
        same = (shifts[:, 0] == dx) & (shifts[:, 1] == dy)
        signal[same] = torch.roll(signal[same], (dx, dy), dims=(2, 3))
    x = torch.randn(n, 3, size, size, generator=gen) + SIGNAL * signal
    return x.to(device), y.to(device)


def build_model(width: int, blocks: int) -> nn.Module:
    """``blocks`` conv-BN-ReLU pairs per stage, three stages, channels width..4*width."""
    layers: list[nn.Module] = []
    channels = 3
    for stage in range(3):
        out = width * 2**stage
        for _ in range(blocks):
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False)]
            layers += [nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, CLASSES)]
    return nn.Sequential(*layers)


def batches(
    x: torch.Tensor, y: torch.Tensor, size: int, gen: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One shuffled pass over ``(x, y)`` in mini-batches of ``size``."""
    order = torch.randperm(len(x), generator=gen).to(x.device)
    for start in range(0, len(x) - size + 1, size):
        idx = order[start : start + size]
        yield x[idx], y[idx]


@dataclass
class Timings:
    """Per-step totals. The first step is kept apart: its ``report()`` starts the
    metrics server and its kernels are autotuned, neither of which recurs."""

    device: str
    steps: int = 0
    first_report_s: float = 0.0
    report_s: float = 0.0
    step_s: float = 0.0

    def add(self, start: float, before_report: float, end: float) -> None:
        """Count one step that began at ``start`` and called report() at ``before_report``."""
        if self.steps == 0:
            self.first_report_s = end - before_report
        else:
            self.report_s += end - before_report
            self.step_s += end - start
        self.steps += 1


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _parser() -> argparse.ArgumentParser:
    """The command line: sizes of the data and the model, and where timings go."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=16384, help="training images")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--width", type=int, default=128, help="first stage's channels")
    parser.add_argument("--blocks", type=int, default=2, help="conv blocks per stage")
    parser.add_argument("--timings", help="append this run's report()/step timings here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    params = _params()
    lr = float(params.get("lr", 0.05))
    momentum = float(params.get("momentum", 0.9))
    batch_size = max(1, round(float(params.get("batch_size", 256))))
    x, y = make_data(args.samples + args.samples // 4, args.size, device)
    x_train, y_train = x[: args.samples], y[: args.samples]
    x_val, y_val = x[args.samples :], y[args.samples :]
    model = build_model(args.width, args.blocks).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=True)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)

    if rt.mode() == "lr-range-test":
        stream = (b for _ in range(1000) for b in batches(x_train, y_train, batch_size, gen))
        lrs, _ = rt.lr_range_test(model, optimizer, loss_fn, stream, device=device)
        print(f"gpu_cnn: lr range test, {len(lrs)} steps on {device}", flush=True)
        return 0

    rt.should_stop()  # install the SIGTERM handler before training starts
    print(f"gpu_cnn: lr={lr:.3g} momentum={momentum:.3g} on {device}", flush=True)
    timed = Timings(device=str(device))
    accuracy = 0.0
    for epoch in range(args.epochs):
        model.train()
        for inputs, targets in batches(x_train, y_train, batch_size, gen):
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            value = float(loss.item())  # the sync a real loop pays to log its loss
            before = time.perf_counter()
            rt.report(timed.steps, train_loss=value)
            timed.add(start, before, time.perf_counter())
        model.eval()
        with torch.no_grad():
            accuracy = float((model(x_val).argmax(dim=1) == y_val).float().mean().item())
        rt.report(timed.steps, accuracy=accuracy)
        print(f"epoch {epoch}: val_accuracy={accuracy:.4f}", flush=True)
        if rt.should_stop():
            break
    _sync(device)
    rt.finish(accuracy=accuracy)
    if args.timings:
        with open(args.timings, "a", encoding="utf-8") as out:
            out.write(json.dumps(asdict(timed)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
