"""The framework integrations on real (tiny) torch and Lightning models, in seconds.

Signals are sent to subprocesses only: the pytest process keeps no SIGTERM flag.
The whole studies (pruning decided by the tuner) are in tests/e2e/test_integrations.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rheostat_trainer import metrics
from rheostat_trainer.integrations.lightning import (
    RheostatCallback,
    _first_optimizer,
    lr_range_test,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def contract_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A trial's env with no metrics port, a fresh metrics module, a result path."""
    for name in list(os.environ):
        if name.startswith("RHEOSTAT_") or name == "POD_IP":
            monkeypatch.delenv(name)
    path = tmp_path / "termination-log"
    monkeypatch.setenv("RHEOSTAT_TERMINATION_MESSAGE_PATH", str(path))
    metrics._reset_for_tests()
    yield path
    metrics._reset_for_tests()


# ------------------------------------------------------------------ plain PyTorch: Trial

LOOP = textwrap.dedent(
    """
    import sys
    from rheostat_trainer.integrations.pytorch import Trial

    trial = Trial()
    for epoch in trial.epochs(int(sys.argv[1])):
        trial.report(accuracy=0.1 * (epoch + 1))
        if sys.argv[2] == "many":  # ~110 per-class scalars besides the objective
            trial.report(**{f"val_accuracy_class_{i:03d}": 0.1 + i / 7 for i in range(110)})
        print(f"epoch {epoch}", flush=True)
        if sys.argv[2] == "wait" and epoch == 1:
            sys.stdin.readline()  # the test sends SIGTERM, then a line
        if sys.argv[2] == "crash" and epoch == 1:
            raise RuntimeError("boom")
    print(f"stopped={trial.stopped}", flush=True)
    """
)


def _loop(path: Path, epochs: int, mode: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RHEOSTAT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "operator"), str(REPO / "trainer_image")])
    env["RHEOSTAT_TERMINATION_MESSAGE_PATH"] = str(path)
    env["RHEOSTAT_OBJECTIVES"] = '["accuracy"]'
    return subprocess.Popen(
        [sys.executable, "-c", LOOP, str(epochs), mode],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_trial_runs_every_epoch_and_finishes(contract_env: Path) -> None:
    proc = _loop(contract_env, 4, "run")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "epoch 3" in out
    assert "stopped=False" in out
    assert json.loads(contract_env.read_text()) == {"metrics": {"accuracy": 0.4}, "step": 3}


def test_trial_stops_after_the_epoch_of_the_sigterm_and_still_finishes(
    contract_env: Path,
) -> None:
    proc = _loop(contract_env, 10, "wait")
    assert proc.stdout is not None
    assert proc.stdin is not None
    assert proc.stdout.readline().strip() == "epoch 0"
    assert proc.stdout.readline().strip() == "epoch 1"
    proc.send_signal(signal.SIGTERM)
    proc.stdin.write("go\n")
    proc.stdin.flush()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "epoch 2" not in out
    assert "stopped=True" in out
    assert json.loads(contract_env.read_text()) == {"metrics": {"accuracy": 0.2}, "step": 1}


def test_a_trial_reporting_many_scalars_still_finishes_with_its_objective(
    contract_env: Path,
) -> None:
    proc = _loop(contract_env, 2, "many")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    message = json.loads(contract_env.read_text())
    assert message["metrics"]["accuracy"] == 0.2
    assert len(contract_env.read_bytes()) <= metrics.MAX_TERMINATION_BYTES


def test_a_crash_in_the_loop_writes_no_result(contract_env: Path) -> None:
    proc = _loop(contract_env, 10, "crash")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "boom" in err
    assert not contract_env.exists()


# ------------------------------------------------------------------ Lightning


class Regression(pl.LightningModule):
    """y = x . w on 4 features; logs `loss` (and `vector`, which is not a scalar)."""

    def __init__(self, returns: str = "tensor") -> None:
        super().__init__()
        self.net = nn.Linear(4, 1)
        self.returns = returns

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        if self.returns == "dict":
            return {"loss": loss}
        if self.returns == "none":
            return None
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("loss", nn.functional.mse_loss(self.net(x), y))

    def on_validation_epoch_end(self) -> None:
        self.log("epoch_seen", float(self.current_epoch))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, 1)]


class ManyScalars(Regression):
    """Logs ~110 per-class scalars at each validation, as a classifier's per-class accuracy."""

    def on_validation_epoch_end(self) -> None:
        for i in range(110):
            self.log(f"val_acc_class_{i:03d}", 0.1234567890123 + i / 1000)


def _quiet_trainer(**kwargs: Any) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def _data() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=generator)
    return TensorDataset(x, x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]))


