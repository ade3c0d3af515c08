"""The SDK's LR sweep for frameworks whose training step computes its own loss.

:func:`rheostat_trainer.lr_finder.lr_range_test` calls ``loss_fn(model(inputs),
targets)``. Lightning's ``training_step(batch)`` and a transformers model's
``model(**batch).loss`` take the whole batch and return the loss, so each batch
is passed as ``(batch, None)`` to a wrapper module whose output *is* the loss.
The sweep itself (schedule, stopping rule, restored state, the curve written
for the tuner) stays the SDK's, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

from rheostat_trainer.lr_finder import lr_range_test

__all__ = ["sweep_step_loss"]


class _StepLoss(nn.Module):
    """``forward(batch)`` is ``step(batch, index)``; ``module`` is registered so that
    the sweep's snapshot and restore of ``state_dict()`` cover its weights."""

    def __init__(self, module: nn.Module, step: Callable[[Any, int], torch.Tensor]) -> None:
        super().__init__()
        self.module = module
        self.step = step
        self.calls = 0

    def forward(self, batch: Any) -> torch.Tensor:
        loss = self.step(batch, self.calls)
        self.calls += 1
        return loss


class _AsPairs:
    """``(batch, None)`` for each batch, re-iterable because the batches are."""

    def __init__(self, batches: Iterable[Any]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[tuple[Any, None]]:
        return ((batch, None) for batch in self.batches)


def _loss(output: torch.Tensor, _target: None) -> torch.Tensor:
    return output


def sweep_step_loss(
    module: nn.Module,
    step: Callable[[Any, int], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Any],
    device: torch.device,
    **sweep: Any,
) -> tuple[list[float], list[float]]:
    """Run :func:`~rheostat_trainer.lr_finder.lr_range_test` with ``step(batch, i)`` as
    the loss of one batch (``module`` is already on ``device``)."""
    # A one-shot iterator stays one (the sweep replays what it gave); a loader is re-read.
    pairs: Iterable[tuple[Any, None]]
    if isinstance(batches, Iterator):
        pairs = ((batch, None) for batch in batches)
    else:
        pairs = _AsPairs(batches)
    return lr_range_test(_StepLoss(module, step), optimizer, _loss, pairs, device=device, **sweep)
