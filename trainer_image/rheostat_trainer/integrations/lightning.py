"""PyTorch Lightning under the tuner: a callback for trials, an LR range test for modules.

    from rheostat_trainer.integrations.lightning import RheostatCallback, lr_range_test

    if rheostat_trainer.mode() == "lr-range-test":
        lr_range_test(module, datamodule=datamodule)
    else:
        trainer = L.Trainer(max_epochs=20, callbacks=[RheostatCallback()])
        trainer.fit(module, datamodule=datamodule)

:class:`RheostatCallback` reports every validation epoch's logged metrics (every
training epoch's while no validation has run, e.g. with ``limit_val_batches=0``), asks
Lightning to stop (``trainer.should_stop``, as Lightning's own early stopping
does) once the tuner prunes the trial, and writes the final result when fitting
ends. :func:`lr_range_test` drives the module's own ``training_step`` and first
optimizer through the SDK's sweep (:func:`rheostat_trainer.lr_finder.lr_range_test`),
so the curve, its stopping rule and the restored weights are exactly the SDK's.
Under ``lrRangeTest.apply: schedule``, ``return one_cycle(self, optimizer)`` from
``configure_optimizers`` steps a ``OneCycleLR`` from the study's base to its peak
every batch. Needs the ``lightning`` extra.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch

from rheostat_trainer import schedule
from rheostat_trainer._stop import should_stop
from rheostat_trainer.integrations._sweep import sweep_step_loss
from rheostat_trainer.metrics import finish, report

__all__ = ["RheostatCallback", "lr_range_test", "one_cycle"]


def _scalars(metrics: Mapping[str, Any], names: Sequence[str] | None) -> dict[str, float]:
    """Plain floats from Lightning's logged metrics (0-d tensors or numbers)."""
    values: dict[str, float] = {}
    for name, value in metrics.items():
        if names is not None and name not in names:
            continue
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                continue
            values[name] = float(value.detach().cpu().item())
        elif isinstance(value, int | float):
            values[name] = float(value)
    return values