class Data(pl.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        self.prepared = False

    def prepare_data(self) -> None:
        self.prepared = True

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(_data(), batch_size=16)


def test_first_optimizer_accepts_every_shape_lightning_allows() -> None:
    optimizer = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    for configured in (
        optimizer,
        [optimizer],
        ([optimizer], [scheduler]),
        {"optimizer": optimizer, "lr_scheduler": scheduler},
        [{"optimizer": optimizer}],
    ):
        assert _first_optimizer(configured) is optimizer
    with pytest.raises(TypeError, match="no optimizer"):
        _first_optimizer(None)


@pytest.mark.parametrize("source", ["dataloader", "iterator", "datamodule", "module"])
def test_lr_range_test_sweeps_the_training_step_and_restores_the_module(
    source: str, contract_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    module = Regression(returns="dict" if source == "iterator" else "tensor")
    loader = DataLoader(_data(), batch_size=16)
    monkeypatch.setattr(module, "train_dataloader", lambda: loader, raising=False)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    datamodule = Data()
    kwargs: dict[str, Any] = {"min_lr": 1e-4, "max_lr": 100.0, "steps": 60, "device": "cpu"}
    if source == "dataloader":
        lrs, losses = lr_range_test(module, loader, **kwargs)
    elif source == "iterator":  # one-shot: 4 batches, replayed by the sweep
        lrs, losses = lr_range_test(module, iter(loader), **kwargs)
    elif source == "datamodule":
        lrs, losses = lr_range_test(module, datamodule=datamodule, **kwargs)
        assert datamodule.prepared
    else:
        lrs, losses = lr_range_test(module, **kwargs)

    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert 10 < len(lrs) < 60, "lr = 100 diverges on this problem before the sweep ends"
    assert lrs[0] == pytest.approx(1e-4)
    assert losses[-1] > min(losses)
    curve = json.loads(contract_env.read_text())["lrRangeTest"]
    assert len(curve["lrs"]) == len(lrs)


def test_lr_range_test_needs_a_loss_from_the_training_step() -> None:
    module = Regression(returns="none")
    with pytest.raises(TypeError, match="must return the loss"):
        lr_range_test(module, DataLoader(_data(), batch_size=16), steps=5, device="cpu")


# Lightning 2.6 still builds torch's deprecated LeafSpec; nothing of ours.
@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
def test_callback_reports_each_validation_epoch_and_finishes(contract_env: Path) -> None:
    torch.manual_seed(0)
    module = Regression()
    loader = DataLoader(_data(), batch_size=16)
    callback = RheostatCallback(metrics=["loss", "epoch_seen"])
    trainer = pl.Trainer(
        max_epochs=3,
        callbacks=[callback],
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,  # the sanity check is not an epoch: not reported
    )
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)

    assert callback.finished
    message = json.loads(contract_env.read_text())
    assert message["step"] == 2
    assert set(message["metrics"]) == {"loss", "epoch_seen"}  # train_loss filtered out
    assert message["metrics"]["epoch_seen"] == 2.0
    assert message["metrics"]["loss"] == pytest.approx(float(trainer.callback_metrics["loss"]))
    assert metrics.REGISTRY.get_sample_value("rheostat_trial_step") == 2


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
def test_callback_finishes_a_module_that_logs_many_scalars(
    contract_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RHEOSTAT_OBJECTIVES", '["loss"]')
    torch.manual_seed(0)
    loader = DataLoader(_data(), batch_size=16)
    callback = RheostatCallback()
    trainer = _quiet_trainer(max_epochs=2, callbacks=[callback], num_sanity_val_steps=0)
    trainer.fit(ManyScalars(), train_dataloaders=loader, val_dataloaders=loader)

    message = json.loads(contract_env.read_text())
    assert message["metrics"]["loss"] == float(trainer.callback_metrics["loss"])
    assert len(contract_env.read_bytes()) <= metrics.MAX_TERMINATION_BYTES


# Lightning warns that the module has a validation_step it will not run; that is the point.
@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
@pytest.mark.filterwarnings("ignore:.*validation_step.*")
def test_callback_with_validation_off_finishes_with_the_training_metrics(
    contract_env: Path,
) -> None:
    torch.manual_seed(0)
    loader = DataLoader(_data(), batch_size=16)
    callback = RheostatCallback()
    trainer = _quiet_trainer(max_epochs=3, callbacks=[callback], limit_val_batches=0)
    trainer.fit(Regression(), train_dataloaders=loader)

    message = json.loads(contract_env.read_text())
    assert message["step"] == 2
    assert message["metrics"]["train_loss"] == pytest.approx(
        float(trainer.callback_metrics["train_loss"])
    )
    # Each training epoch was reported, so the pruner sees them too.
    assert metrics.REGISTRY.get_sample_value("rheostat_trial_step") == 2


# ------------------------------------------------------------------ transformers


class DictRegression(nn.Module):
    """A transformers-style model: ``forward(x, labels)`` -> ``{"loss", "logits"}``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(x)
        return {"loss": nn.functional.mse_loss(out, labels), "logits": out}


class DictData(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self) -> None:
        self.x, self.y = _data().tensors

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[index], "labels": self.y[index]}


def _hf_trainer(tmp_path: Path, callback: Any, compute_metrics: Any = None) -> Any:
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        num_train_epochs=3,
        learning_rate=0.05,
        per_device_train_batch_size=16,
        eval_strategy="epoch",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        dataloader_pin_memory=False,
    )
    return Trainer(
        model=DictRegression(),
        args=args,
        train_dataset=DictData(),
        eval_dataset=DictData(),
        callbacks=[callback] if callback is not None else [],
        compute_metrics=compute_metrics,
    )


def test_transformers_callback_reports_each_evaluation_and_finishes(
    tmp_path: Path, contract_env: Path
) -> None:
    from rheostat_trainer.integrations.transformers import RheostatCallback as HFCallback

    torch.manual_seed(0)
    callback = HFCallback()
    trainer = _hf_trainer(tmp_path, callback)
    trainer.train()

    assert callback.finished
    message = json.loads(contract_env.read_text())
    assert message["step"] == 2  # the third epoch, 0-based like Lightning's
    assert set(message["metrics"]) == {"eval_loss"}  # runtimes and throughputs left out
    assert message["metrics"]["eval_loss"] == pytest.approx(trainer.evaluate()["eval_loss"])
    with pytest.raises(ValueError, match="'epoch' or 'global_step'"):
        HFCallback(step="batch")


def test_transformers_callback_finishes_with_many_metrics(
    tmp_path: Path, contract_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rheostat_trainer.integrations.transformers import RheostatCallback as HFCallback

    monkeypatch.setenv("RHEOSTAT_OBJECTIVES", '["eval_loss"]')
    per_class = {f"acc_class_{i:03d}": 0.1234567890123 + i / 1000 for i in range(110)}
    torch.manual_seed(0)
    trainer = _hf_trainer(tmp_path, HFCallback(), compute_metrics=lambda _p: per_class)
    trainer.train()

    message = json.loads(contract_env.read_text())
    assert message["metrics"]["eval_loss"] == pytest.approx(trainer.evaluate()["eval_loss"])
    assert len(contract_env.read_bytes()) <= metrics.MAX_TERMINATION_BYTES


def test_transformers_lr_range_test_uses_the_trainers_optimizer_and_loss(
    tmp_path: Path, contract_env: Path
) -> None:
    from rheostat_trainer.integrations.transformers import lr_range_test as hf_lr_range_test

    torch.manual_seed(0)
    trainer = _hf_trainer(tmp_path, None)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    lrs, losses = hf_lr_range_test(trainer, min_lr=1e-4, max_lr=100.0, steps=60)
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert 10 < len(lrs) < 60, "lr = 100 diverges on this problem before the sweep ends"
    assert losses[-1] > min(losses)
    assert len(json.loads(contract_env.read_text())["lrRangeTest"]["lrs"]) == len(lrs)


# ------------------------------------------------------------ schedules (apply: schedule)


class OneCycleRegression(Regression):
    def configure_optimizers(self) -> Any:
        from rheostat_trainer.integrations.lightning import one_cycle

        return one_cycle(self, torch.optim.SGD(self.parameters(), lr=1.0, momentum=0.9))


class LrSeen(pl.Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
@pytest.mark.filterwarnings("ignore:.*validation_step.*")
def test_lightning_one_cycle_runs_from_the_base_to_the_peak(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RHEOSTAT_LR_BASE", "0.001")
    monkeypatch.setenv("RHEOSTAT_LR_PEAK", "0.02")
    seen = LrSeen()
    trainer = _quiet_trainer(max_epochs=5, callbacks=[seen], limit_val_batches=0)
    trainer.fit(OneCycleRegression(), train_dataloaders=DataLoader(_data(), batch_size=16))
    assert len(seen.lrs) == 20  # 4 batches x 5 epochs, one scheduler step each
    assert seen.lrs[0] == pytest.approx(0.001)
    assert max(seen.lrs) == pytest.approx(0.02, rel=0.05)
    assert seen.lrs[-1] < 0.001


def test_transformers_one_cycle_runs_from_the_base_to_the_peak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rheostat_trainer.integrations.transformers import use_one_cycle

    monkeypatch.setenv("RHEOSTAT_LR_BASE", "0.001")
    monkeypatch.setenv("RHEOSTAT_LR_PEAK", "0.02")
    torch.manual_seed(0)
    trainer = _hf_trainer(tmp_path, None)
    use_one_cycle(trainer)
    scheduler = trainer.lr_scheduler
    assert scheduler.get_last_lr()[0] == pytest.approx(0.001)
    trainer.train()  # 3 epochs of 4 batches: exactly the cycle's 12 steps, or OneCycleLR raises
    assert trainer.lr_scheduler is scheduler
    assert scheduler.last_epoch == 12
    assert scheduler.get_last_lr()[0] < 0.001
