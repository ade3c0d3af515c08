"""Tests of the trainer SDK against the contract in ``docs/contracts.md``."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client.parser import text_string_to_metric_families

import rheostat_trainer as rt
from rheostat_trainer import _env, metrics
from rheostat_trainer.lr_finder import _cycle, lr_curve_message

REPO = Path(__file__).resolve().parents[2]
CONTRACT_VARS = (
    "RHEOSTAT_PARAMS",
    "RHEOSTAT_MODE",
    "RHEOSTAT_TRIAL",
    "RHEOSTAT_STUDY",
    "RHEOSTAT_METRICS_PORT",
    "POD_IP",
    "RHEOSTAT_TERMINATION_MESSAGE_PATH",
    "RHEOSTAT_LR_MIN",
    "RHEOSTAT_LR_MAX",
    "RHEOSTAT_LR_STEPS",
    "RHEOSTAT_OBJECTIVES",
    # The launcher's rank variables: a test run under torchrun must not inherit them.
    "RANK",
    "LOCAL_RANK",
    "NODE_RANK",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts with no contract variables and a fresh metrics module."""
    for name in list(os.environ):
        if name in CONTRACT_VARS or name.startswith("RHEOSTAT_PARAM_"):
            monkeypatch.delenv(name)
    metrics._reset_for_tests()
    yield
    metrics._reset_for_tests()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CONTRACT_VARS}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "operator"), str(REPO / "trainer_image")])
    return env


# ------------------------------------------------------------------ env


def test_params_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RHEOSTAT_PARAMS", '{"lr": 0.01, "batch-size": 32, "opt": "adam"}')
    monkeypatch.setenv("RHEOSTAT_PARAM_LR", "999")  # the JSON form wins
    assert rt.params() == {"lr": 0.01, "batch-size": 32, "opt": "adam"}


def test_params_fall_back_to_one_variable_per_param(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RHEOSTAT_PARAM_LR", "0.01")
    monkeypatch.setenv("RHEOSTAT_PARAM_BATCH_SIZE", "32")
    monkeypatch.setenv("RHEOSTAT_PARAM_OPTIMIZER", "adam")
    monkeypatch.setenv("RHEOSTAT_PARAM_NESTEROV", "true")
    assert rt.params() == {"lr": 0.01, "batch_size": 32, "optimizer": "adam", "nesterov": True}


@pytest.mark.parametrize(
    ("raw", "message"),
    [(None, "neither RHEOSTAT_PARAMS"), ("{bad", "not valid JSON"), ("[1]", "JSON object")],
)
def test_params_errors_are_clear(
    monkeypatch: pytest.MonkeyPatch, raw: str | None, message: str
) -> None:
    if raw is not None:
        monkeypatch.setenv("RHEOSTAT_PARAMS", raw)
    with pytest.raises(rt.EnvError, match=message):
        rt.params()


def test_mode_trial_and_study(monkeypatch: pytest.MonkeyPatch) -> None:
    assert rt.mode() == "trial"
    assert rt.trial_number() == 0
    assert rt.study_name() == ""
    monkeypatch.setenv("RHEOSTAT_MODE", "lr-range-test")
    monkeypatch.setenv("RHEOSTAT_TRIAL", "-1")
    monkeypatch.setenv("RHEOSTAT_STUDY", "digits")
    assert rt.mode() == "lr-range-test"
    assert rt.trial_number() == -1
    assert rt.study_name() == "digits"
    monkeypatch.setenv("RHEOSTAT_MODE", "train")
    with pytest.raises(rt.EnvError, match="RHEOSTAT_MODE"):
        rt.mode()
    monkeypatch.setenv("RHEOSTAT_TRIAL", "x")
    with pytest.raises(rt.EnvError, match="RHEOSTAT_TRIAL"):
        rt.trial_number()


# ------------------------------------------------------------------ metrics


def scrape(port: int) -> dict[tuple[str, str], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    values: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, sample.labels.get("metric", ""))] = sample.value
    return values


