"""The digits CNN as a PyTorch Lightning module, tuned through ``RheostatCallback``.

The same model, data split and knobs as :mod:`rheostat_trainer.examples.digits`;
only the loop is Lightning's. In ``trial`` mode it fits with the callback, which
reports validation ``accuracy`` and ``loss`` each epoch, stops when the trial is
pruned and writes the result; in ``lr-range-test`` mode it runs
:func:`rheostat_trainer.integrations.lightning.lr_range_test` on the module and exits.
Needs the ``lightning`` extra.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import rheostat_trainer as rt
from rheostat_trainer.examples.digits import (
    Knobs,
    build_model,
    build_optimizer,
    load_data,
    params_or_defaults,
)
from rheostat_trainer.integrations.lightning import RheostatCallback, lr_range_test


class DigitsModule(pl.LightningModule):
    """Cross-entropy training; validation logs ``accuracy`` and ``loss`` per epoch."""

    def __init__(self, knobs: Knobs) -> None:
        super().__init__()
        self.knobs = knobs
        self.net = build_model(knobs)
        self.loss_fn = nn.CrossEntropyLoss()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss_fn(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss  # type: ignore[no-any-return]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("loss", self.loss_fn(logits, y))
        self.log("accuracy", (logits.argmax(dim=1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return build_optimizer(self.knobs, self)


def loaders(batch_size: int, seed: int) -> tuple[DataLoader[Any], DataLoader[Any]]:
    """Training (shuffled by ``seed``) and validation loaders over the fixed split."""
    x_train, y_train, x_val, y_val = load_data(torch.device("cpu"))
    train = DataLoader(
        TensorDataset(x_train, y_train),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    val = DataLoader(TensorDataset(x_val, y_val), batch_size=len(y_val))
    return train, val


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="init and shuffling seed")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # trials run side by side; one thread each is fastest overall
    torch.manual_seed(args.seed)
    knobs = Knobs.from_params(params_or_defaults("digits_lightning"))
    module = DigitsModule(knobs)
    train, val = loaders(knobs.batch_size, args.seed)

    if rt.mode() == "lr-range-test":
        lrs, _ = lr_range_test(module, train)
        print(f"lr range test: {len(lrs)} steps up to lr {lrs[-1]:.3g}")
        return 0

    print(f"digits_lightning: {knobs}", flush=True)
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        callbacks=[RheostatCallback(metrics=["accuracy", "loss"])],
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
    )
    trainer.fit(module, train_dataloaders=train, val_dataloaders=val)
    print(f"digits_lightning: trained {trainer.current_epoch} epochs", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
