"""The digits CNN trained by a Hugging Face ``Trainer``, tuned through its ``RheostatCallback``.

The same model, data split and knobs as :mod:`rheostat_trainer.examples.digits`
(``momentum`` becomes AdamW's beta1), as a plain ``nn.Module`` that returns
``{"loss", "logits"}`` the way transformers models do, so no weights are
downloaded. The Trainer evaluates every epoch; the callback reports
``eval_accuracy`` and ``eval_loss``, stops the trial when it is pruned and writes
the result. In ``lr-range-test`` mode it runs
:func:`rheostat_trainer.integrations.transformers.lr_range_test` and exits.
Needs the ``transformers`` extra.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from transformers import EvalPrediction, Trainer, TrainingArguments

import rheostat_trainer as rt
from rheostat_trainer.examples.digits import Knobs, build_model, load_data, params_or_defaults
from rheostat_trainer.integrations.transformers import RheostatCallback, lr_range_test


class DigitsClassifier(nn.Module):
    """``forward(pixel_values, labels)`` -> ``{"loss", "logits"}``, as the Trainer expects."""

    def __init__(self, knobs: Knobs) -> None:
        super().__init__()
        self.net = build_model(knobs)

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        logits = self.net(pixel_values)
        if labels is None:
            return {"logits": logits}
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


class Digits(Dataset[dict[str, torch.Tensor]]):
    """Examples as the dicts the Trainer's default collator stacks."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.x[index], "labels": self.y[index]}


def accuracy(prediction: EvalPrediction) -> dict[str, float]:
    logits = np.asarray(prediction.predictions)
    return {"accuracy": float((logits.argmax(axis=1) == prediction.label_ids).mean())}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="init and shuffling seed")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # trials run side by side; one thread each is fastest overall
    torch.manual_seed(args.seed)
    knobs = Knobs.from_params(params_or_defaults("digits_transformers"))
    x_train, y_train, x_val, y_val = load_data(torch.device("cpu"))
    with tempfile.TemporaryDirectory(prefix="digits-transformers-") as output_dir:
        training = TrainingArguments(
            output_dir=output_dir,  # nothing is saved; the Trainer insists on a folder
            num_train_epochs=args.epochs,
            learning_rate=knobs.lr,
            adam_beta1=min(knobs.momentum, 0.999),
            lr_scheduler_type="constant",  # the lr the tuner chose is the lr used
            per_device_train_batch_size=knobs.batch_size,
            per_device_eval_batch_size=len(y_val),
            eval_strategy="epoch",
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_pin_memory=torch.cuda.is_available(),
            seed=args.seed,
        )
        trainer = Trainer(
            model=DigitsClassifier(knobs),
            args=training,
            train_dataset=Digits(x_train, y_train),
            eval_dataset=Digits(x_val, y_val),
            compute_metrics=accuracy,
            callbacks=[RheostatCallback(metrics=["eval_accuracy", "eval_loss"])],
        )
        if rt.mode() == "lr-range-test":
            lrs, _ = lr_range_test(trainer)
            print(f"lr range test: {len(lrs)} steps up to lr {lrs[-1]:.3g}")
            return 0
        print(f"digits_transformers: {knobs}", flush=True)
        trainer.train()
        print(f"digits_transformers: trained {trainer.state.epoch:g} epochs", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