def test_report_serves_prometheus_text(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("RHEOSTAT_METRICS_PORT", str(port))
    monkeypatch.setenv("POD_IP", "127.0.0.1")
    rt.report(3, accuracy=0.5, loss=math.nan)
    rt.report(4, accuracy=0.75, diverged=math.inf)
    values = scrape(port)
    assert values[("rheostat_trial_step", "")] == 4
    assert values[("rheostat_trial_metric", "accuracy")] == 0.75
    assert math.isnan(values[("rheostat_trial_metric", "loss")])
    assert values[("rheostat_trial_metric", "diverged")] == math.inf
    # Nothing leaks into the global default registry.
    assert DEFAULT_REGISTRY.get_sample_value("rheostat_trial_step") is None


def test_report_without_a_port_keeps_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RHEOSTAT_TERMINATION_MESSAGE_PATH", str(tmp_path / "msg"))
    rt.report(1, loss=0.5)
    rt.report(2, loss=0.25, accuracy=0.9)
    assert metrics.REGISTRY.get_sample_value("rheostat_trial_step") == 2
    rt.finish()  # no keywords: the last reported values
    assert json.loads((tmp_path / "msg").read_text()) == {
        "metrics": {"loss": 0.25, "accuracy": 0.9},
        "step": 2,
    }


def test_an_unbindable_port_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        monkeypatch.setenv("RHEOSTAT_METRICS_PORT", str(busy.getsockname()[1]))
        rt.report(0, loss=1.0)
    assert "cannot serve metrics" in caplog.text


def test_finish_writes_the_termination_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "termination-log"
    monkeypatch.setenv("RHEOSTAT_TERMINATION_MESSAGE_PATH", str(path))
    rt.report(7, loss=1.0)
    rt.finish(loss=math.nan, accuracy=0.5, up=math.inf, down=-math.inf)
    text = path.read_text()
    data = json.loads(text)  # valid JSON: no bare NaN / Infinity
    assert data == {
        "metrics": {"loss": "nan", "accuracy": 0.5, "up": "inf", "down": "-inf"},
        "step": 7,
    }
    assert len(text.encode()) <= 4096


# ~110 scalars, as a module logging per-class accuracy does: about 4.5 kB in full.
PER_CLASS = {f"val_acc_class_{i:03d}": 0.1234567890123 + i / 1000 for i in range(110)}


def _many_then_objective(objective: str = "val_loss", value: float = 0.3141592653589793) -> None:
    """Report the per-class scalars, and the objective last (the first a cut would drop)."""
    rt.report(5, **PER_CLASS)
    rt.report(5, **{objective: value})


def test_finish_fits_many_metrics_and_keeps_the_objective_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "msg"
    monkeypatch.setenv("RHEOSTAT_TERMINATION_MESSAGE_PATH", str(path))
    monkeypatch.setenv("RHEOSTAT_OBJECTIVES", '["val_loss"]')
    _many_then_objective()
    full = json.dumps({"metrics": metrics._last_metrics, "step": 5}, separators=(",", ":"))
    assert len(full.encode()) > metrics.MAX_TERMINATION_BYTES  # the case of the issue

    with caplog.at_level("WARNING", logger="rheostat_trainer.metrics"):
        rt.finish()

    text = path.read_text()
    assert len(text.encode()) <= metrics.MAX_TERMINATION_BYTES
    message = json.loads(text)
    assert message["step"] == 5
    assert message["metrics"]["val_loss"] == 0.3141592653589793  # never rounded
    others = {k: v for k, v in message["metrics"].items() if k != "val_loss"}
    assert others, "what fits of the rest is kept"
    for name, value in others.items():
        assert value == pytest.approx(PER_CLASS[name], rel=1e-3)
    assert "termination message" in caplog.text


def test_finish_keeps_every_objective_of_several(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "msg"
    monkeypatch.setenv("RHEOSTAT_TERMINATION_MESSAGE_PATH", str(path))
    monkeypatch.setenv("RHEOSTAT_OBJECTIVES", '["val_loss", "val_acc_class_000"]')
    names = {f"a_much_longer_metric_name_for_class_number_{i:03d}": 0.5 for i in range(110)}
    rt.report(1, **PER_CLASS, **names)
    rt.report(1, val_loss=2.5)
    rt.finish()
    message = json.loads(path.read_text())
    assert message["metrics"]["val_loss"] == 2.5
    assert message["metrics"]["val_acc_class_000"] == PER_CLASS["val_acc_class_000"]
    assert len(path.read_bytes()) <= metrics.MAX_TERMINATION_BYTES


def test_finish_with_explicit_metrics_fits_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With no objective known (a run by hand, an older tuner), as many as fit, in order."""
    monkeypatch.setenv("RHEOSTAT_TERMINATION_MESSAGE_PATH", str(tmp_path / "msg"))
    many = {f"metric_with_a_long_name_{i}": 0.123456789 for i in range(200)}
    with caplog.at_level("WARNING", logger="rheostat_trainer.metrics"):
        rt.finish(**many)
    message = json.loads((tmp_path / "msg").read_text())
    assert len((tmp_path / "msg").read_bytes()) <= metrics.MAX_TERMINATION_BYTES
    assert list(message["metrics"]) == list(many)[: len(message["metrics"])]
    assert "dropped" in caplog.text


def test_objectives_that_cannot_fit_are_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RHEOSTAT_TERMINATION_MESSAGE_PATH", str(tmp_path / "msg"))
    name = "x" * 5000
    monkeypatch.setenv("RHEOSTAT_OBJECTIVES", json.dumps([name]))
    with pytest.raises(ValueError, match="4096"):
        rt.finish(**{name: 1.0})
    assert not (tmp_path / "msg").exists()


def test_a_malformed_objectives_variable_is_no_objective(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RHEOSTAT_OBJECTIVES", "loss")
    assert _env.objectives() == ()
    monkeypatch.setenv("RHEOSTAT_OBJECTIVES", '["loss", "cost"]')
    assert _env.objectives() == ("loss", "cost")


def test_finish_without_a_path_writes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os.path, "isfile", lambda _p: False)
    assert _env.termination_path() is None
    rt.finish(loss=1.0)  # a run by hand: no error


# ------------------------------------------------------------------ stopping

STOP_LOOP = textwrap.dedent(
    """
    import sys, time
    import rheostat_trainer as rt
    rt.should_stop()
    print("ready", flush=True)
    deadline = time.monotonic() + 20
    while not rt.should_stop():
        if time.monotonic() > deadline:
            sys.exit(3)
        time.sleep(0.01)
    print("stopped cleanly", flush=True)
    if len(sys.argv) > 1:  # keep running: only a second SIGTERM ends us
        time.sleep(20)
        sys.exit(4)
    """
)


def _start_loop(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", STOP_LOOP, *args],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_should_stop_after_a_real_sigterm() -> None:
    proc = _start_loop()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "stopped cleanly" in out


def test_a_second_sigterm_ends_the_process() -> None:
    proc = _start_loop("linger")
    assert proc.stdout is not None
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout.readline().strip() == "stopped cleanly"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    assert proc.returncode == -signal.SIGTERM


def test_should_stop_is_safe_off_the_main_thread() -> None:
    results: list[bool] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(rt.should_stop())
        except BaseException as exc:  # pragma: no cover - the failure we test for
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert errors == []
    assert results == [False]


# ------------------------------------------------------------------ LR range test


def test_curve_message_fits_and_keeps_the_ends() -> None:
    lrs = [1e-7 * 1.0167**k for k in range(1000)]
    losses = [2.302585 + k * 1e-3 for k in range(999)] + [math.nan]
    message = lr_curve_message(lrs, losses)
    text = json.dumps(message, separators=(",", ":"))
    assert len(text.encode()) <= 4096
    curve = message["lrRangeTest"]
    assert curve["lrs"][0] == 1e-7
    assert curve["lrs"][-1] == float(f"{lrs[-1]:.4g}")
    assert curve["losses"][-1] == "nan"
    assert curve["losses"][0] == 2.303  # 4 significant digits
    short = lr_curve_message(lrs[:120], losses[:120])
    assert len(short["lrRangeTest"]["lrs"]) == 120  # 100+ steps fit without thinning


def test_cycle_replays_one_shot_iterators_and_reiterates_iterables() -> None:
    one_shot = iter([1, 2])
    assert [x for _, x in zip(range(5), _cycle(one_shot), strict=False)] == [1, 2, 1, 2, 1]
    assert [x for _, x in zip(range(5), _cycle([1, 2]), strict=False)] == [1, 2, 1, 2, 1]
    with pytest.raises(ValueError, match="no batch"):
        next(_cycle([]))
    with pytest.raises(ValueError, match="no batch"):
        next(_cycle(iter([])))


def test_lr_range_test_restores_the_model_and_reports_a_curve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "termination-log"
    monkeypatch.setenv("RHEOSTAT_TERMINATION_MESSAGE_PATH", str(path))
    monkeypatch.setenv("RHEOSTAT_LR_MIN", "1e-5")
    monkeypatch.setenv("RHEOSTAT_LR_MAX", "100")
    monkeypatch.setenv("RHEOSTAT_LR_STEPS", "120")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    model.eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.123, momentum=0.9)
    x = torch.randn(64, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    data = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    before = {k: v.clone() for k, v in model.state_dict().items()}

    lrs, losses = rt.lr_range_test(model, optimizer, torch.nn.MSELoss(), data)

    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert optimizer.param_groups[0]["lr"] == 0.123
    assert optimizer.state_dict()["state"] == {}  # momentum buffers were not kept
    assert not model.training  # mode restored too
    assert len(lrs) == len(losses)
    assert 10 < len(lrs) < 120  # lr = 100 on this problem diverges before the end
    assert lrs[0] == 1e-5
    text = path.read_text()
    assert len(text.encode()) < 4096
    curve = json.loads(text)["lrRangeTest"]
    assert len(curve["lrs"]) == len(curve["losses"]) == len(lrs)
    assert metrics.REGISTRY.get_sample_value("rheostat_trial_step") == len(lrs) - 1


def test_lr_range_test_arguments_override_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("RHEOSTAT_TERMINATION_MESSAGE_PATH", str(tmp_path / "msg"))
    monkeypatch.setenv("RHEOSTAT_LR_STEPS", "500")
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = (torch.ones(4, 2), torch.zeros(4, 1))
    lrs, _ = rt.lr_range_test(
        model, optimizer, torch.nn.MSELoss(), iter([batch]), min_lr=1e-6, max_lr=1e-3, steps=7
    )
    assert len(lrs) == 7
    assert lrs[0] == 1e-6
    assert lrs[-1] == 1e-3


@pytest.mark.parametrize(
    ("env", "speaks"),
    [
        ({}, True),  # a run by hand, a one-pod trial
        ({"RANK": "0", "LOCAL_RANK": "0", "NODE_RANK": "0"}, True),
        ({"RANK": "1", "LOCAL_RANK": "1", "NODE_RANK": "0"}, False),  # torchrun, 2nd process
        ({"RANK": "2", "LOCAL_RANK": "0", "NODE_RANK": "1"}, False),  # torchrun, 2nd pod
        ({"NODE_RANK": "1"}, False),  # one process per pod, no launcher
        ({"NODE_RANK": "0"}, True),
        ({"LOCAL_RANK": "1"}, False),
    ],
)
def test_only_global_rank_zero_speaks_for_the_trial(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], speaks: bool
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert rt.speaks_for_trial() is speaks


def test_a_malformed_rank_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "zero")
    with pytest.raises(rt.EnvError, match="RANK must be an integer, got 'zero'"):
        rt.speaks_for_trial()


def test_a_rank_other_than_zero_reports_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("RHEOSTAT_METRICS_PORT", str(port))
    monkeypatch.setenv("POD_IP", "127.0.0.1")
    monkeypatch.setenv("RHEOSTAT_TERMINATION_MESSAGE_PATH", str(tmp_path / "msg"))
    rt.report(1, loss=0.5)
    rt.finish(loss=0.25)
    assert metrics.REGISTRY.get_sample_value("rheostat_trial_metric", {"metric": "loss"}) is None
    assert metrics.REGISTRY.get_sample_value("rheostat_trial_step") == 0
    assert not (tmp_path / "msg").exists()
    with socket.socket() as probe:  # the port is free: rank 0 (elsewhere) may bind it
        probe.bind(("127.0.0.1", port))
