"""The real training tasks of the sample-efficiency benchmark, trained in-process.

``digits`` is the product's own example (rheostat_trainer.examples.digits): its
data split, CNN, optimizers, batching and evaluation are imported, not copied,
so the benchmark tunes the model a user would tune. ``classify`` is harder: an
MLP on a noisy, 5-class ``make_classification`` problem (generated locally, no
download), where a poor learning rate or too much dropout costs many points of
accuracy rather than one. Both train in about a second on one CPU thread.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from sklearn.datasets import make_classification
from torch import nn

from bench.common import Reporter
from rheostat.engine import StartLrRangeTest
from rheostat.lr_range import DEFAULT_RULE
from rheostat.spec import Scalar
from rheostat_trainer.examples import digits
from rheostat_trainer.lr_finder import lr_range_test

Data = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
CPU = torch.device("cpu")
BATCH_SIZE = 64


@dataclass(frozen=True)
class Task:
    """A tuning problem: data, model, epochs, search space, LR test and pruner."""

    name: str
    title: str
    epochs: int
    parameters: tuple[dict[str, Any], ...]
    #: Levels per parameter when the same space is searched as a grid.
    grid_levels: Mapping[str, int]
    lr_range_test: Mapping[str, Any]
    pruner_settings: Mapping[str, Any]

    def data(self) -> Data:
        return _data(self.name)

    def model(self, knobs: digits.Knobs) -> nn.Module:
        if self.name == "digits":
            return digits.build_model(knobs)
        x_train = self.data()[0]
        return build_mlp(knobs, x_train.shape[1], CLASSIFY_CLASSES)

    def steps_per_epoch(self) -> int:
        n_train = len(self.data()[1])
        return -(-n_train // BATCH_SIZE)


CLASSIFY_CLASSES = 5

#: The digits example's own search space and LR test (examples/digits.yaml; the
#: suggestion rule is the product's default, as there).
DIGITS = Task(
    name="digits",
    title="digits CNN (sklearn 8x8 digits, 8 epochs)",
    epochs=8,
    parameters=(
        {"name": "lr", "type": "float", "min": 1e-5, "max": 1.0, "log": True},
        {"name": "momentum", "type": "float", "min": 0.0, "max": 0.99, "default": 0.9},
        {"name": "dropout", "type": "float", "min": 0.0, "max": 0.5, "default": 0.1},
        {"name": "layers", "type": "int", "min": 1, "max": 3, "default": 2},
        {"name": "width", "type": "categorical", "values": [16, 32, 64]},
    ),
    grid_levels={"lr": 5},
    lr_range_test={
        "parameter": "lr",
        "minLr": 1e-6,
        "maxLr": 3.0,
        "steps": 100,
        "suggestion": DEFAULT_RULE,
        "apply": "narrow",
    },
    pruner_settings={"n_startup_trials": 4, "n_warmup_steps": 2},
)

#: A harder problem: 15 epochs of an MLP on noisy 5-class synthetic data.
CLASSIFY = Task(
    name="classify",
    title="MLP on make_classification (3000x30, 5 classes, 3% label noise, 15 epochs)",
    epochs=15,
    parameters=(
        {"name": "lr", "type": "float", "min": 1e-5, "max": 1.0, "log": True},
        {"name": "momentum", "type": "float", "min": 0.0, "max": 0.99, "default": 0.9},
        {"name": "dropout", "type": "float", "min": 0.0, "max": 0.6, "default": 0.1},
        {"name": "layers", "type": "int", "min": 1, "max": 4, "default": 2},
        {"name": "width", "type": "categorical", "values": [32, 64, 128, 256]},
    ),
    grid_levels={"lr": 5},
    lr_range_test={
        "parameter": "lr",
        "minLr": 1e-6,
        "maxLr": 3.0,
        "steps": 100,
        "suggestion": DEFAULT_RULE,
        "apply": "narrow",
    },
    pruner_settings={"n_startup_trials": 4, "n_warmup_steps": 3},
)

TASKS = {task.name: task for task in (DIGITS, CLASSIFY)}


@functools.cache
def _data(name: str) -> Data:
    """Each task's fixed split, built once per worker process."""
    if name == "digits":
        return digits.load_data(CPU)
    x, y = make_classification(
        n_samples=3000,
        n_features=30,
        n_informative=10,
        n_redundant=6,
        n_classes=CLASSIFY_CLASSES,
        n_clusters_per_class=2,
        class_sep=0.8,
        flip_y=0.03,
        random_state=0,
    )
    xt = torch.tensor(x, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.long)
    order = torch.randperm(len(yt), generator=torch.Generator().manual_seed(digits.SPLIT_SEED))
    n_val = len(yt) // 4
    val, train = order[:n_val], order[n_val:]
    mean, std = xt[train].mean(0), xt[train].std(0) + 1e-6
    xt = (xt - mean) / std
    return xt[train], yt[train], xt[val], yt[val]


def build_mlp(knobs: digits.Knobs, inputs: int, classes: int) -> nn.Module:
    """``layers`` hidden layers of ``width`` units (Linear, ReLU, Dropout), then a classifier."""
    blocks: list[nn.Module] = []
    size = inputs
    for _ in range(knobs.layers):
        blocks += [nn.Linear(size, knobs.width), nn.ReLU(), nn.Dropout(knobs.dropout)]
        size = knobs.width
    blocks.append(nn.Linear(size, classes))
    return nn.Sequential(*blocks)


def _knobs(params: Mapping[str, Scalar]) -> digits.Knobs:
    return digits.Knobs.from_params({**params, "batch_size": BATCH_SIZE, "optimizer": "sgd"})


def train(
    task: Task, params: Mapping[str, Scalar], seed: int, report: Reporter
) -> tuple[float, int]:
    """Train one trial, reporting validation accuracy each epoch; stop when pruned.

    Returns the last validation accuracy and the optimizer steps taken. A diverged
    run (NaN loss) keeps going, as a real trainer would, and scores near chance.
    """
    torch.manual_seed(seed)
    knobs = _knobs(params)
    x_train, y_train, x_val, y_val = task.data()
    model = task.model(knobs)
    optimizer = digits.build_optimizer(knobs, model)
    loss_fn = nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(seed)
    accuracy, steps = 0.0, 0
    for epoch in range(task.epochs):
        model.train()
        for inputs, targets in digits.batches(x_train, y_train, knobs.batch_size, shuffle):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(inputs), targets).backward()
            optimizer.step()
            steps += 1
        accuracy, _ = digits.evaluate(model, x_val, y_val)
        if report(epoch, accuracy):
            break
    return accuracy, steps


def lr_test(task: Task, action: StartLrRangeTest, seed: int) -> tuple[list[float], list[float]]:
    """The SDK's own LR sweep (``rheostat_trainer.lr_range_test``) on the task's model."""
    torch.manual_seed(seed)
    knobs = _knobs(action.params)
    x_train, y_train, _, _ = task.data()
    model = task.model(knobs)
    optimizer = digits.build_optimizer(knobs, model)
    stream = digits.endless_batches(
        x_train, y_train, knobs.batch_size, torch.Generator().manual_seed(seed)
    )
    return lr_range_test(
        model,
        optimizer,
        nn.CrossEntropyLoss(),
        stream,
        min_lr=action.min_lr,
        max_lr=action.max_lr,
        steps=action.steps,
    )
