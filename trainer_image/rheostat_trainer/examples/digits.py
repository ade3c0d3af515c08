"""A small PyTorch CNN on scikit-learn's bundled 8x8 digits: a real trainer in seconds.

The data ships with scikit-learn (no download), so the example runs offline on
a laptop, in CI and on a cluster alike; an epoch takes a fraction of a second
on one CPU thread, so a study of dozens of trials is a demo, not a wait.

Knobs (all optional, from ``rheostat_trainer.params()``): ``lr``, ``momentum``,
``dropout``, ``layers`` (conv blocks), ``width`` (channels), ``batch_size``,
``optimizer`` (``sgd`` | ``adam`` | ``rmsprop``). In ``trial`` mode it trains
and reports validation accuracy and loss (and the model's ``weights`` count, a
second objective for a multi-objective study) every epoch; in ``lr-range-test`` mode
it runs ``lr_range_test`` on the same model and data and exits.

Under a launcher that sets ``WORLD_SIZE`` > 1 (``torchrun``, e.g. in a trial of
several pods, ``trialTemplate.replicas``) it trains with DistributedDataParallel:
gloo on CPU, NCCL on GPUs, each rank taking its share of every epoch's batches.
Every rank calls ``report``/``finish``; only global rank 0's count.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from sklearn.datasets import load_digits
from torch import nn

import rheostat_trainer as rt

#: The fixed validation split: same for every trial, so their scores compare.
SPLIT_SEED = 1234
VALIDATION_FRACTION = 0.2


@dataclass(frozen=True)
class Knobs:
    """The hyperparameters, with defaults that train well (~97 % in 8 epochs)."""

    lr: float = 0.05
    momentum: float = 0.9
    dropout: float = 0.1
    layers: int = 2
    width: int = 32
    batch_size: int = 64
    optimizer: str = "sgd"

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Knobs:
        """Take known knobs from ``params`` (tolerating ``2.0`` for an int, and
        ``learning_rate`` for ``lr``); unknown parameters are ignored."""
        d = cls()
        lr = params.get("lr", params.get("learning_rate", d.lr))
        return cls(
            lr=float(lr),
            momentum=float(params.get("momentum", d.momentum)),
            dropout=float(params.get("dropout", d.dropout)),
            layers=max(1, round(float(params.get("layers", d.layers)))),
            width=max(1, round(float(params.get("width", d.width)))),
            batch_size=max(1, round(float(params.get("batch_size", d.batch_size)))),
            optimizer=str(params.get("optimizer", d.optimizer)).lower(),
        )


def load_data(
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits as ``(N, 1, 8, 8)`` floats in [0, 1], split 80/20 by a fixed seed."""
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_val = int(len(y) * VALIDATION_FRACTION)
    val, train = order[:n_val], order[n_val:]
    return x[train].to(device), y[train].to(device), x[val].to(device), y[val].to(device)


def build_model(knobs: Knobs) -> nn.Module:
    """``layers`` conv blocks (3x3 conv, ReLU; 2x2 max-pool after the first two,
    8x8 -> 4x4 -> 2x2), dropout, then a linear classifier."""
    blocks: list[nn.Module] = []
    channels, side = 1, 8
    for i in range(knobs.layers):
        blocks += [nn.Conv2d(channels, knobs.width, 3, padding=1), nn.ReLU()]
        if i < 2:
            blocks.append(nn.MaxPool2d(2))
            side //= 2
        channels = knobs.width
    blocks += [nn.Flatten(), nn.Dropout(knobs.dropout), nn.Linear(channels * side * side, 10)]
    return nn.Sequential(*blocks)


def build_optimizer(knobs: Knobs, model: nn.Module) -> torch.optim.Optimizer:
    params = model.parameters()
    if knobs.optimizer == "sgd":
        return torch.optim.SGD(params, lr=knobs.lr, momentum=knobs.momentum)
    if knobs.optimizer == "adam":
        # momentum maps onto Adam's beta1, so one search space serves all three.
        return torch.optim.Adam(params, lr=knobs.lr, betas=(min(knobs.momentum, 0.999), 0.999))
    if knobs.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=knobs.lr, momentum=knobs.momentum)
    raise ValueError(f"optimizer must be sgd, adam or rmsprop, got {knobs.optimizer!r}")


def batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One shuffled epoch of ``(inputs, targets)`` minibatches."""
    order = torch.randperm(len(y), generator=generator).to(x.device)
    for start in range(0, len(y), batch_size):
        idx = order[start : start + batch_size]
        yield x[idx], y[idx]


def endless_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Reshuffled epochs back to back, for the LR sweep (100 steps > one epoch)."""
    while True:
        yield from batches(x, y, batch_size, generator)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Validation ``(accuracy, mean cross-entropy)``."""
    model.eval()
    logits = model(x)
    loss = float(nn.functional.cross_entropy(logits, y).item())
    accuracy = float((logits.argmax(dim=1) == y).float().mean().item())
    return accuracy, loss


def start_distributed(device: torch.device) -> tuple[int, int]:
    """``(rank, world size)``: joins the launcher's process group when there is one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend)
    return torch.distributed.get_rank(), world


def my_share(
    epoch: Iterator[tuple[torch.Tensor, torch.Tensor]], rank: int, world: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's batches of an epoch: as many on every rank (DDP's all-reduce of
    gradients pairs them up; one extra backward on one rank would hang the others)."""
    every = list(epoch)
    usable = len(every) // world * world
    return every[rank:usable:world]


def all_agree_to_stop(stop: bool, world: int) -> bool:
    """Stop when any rank was asked to (SIGTERM), so that none waits alone in a collective."""
    if world <= 1:
        return stop
    flag = torch.tensor([1 if stop else 0])
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item())


def params_or_defaults(program: str) -> dict[str, Any]:
    """The trial's parameters, or none (the defaults) when run by hand outside a study."""
    try:
        return rt.params()
    except rt.EnvError as exc:
        print(f"{program}: {exc}; using the defaults", file=sys.stderr)
        return {}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="init and shuffling seed")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # trials run side by side; one thread each is fastest overall
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local % torch.cuda.device_count()}" if cuda else "cpu")
    rank, world = start_distributed(device)
    knobs = Knobs.from_params(params_or_defaults("digits"))
    x_train, y_train, x_val, y_val = load_data(device)
    model = build_model(knobs).to(device)
    optimizer = build_optimizer(knobs, model)
    loss_fn = nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(args.seed)

    if rt.mode() == "lr-range-test":
        stream = endless_batches(x_train, y_train, knobs.batch_size, shuffle)
        lrs, losses = rt.lr_range_test(model, optimizer, loss_fn, stream, device=device)
        finite = [(loss, lr) for lr, loss in zip(lrs, losses, strict=True) if math.isfinite(loss)]
        best_loss, best_lr = min(finite) if finite else (math.nan, math.nan)
        print(f"lr range test: {len(lrs)} steps, lowest loss {best_loss:.4g} at lr {best_lr:.3g}")
        return 0

    # The model's size: a second objective for a multi-objective study (accuracy vs size).
    size = float(sum(p.numel() for p in model.parameters()))
    print(f"digits: {knobs} on {device}, rank {rank} of {world}, {size:.0f} parameters", flush=True)
    trained: nn.Module = model
    if world > 1:
        trained = nn.parallel.DistributedDataParallel(model)
    accuracy, val_loss = math.nan, math.nan
    rt.should_stop()  # install the SIGTERM handler before training starts
    for epoch in range(args.epochs):
        started = time.perf_counter()
        trained.train()
        epoch_batches = batches(x_train, y_train, knobs.batch_size, shuffle)
        for inputs, targets in my_share(epoch_batches, rank, world):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(trained(inputs), targets).backward()
            optimizer.step()
        accuracy, val_loss = evaluate(model, x_val, y_val)
        rt.report(epoch, accuracy=accuracy, loss=val_loss, weights=size)
        seconds = time.perf_counter() - started
        print(
            f"epoch {epoch}: val_accuracy={accuracy:.4f} val_loss={val_loss:.4f} ({seconds:.2f}s)",
            flush=True,
        )
        if all_agree_to_stop(rt.should_stop(), world):
            print("digits: stopping early (SIGTERM)", flush=True)
            break
    rt.finish(accuracy=accuracy, loss=val_loss, weights=size)
    if world > 1:
        # Leave together: a rank that tears gloo down while its peer is already gone
        # can abort (SIGABRT, "terminate called without an active exception"), seen
        # on the real node on rank 1 after its last epoch; that exit fails the trial.
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
