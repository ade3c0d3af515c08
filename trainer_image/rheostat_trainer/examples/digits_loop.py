"""The digits CNN in a plain PyTorch loop, tuned through the ``Trial`` helper.

The same model, data split and knobs as :mod:`rheostat_trainer.examples.digits`,
written with :class:`rheostat_trainer.integrations.pytorch.Trial`: ``trial.epochs``
stops the loop once the trial is pruned and writes the result when it ends, and
``trial.lr_range_test`` runs the SDK's sweep in ``lr-range-test`` mode. Compare
with ``digits.py``, which calls the SDK by hand.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch
from torch import nn

from rheostat_trainer.examples.digits import (
    Knobs,
    batches,
    build_model,
    build_optimizer,
    endless_batches,
    evaluate,
    load_data,
    params_or_defaults,
)
from rheostat_trainer.integrations.pytorch import Trial


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="init and shuffling seed")
    args = parser.parse_args(argv)

    trial = Trial()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    knobs = Knobs.from_params(params_or_defaults("digits_loop"))
    x_train, y_train, x_val, y_val = load_data(device)
    model = build_model(knobs).to(device)
    optimizer = build_optimizer(knobs, model)
    loss_fn = nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(args.seed)

    if trial.is_lr_range_test:
        stream = endless_batches(x_train, y_train, knobs.batch_size, shuffle)
        lrs, _ = trial.lr_range_test(model, optimizer, loss_fn, stream, device=device)
        print(f"lr range test: {len(lrs)} steps up to lr {lrs[-1]:.3g}")
        return 0

    print(f"digits_loop: {knobs} on {device}", flush=True)
    for epoch in trial.epochs(args.epochs):
        model.train()
        for inputs, targets in batches(x_train, y_train, knobs.batch_size, shuffle):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(inputs), targets).backward()
            optimizer.step()
        accuracy, val_loss = evaluate(model, x_val, y_val)
        trial.report(accuracy=accuracy, loss=val_loss)
        print(f"epoch {epoch}: val_accuracy={accuracy:.4f} val_loss={val_loss:.4f}", flush=True)
    if trial.stopped:
        print(f"digits_loop: stopped after epoch {trial.epoch} (pruned)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
