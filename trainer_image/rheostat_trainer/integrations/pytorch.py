"""A plain PyTorch training loop under the tuner, with no framework in between.

    from rheostat_trainer.integrations.pytorch import Trial

    trial = Trial()
    if trial.is_lr_range_test:
        trial.lr_range_test(model, optimizer, loss_fn, train_batches)
        return
    for epoch in trial.epochs(max_epochs):   # ends early once the trial is pruned
        train_one_epoch(...)
        trial.report(accuracy=acc, loss=val_loss)
    # finish() has been called with the last reported metrics

Only the SDK's calls are used (``report``, ``should_stop``, ``finish``,
``lr_range_test``), so a loop written this way follows the contract exactly as a
hand-written one does; the helper only removes the three things people forget:
installing the SIGTERM handler before the first epoch, checking it after every
epoch, and writing the final result when the loop ends early.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, SupportsFloat

from rheostat_trainer._env import mode
from rheostat_trainer._stop import should_stop
from rheostat_trainer.lr_finder import lr_range_test as _lr_range_test
from rheostat_trainer.metrics import finish, report

__all__ = ["Trial"]


class Trial:
    """One trial's side of the contract for an epoch loop.

    The SIGTERM handler is installed on construction, so a trial pruned while it
    loads its data still ends cleanly.
    """

    def __init__(self) -> None:
        should_stop()
        self.epoch = -1
        self.stopped = False
        self.finished = False

    @property
    def is_lr_range_test(self) -> bool:
        """True when the tuner started this process for the LR range test, not a trial."""
        return mode() == "lr-range-test"

    def epochs(self, max_epochs: int) -> Iterator[int]:
        """Yield ``0 .. max_epochs - 1``; stop after an epoch once the tuner asked to stop.

        When the loop ends, by exhaustion or by that stop, :meth:`finish` is called
        with the last reported metrics. An exception in the loop body, or a
        ``break`` of the caller's own, writes no result: a crash must look like one.
        """
        for epoch in range(max_epochs):
            self.epoch = epoch
            yield epoch
            if should_stop():
                self.stopped = True
                break
        self.finish()

    def report(self, **metrics: SupportsFloat) -> None:
        """Report this epoch's metrics (floats or one-element tensors) as step ``epoch``."""
        report(max(self.epoch, 0), **{name: float(value) for name, value in metrics.items()})

    def finish(self, **metrics: SupportsFloat) -> None:
        """Write the final result once: the given metrics, else the last reported ones."""
        if self.finished:
            return
        self.finished = True
        finish(**{name: float(value) for name, value in metrics.items()})

    def lr_range_test(
        self, model: Any, optimizer: Any, loss_fn: Any, batches: Iterable[Any], **sweep: Any
    ) -> tuple[list[float], list[float]]:
        """The SDK's :func:`~rheostat_trainer.lr_finder.lr_range_test`, unchanged."""
        return _lr_range_test(model, optimizer, loss_fn, batches, **sweep)