class RheostatCallback(pl.Callback):
    """Report each validation epoch, stop when pruned, ``finish`` at the end of ``fit``.

    Args:
        metrics: the logged metric names to report (``self.log(name, ...)``); by
            default every scalar in ``trainer.callback_metrics``. The study's
            ``objective.metric`` must be among them, under the same name.

    A trial pruned mid-epoch stops after its current batch. Lightning answers the
    SIGTERM itself too, by raising ``SIGTERMException`` (a ``SystemExit``); the
    result is then written from ``on_exception``. Any other exception writes no
    result, so a crash is recorded as a failed trial, not as its last good epoch.
    """

    def __init__(self, metrics: Sequence[str] | None = None) -> None:
        super().__init__()
        self.metrics = tuple(metrics) if metrics is not None else None
        self.finished = False
        self.reported = False  # anything reported during this fit
        self.validated = False  # a validation epoch reported: training epochs no longer do
        # Installed now, before Trainer.fit: Lightning then chains our handler into its own.
        should_stop()

    def _stop_if_asked(self, trainer: pl.Trainer) -> None:
        if should_stop():
            trainer.should_stop = True

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """A pruned trial ends after this batch, not after the whole epoch."""
        self._stop_if_asked(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report this epoch's metrics (all epoch-level values are aggregated by now)."""
        if trainer.sanity_checking:
            return
        self.validated = self._report(trainer) or self.validated
        self._stop_if_asked(trainer)

    def _report(self, trainer: pl.Trainer) -> bool:
        """Report the logged scalars as step ``current_epoch``; False if there were none."""
        values = _scalars(trainer.callback_metrics, self.metrics)
        if values:
            report(trainer.current_epoch, **values)
            self.reported = True
        return bool(values)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Until a validation epoch has reported, report the training epoch's metrics.

        With validation off (``limit_val_batches=0``) this is all the tuner gets; once
        validation has reported, only validation epochs are reported.
        """
        if not self.validated:
            self._report(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The last reported metrics become the trial's result.

        If nothing was reported (fit stopped before any epoch ended), the metrics
        logged so far (``trainer.callback_metrics``) are reported first, so the
        result never comes out empty while Lightning holds values.
        """
        if not self.reported:
            self._report(trainer)
        self._finish()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Stopped by the tuner (Lightning's ``SIGTERMException``): still write the result."""
        if should_stop():
            self._finish()

    def _finish(self) -> None:
        if not self.finished:
            self.finished = True
            finish()


def _training_step(module: pl.LightningModule) -> Callable[[Any, int], torch.Tensor]:
    """The module's ``training_step`` as a function of a batch that returns the loss."""

    def step(batch: Any, index: int) -> torch.Tensor:
        with warnings.catch_warnings():
            # No Trainer is attached during the sweep: self.log() has nowhere to go.
            warnings.filterwarnings("ignore", message=r".*self\.log\(\)")
            output = module.training_step(batch, index)
        if isinstance(output, Mapping):
            output = output.get("loss")
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                "lr_range_test: training_step must return the loss (a tensor or a dict "
                f"with 'loss'), got {type(output).__name__}"
            )
        return output

    return step


def _first_optimizer(configured: Any) -> torch.optim.Optimizer:
    """The first optimizer in any shape ``configure_optimizers`` may return."""
    if isinstance(configured, torch.optim.Optimizer):
        return configured
    if isinstance(configured, Mapping):
        return _first_optimizer(configured["optimizer"])
    if isinstance(configured, list | tuple) and configured:
        return _first_optimizer(configured[0])
    raise TypeError(
        f"lr_range_test: configure_optimizers returned no optimizer ({type(configured).__name__})"
    )


def _train_batches(
    module: pl.LightningModule, datamodule: pl.LightningDataModule | None
) -> Iterable[Any]:
    if datamodule is not None:
        datamodule.prepare_data()
        datamodule.setup("fit")
        return datamodule.train_dataloader()  # type: ignore[no-any-return]
    return module.train_dataloader()  # type: ignore[no-any-return]


def lr_range_test(
    module: pl.LightningModule,
    batches: Iterable[Any] | None = None,
    *,
    datamodule: pl.LightningDataModule | None = None,
    device: torch.device | str | None = None,
    **sweep: Any,
) -> tuple[list[float], list[float]]:
    """Run the tuner's LR range test on a ``LightningModule`` and report the curve.

    Args:
        module: its ``training_step`` must return the loss (automatic optimization);
            ``self.log`` calls in it are ignored during the sweep.
        batches: training batches; by default ``datamodule.train_dataloader()`` (after
            ``prepare_data`` and ``setup("fit")``), else ``module.train_dataloader()``.
        device: where to run; by default CUDA when available, else the CPU. The
            module is moved there.
        sweep: ``min_lr``, ``max_lr``, ``steps``, ``beta``, ``diverge_factor`` of
            :func:`rheostat_trainer.lr_finder.lr_range_test` (the tuner's env by default).

    The first optimizer of ``configure_optimizers()`` is swept; learning-rate
    schedulers are not stepped. Weights and optimizer state are restored
    afterwards. Returns the lrs and raw losses, as the SDK's sweep does.
    """
    target = torch.device(
        device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    module.to(target)
    optimizer = _first_optimizer(module.configure_optimizers())
    source = batches if batches is not None else _train_batches(module, datamodule)
    return sweep_step_loss(module, _training_step(module), optimizer, source, target, **sweep)


def one_cycle(
    module: pl.LightningModule, optimizer: torch.optim.Optimizer, **kwargs: Any
) -> dict[str, Any]:
    """What ``configure_optimizers`` returns for a one-cycle schedule between the study's
    base and peak LR (:func:`rheostat_trainer.one_cycle`), stepped every batch over the
    trainer's ``estimated_stepping_batches``; ``kwargs`` (``pct_start``, ``default=``...)
    pass through."""
    total = int(module.trainer.estimated_stepping_batches)
    scheduler = schedule.one_cycle(optimizer, total_steps=total, **kwargs)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
