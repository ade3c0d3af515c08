"""The trial side of the LR range test: sweep the lr, one batch per step, record the loss.

The tuner starts one run in ``lr-range-test`` mode before any trial. This module
drives the user's own model, optimizer and data through an exponential lr
sweep, records the *raw* training loss and writes the curve as the termination
message; the control side smooths and interprets it with :mod:`rheostat.lr_range`
(the stopping rule here uses the same functions, so both sides agree).

torch is imported only inside :func:`lr_range_test`, so the SDK itself stays
light; :func:`write_lr_curve` needs no torch at all, for trainers written in
anything else.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from rheostat.lr_range import diverged, exponential_schedule, smooth
from rheostat_trainer._env import env_float
from rheostat_trainer._stop import should_stop
from rheostat_trainer.metrics import (
    MAX_TERMINATION_BYTES,
    encode_float,
    report,
    write_termination_message,
)

__all__ = ["lr_curve_message", "lr_range_test", "write_lr_curve"]

DEFAULT_MIN_LR = 1e-7
DEFAULT_MAX_LR = 10.0
DEFAULT_STEPS = 100


def _sig4(value: float) -> float | str:
    """Four significant digits, the contract's precision (and what fits 4096 bytes)."""
    encoded = encode_float(value)
    return float(f"{value:.4g}") if isinstance(encoded, float) else encoded


def lr_curve_message(lrs: Sequence[float], losses: Sequence[float]) -> dict[str, Any]:
    """The ``{"lrRangeTest": {"lrs": [...], "losses": [...]}}`` payload, at most 4096 bytes.

    Each value has 4 significant digits; non-finite losses become ``"nan"``,
    ``"inf"``, ``"-inf"``. A curve too long for the kubelet's 4096-byte limit
    (about 300 steps) is thinned to every k-th point, always keeping the first
    and the last (the point that diverged), with the smallest k that fits.
    """
    if len(lrs) != len(losses):
        raise ValueError(f"lrs and losses differ in length ({len(lrs)} vs {len(losses)})")
    n = len(lrs)
    stride = 1
    while True:
        keep = list(range(0, n, stride))
        if n and keep[-1] != n - 1:
            keep.append(n - 1)
        payload = {
            "lrRangeTest": {
                "lrs": [_sig4(float(lrs[i])) for i in keep],
                "losses": [_sig4(float(losses[i])) for i in keep],
            }
        }
        size = len(json.dumps(payload, separators=(",", ":")).encode())
        if size <= MAX_TERMINATION_BYTES or len(keep) <= 2:
            return payload
        stride += 1


def write_lr_curve(lrs: Sequence[float], losses: Sequence[float]) -> str | None:
    """Write a recorded curve as the termination message; returns the path (or None)."""
    return write_termination_message(lr_curve_message(lrs, losses))


def _cycle(batches: Iterable[Any]) -> Iterator[Any]:
    """Yield batches forever: re-iterate a re-iterable (a DataLoader reshuffles), and
    replay what a one-shot iterator gave once it runs out."""
    if iter(batches) is batches:
        seen: list[Any] = []
        for batch in batches:
            seen.append(batch)
            yield batch
        if not seen:
            raise ValueError("lr_range_test: `batches` yielded no batch")
        while True:
            yield from seen
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError("lr_range_test: `batches` yielded no batch")


def _to_device(obj: Any, device: Any) -> Any:
    if hasattr(obj, "to"):
        return obj.to(device)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


def lr_range_test(
    model: Any,
    optimizer: Any,
    loss_fn: Any,
    batches: Iterable[Any],
    *,
    device: Any = None,
    min_lr: float | None = None,
    max_lr: float | None = None,
    steps: int | None = None,
    beta: float = 0.98,
    diverge_factor: float = 4.0,
) -> tuple[list[float], list[float]]:
    """Run the LR range test on a torch model and report the curve to the tuner.

    Args:
        model: a ``torch.nn.Module``, already on its device.
        optimizer: a ``torch.optim.Optimizer`` over the model's parameters; every
            param group's lr is overwritten at each step.
        loss_fn: ``loss_fn(model(inputs), targets) -> scalar tensor``.
        batches: ``(inputs, targets)`` pairs (tensors, or lists/tuples/dicts of
            tensors); cycled if the sweep needs more batches than it yields.
        device: where to move each batch; defaults to the model's first parameter's.
        min_lr, max_lr, steps: the sweep; ``None`` reads ``RHEOSTAT_LR_MIN``,
            ``RHEOSTAT_LR_MAX``, ``RHEOSTAT_LR_STEPS`` (defaults 1e-7, 10, 100).
        beta, diverge_factor: the smoothing and the stopping rule of
            :mod:`rheostat.lr_range` (stop when the smoothed loss exceeds
            ``diverge_factor`` times its best, or a loss is not finite).

    Model and optimizer state are deep-copied first and restored afterwards, even
    on error, so the caller can train from the same starting point. Each step is
    also published with ``report(step, lr=..., loss=...)``; the sweep ends early
    on SIGTERM (:func:`~rheostat_trainer.should_stop`).

    Returns:
        The lrs tried and the raw losses recorded, one per step (the last loss may
        be non-finite). The same curve is written as the termination message.
    """
    import torch

    lo = min_lr if min_lr is not None else env_float("RHEOSTAT_LR_MIN", DEFAULT_MIN_LR)
    hi = max_lr if max_lr is not None else env_float("RHEOSTAT_LR_MAX", DEFAULT_MAX_LR)
    n = steps if steps is not None else int(env_float("RHEOSTAT_LR_STEPS", DEFAULT_STEPS))
    schedule = exponential_schedule(lo, hi, n)
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")

    model_state = copy.deepcopy(model.state_dict())
    optim_state = copy.deepcopy(optimizer.state_dict())
    was_training = bool(model.training)
    lrs: list[float] = []
    losses: list[float] = []
    should_stop()  # install the SIGTERM handler before the first step
    try:
        model.train()
        stream = _cycle(batches)
        for step, lr in enumerate(schedule):
            for group in optimizer.param_groups:
                group["lr"] = lr
            inputs, targets = _to_device(next(stream), device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(inputs), targets)
            value = float(loss.detach().float().item())
            lrs.append(lr)
            losses.append(value)
            report(step, lr=lr, loss=value)
            if not math.isfinite(value):
                break
            loss.backward()
            optimizer.step()
            if diverged(smooth(losses, beta), diverge_factor) or should_stop():
                break
    finally:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optim_state)
        model.train(was_training)
    write_lr_curve(lrs, losses)
    return lrs, losses
