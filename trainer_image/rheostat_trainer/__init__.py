"""Rheostat's trainer SDK: the trial side of the tuner contract in a few calls.

    import rheostat_trainer as rt

    p = rt.params()                      # {"lr": 0.01, "layers": 2, ...}
    for epoch in range(epochs):
        ...
        rt.report(epoch, accuracy=acc, loss=val_loss)
        if rt.should_stop():             # pruned or timed out (SIGTERM)
            break
    rt.finish(accuracy=acc, loss=val_loss)

and, when ``rt.mode() == "lr-range-test"``, ``rt.lr_range_test(model, optimizer,
loss_fn, batches)`` instead of training. Under ``lrRangeTest.apply: schedule``,
``rt.one_cycle(optimizer, total_steps)`` (or ``rt.cyclic_lr``) cycles between the
test's bounds. Only prometheus-client is needed; torch
is imported by :func:`lr_range_test` alone. The contract itself (env vars,
metric names, termination message) is in ``docs/contracts.md``; a program in any
language that follows it works with the tuner too.
"""

from __future__ import annotations

from rheostat_trainer._env import (
    EnvError,
    mode,
    params,
    speaks_for_trial,
    study_name,
    trial_number,
)
from rheostat_trainer._stop import should_stop
from rheostat_trainer.lr_finder import lr_range_test, write_lr_curve
from rheostat_trainer.metrics import finish, report
from rheostat_trainer.schedule import cyclic_lr, lr_schedule, one_cycle

__all__ = [
    "EnvError",
    "cyclic_lr",
    "finish",
    "lr_range_test",
    "lr_schedule",
    "mode",
    "one_cycle",
    "params",
    "report",
    "should_stop",
    "speaks_for_trial",
    "study_name",
    "trial_number",
    "write_lr_curve",
]
