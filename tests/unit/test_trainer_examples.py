"""The example trainers, run as the tuner runs them: subprocesses with the env contract."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rheostat.lr_range import analyse
from rheostat_trainer.examples.synthetic import objective

REPO = Path(__file__).resolve().parents[2]


def trial_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RHEOSTAT_") and k != "POD_IP"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "operator"), str(REPO / "trainer_image")])
    env.update(
        RHEOSTAT_MODE="trial",
        RHEOSTAT_STUDY="test",
        RHEOSTAT_TRIAL="3",
        RHEOSTAT_TERMINATION_MESSAGE_PATH=str(tmp_path / "termination-log"),
    )
    env.update(extra)
    return env


def run(
    module: str, env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"rheostat_trainer.examples.{module}", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def message(tmp_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / "termination-log").read_text())
    return data


PARAMS = {"lr": 0.1, "momentum": 0.9, "x": 0.3, "y": 0.0, "optimizer": "sgd", "extra": 5}


# ------------------------------------------------------------------ synthetic


def test_objective_is_zero_at_the_known_optimum() -> None:
    best = {
        "lr": 1e-2,
        "momentum": 0.9,
        "x": 0.3,
        "y": -0.2,
        "layers": 2,
        "width": 64,
        "dropout": 0.1,
        "optimizer": "adam",
    }
    assert objective(best) == pytest.approx(0.0)
    assert objective({"unknown": 1}) == 0.0
    assert objective(PARAMS) == pytest.approx(1.0 + 0.04 + 0.05)


def test_synthetic_trial_writes_its_result(tmp_path: Path) -> None:
    env = trial_env(tmp_path, RHEOSTAT_PARAMS=json.dumps(PARAMS))
    proc = run("synthetic", env, "--steps", "4")
    assert proc.returncode == 0, proc.stderr
    loss = objective(PARAMS)
    assert message(tmp_path) == {
        "metrics": {"loss": pytest.approx(loss), "accuracy": pytest.approx(1 / (1 + loss))},
        "step": 3,
    }
    assert proc.stdout.count("step ") == 4


def test_synthetic_reads_one_variable_per_param(tmp_path: Path) -> None:
    env = trial_env(tmp_path, RHEOSTAT_PARAM_X="0.5", RHEOSTAT_PARAM_OPTIMIZER="adam")
    assert run("synthetic", env).returncode == 0
    assert message(tmp_path)["metrics"]["loss"] == pytest.approx(0.04)


@pytest.mark.parametrize(("fault", "encoded"), [("nan", "nan"), ("inf", "inf")])
def test_non_finite_results_are_detectable(tmp_path: Path, fault: str, encoded: str) -> None:
    env = trial_env(tmp_path, RHEOSTAT_PARAMS=json.dumps(PARAMS))
    proc = run("synthetic", env, "--fault", fault)
    assert proc.returncode == 0
    assert message(tmp_path)["metrics"]["loss"] == encoded


def test_missing_result(tmp_path: Path) -> None:
    proc = run("synthetic", trial_env(tmp_path, RHEOSTAT_PARAMS="{}"), "--fault", "missing")
    assert proc.returncode == 0
    assert not (tmp_path / "termination-log").exists()


def test_crash(tmp_path: Path) -> None:
    proc = run("synthetic", trial_env(tmp_path, RHEOSTAT_PARAMS="{}"), "--fault", "crash")
    assert proc.returncode != 0
    assert "injected crash" in proc.stderr
    assert proc.stdout.count("step ") == 1
    assert not (tmp_path / "termination-log").exists()


def test_faults_only_hit_the_chosen_trial(tmp_path: Path) -> None:
    env = trial_env(tmp_path, RHEOSTAT_PARAMS="{}", RHEOSTAT_TRIAL="2")
    proc = run("synthetic", env, "--fault", "crash", "--fault-on-trial", "5")
    assert proc.returncode == 0
    assert message(tmp_path)["metrics"]["loss"] == 0.0
    env["RHEOSTAT_TRIAL"] = "5"
    assert run("synthetic", env, "--fault", "crash", "--fault-on-trial", "5").returncode != 0


def test_hang_serves_metrics_until_killed(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = trial_env(
        tmp_path,
        RHEOSTAT_PARAMS=json.dumps(PARAMS),
        RHEOSTAT_METRICS_PORT=str(port),
        POD_IP="127.0.0.1",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "rheostat_trainer.examples.synthetic", "--fault", "hang"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("step 0")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        samples = {
            (s.name, s.labels.get("metric", "")): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert samples[("rheostat_trial_step", "")] == 0
        assert samples[("rheostat_trial_metric", "loss")] == pytest.approx(objective(PARAMS) + 1)
        proc.send_signal(signal.SIGTERM)  # absorbed: the trainer is "stuck"
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert not (tmp_path / "termination-log").exists()


def test_synthetic_lr_range_test_has_a_known_valley(tmp_path: Path) -> None:
    env = trial_env(
        tmp_path,
        RHEOSTAT_MODE="lr-range-test",
        RHEOSTAT_TRIAL="-1",
        RHEOSTAT_PARAMS='{"lr": 1e-7}',
        RHEOSTAT_LR_PARAM="lr",
        RHEOSTAT_LR_MIN="1e-7",
        RHEOSTAT_LR_MAX="10",
        RHEOSTAT_LR_STEPS="100",
    )
    proc = run("synthetic", env)
    assert proc.returncode == 0, proc.stderr
    raw = (tmp_path / "termination-log").read_text()
    assert len(raw.encode()) <= 4096
    curve = json.loads(raw)["lrRangeTest"]
    assert 50 < len(curve["lrs"]) < 100  # stopped on divergence
    result = analyse(curve["lrs"], curve["losses"])
    assert 3e-3 <= result.suggested_lr <= 3e-2  # the objective's lr optimum is 1e-2
    assert result.lower <= 1e-2 <= result.upper


# ------------------------------------------------------------------ digits


@pytest.mark.slow
def test_digits_trial_learns(tmp_path: Path) -> None:
    env = trial_env(tmp_path, RHEOSTAT_PARAMS='{"lr": 0.05, "layers": 2, "width": 16}')
    proc = run("digits", env, "--epochs", "2", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("epoch ") == 2
    result = message(tmp_path)
    assert result["step"] == 1
    assert result["metrics"]["accuracy"] > 0.5
    assert math.isfinite(result["metrics"]["loss"])


@pytest.mark.slow
def test_digits_lr_range_test(tmp_path: Path) -> None:
    env = trial_env(
        tmp_path,
        RHEOSTAT_MODE="lr-range-test",
        RHEOSTAT_TRIAL="-1",
        RHEOSTAT_PARAMS='{"lr": 1e-6, "optimizer": "adam"}',
        RHEOSTAT_LR_MIN="1e-6",
        RHEOSTAT_LR_MAX="1",
        RHEOSTAT_LR_STEPS="40",
    )
    proc = run("digits", env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    curve = json.loads((tmp_path / "termination-log").read_text())["lrRangeTest"]
    assert len(curve["lrs"]) == len(curve["losses"]) <= 40
    assert curve["lrs"][0] == 1e-6
    assert "lr range test:" in proc.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.slow
def test_digits_under_torchrun_on_two_nodes_reports_from_rank_zero_only(tmp_path: Path) -> None:
    """Two "pods" of a multi-pod trial, as the tuner starts them: the same command, the
    launcher variables from the env, a termination log each; DDP over gloo on CPU."""
    master = str(free_port())
    procs = []
    for node in (0, 1):
        folder = tmp_path / f"pod-{node}"
        folder.mkdir()
        env = trial_env(
            folder,
            RHEOSTAT_PARAMS='{"lr": 0.05, "layers": 2, "width": 32}',
            RHEOSTAT_METRICS_PORT=str(free_port()),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=master,
            NNODES="2",
            NODE_RANK=str(node),
        )
        command = [
            *(sys.executable, "-m", "torch.distributed.run"),
            *("--nnodes", env["NNODES"], "--node_rank", env["NODE_RANK"], "--nproc_per_node", "1"),
            *("--master_addr", env["MASTER_ADDR"], "--master_port", env["MASTER_PORT"]),
            *("-m", "rheostat_trainer.examples.digits", "--epochs", "4"),
        ]
        procs.append(
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    outputs = [p.communicate(timeout=180)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "rank 0 of 2" in outputs[0]
    assert "rank 1 of 2" in outputs[1]
    result = message(tmp_path / "pod-0")
    assert result["step"] == 3
    assert result["metrics"]["accuracy"] > 0.5
    assert not (tmp_path / "pod-1" / "termination-log").exists()  # rank 1 never speaks
