"""Hugging Face ``transformers`` under the tuner: a ``TrainerCallback`` and an LR range test.

    from rheostat_trainer.integrations.transformers import RheostatCallback, lr_range_test

    trainer = Trainer(model, args, ..., callbacks=[RheostatCallback()])
    if rheostat_trainer.mode() == "lr-range-test":
        lr_range_test(trainer)
    else:
        trainer.train()

:class:`RheostatCallback` reports the metrics of every evaluation (``eval_loss``,
``eval_accuracy``, ...: the names the ``Trainer`` gives them, so the study's
objective is ``eval_<name>``), sets ``control.should_training_stop`` once the tuner
prunes the trial, and writes the result when training ends. :func:`lr_range_test`
sweeps the ``Trainer``'s own optimizer through its own ``compute_loss`` with the
SDK's sweep. Under ``lrRangeTest.apply: schedule``, :func:`use_one_cycle` makes
``trainer.train()`` step a ``OneCycleLR`` from the study's base to its peak. Needs the
``transformers`` extra (transformers and accelerate).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from rheostat_trainer import schedule
from rheostat_trainer._stop import should_stop
from rheostat_trainer.integrations._sweep import sweep_step_loss
from rheostat_trainer.metrics import finish, report

__all__ = ["RheostatCallback", "lr_range_test", "use_one_cycle"]


class RheostatCallback(TrainerCallback):
    """Report each evaluation, stop when pruned, ``finish`` when training ends.

    Args:
        metrics: the evaluation metric names to report (``eval_loss``, ...); by
            default every number the evaluation returned except ``epoch``, runtimes
            and throughputs.
        step: ``"epoch"`` (default; the 0-based epoch the evaluation closed, so that
            trials with different batch sizes compare at the same rung) or
            ``"global_step"`` (for ``eval_strategy="steps"``).
    """

    def __init__(self, metrics: Sequence[str] | None = None, step: str = "epoch") -> None:
        if step not in ("epoch", "global_step"):
            raise ValueError(f"step must be 'epoch' or 'global_step', got {step!r}")
        self.metrics = tuple(metrics) if metrics is not None else None
        self.step = step
        self.finished = False
        should_stop()  # the SIGTERM handler, before the first step

    def _step(self, state: TrainerState) -> int:
        if self.step == "global_step":
            return int(state.global_step)
        return max(0, math.ceil(state.epoch or 0) - 1)

    def _wanted(self, name: str) -> bool:
        if self.metrics is not None:
            return name in self.metrics
        # The epoch is the step already; timings are no objective.
        return name != "epoch" and "runtime" not in name and not name.endswith("_per_second")

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Report the evaluation's numbers (the Trainer's ``eval_`` names)."""
        values = {
            name: float(value)
            for name, value in (metrics or {}).items()
            if isinstance(value, int | float) and self._wanted(name)
        }
        if values:
            report(self._step(state), **values)
        if should_stop():
            control.should_training_stop = True

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """A pruned trial ends after this optimizer step, not after the epoch."""
        if should_stop():
            control.should_training_stop = True

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """The last reported metrics become the trial's result (also after a stop)."""
        if not self.finished:
            self.finished = True
            finish()


def lr_range_test(trainer: Trainer, **sweep: Any) -> tuple[list[float], list[float]]:
    """Run the tuner's LR range test with a ``Trainer``'s model, optimizer, data and loss.

    The optimizer is the one ``trainer.create_optimizer()`` builds from the training
    arguments (weight decay groups included); each batch of
    ``trainer.get_train_dataloader()`` goes through ``trainer.compute_loss``, so a
    subclass's own loss is used. ``sweep`` takes ``min_lr``, ``max_lr``, ``steps``,
    ``beta``, ``diverge_factor`` (the tuner's env by default). Weights and optimizer
    state are restored afterwards; returns the lrs and raw losses.
    """
    model = trainer.model
    if model is None:
        raise ValueError("lr_range_test: the Trainer has no model")
    optimizer = trainer.create_optimizer()

    def step(batch: Any, index: int) -> torch.Tensor:
        loss = trainer.compute_loss(model, batch)
        return loss if isinstance(loss, torch.Tensor) else loss[0]

    return sweep_step_loss(
        model, step, optimizer, trainer.get_train_dataloader(), trainer.args.device, **sweep
    )


def use_one_cycle(trainer: Trainer, **kwargs: Any) -> None:
    """Give ``trainer`` the optimizer it would create and a one-cycle schedule between the
    study's base and peak LR (:func:`rheostat_trainer.one_cycle`) over every optimizer
    step of ``train()``; the ``Trainer`` keeps a scheduler it finds set. ``kwargs``
    (``pct_start``, ``default=``...) pass through."""
    args = trainer.args
    if args.max_steps > 0:
        steps = args.max_steps
    else:
        batches = len(trainer.get_train_dataloader())
        per_epoch = max(1, math.ceil(batches / args.gradient_accumulation_steps))
        steps = per_epoch * math.ceil(args.num_train_epochs)
    optimizer = trainer.create_optimizer()
    # The Trainer annotates LambdaLR, yet steps any LRScheduler it is given.
    trainer.lr_scheduler = schedule.one_cycle(optimizer, total_steps=steps, **kwargs)  # type: ignore[assignment]
