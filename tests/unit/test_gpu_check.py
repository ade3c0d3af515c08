"""bench/gpu_check.py's logic, exercised on the CPU (there is no GPU here).

``--cpu-smoke`` runs the same path as ``make gpu-check`` (the study through
``rheostat run``, the trainer's report() timings, the summary and gpu.md) at a
size one CPU finishes in seconds; the committed bench/results are untouched.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from bench import gpu_check

from rheostat.spec import parse_study

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("smoke", [False, True])
def test_the_check_study_is_valid_and_times_report(tmp_path: Path, smoke: bool) -> None:
    doc = gpu_check.study_document(tmp_path / "t.jsonl", smoke)
    spec = doc["spec"]
    assert spec["lrRangeTest"]["parameter"] == "lr"
    assert spec["budget"]["maxTrials"] >= 4
    assert spec["trialTemplate"]["spec"]["containers"][0]["args"][-2:] == [
        "--timings",
        str(tmp_path / "t.jsonl"),
    ]
    parse_study(yaml.safe_dump(doc))


@pytest.mark.slow
def test_cpu_smoke_runs_a_study_and_measures_report_overhead(tmp_path: Path) -> None:
    out = tmp_path / "gpu.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RHEOSTAT_")}
    result = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--cpu-smoke", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    assert "| trials (succeeded) | 4 (4) |" in text
    assert "LR range test suggestion | None" not in text
    overhead = text.split("| report() overhead | ")[1].split(" %")[0]
    assert 0.0 < float(overhead) < 100.0


def test_without_cuda_it_says_so_exits_0_and_writes_nothing(tmp_path: Path) -> None:
    """``make gpu-check`` on a machine without a GPU is not a failure: it says so.
    CUDA_VISIBLE_DEVICES="" hides any GPU, so this holds on a GPU machine too."""
    out = tmp_path / "gpu.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RHEOSTAT_")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    result = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no CUDA GPU" in result.stdout
    assert not out.exists()


def test_the_gpu_studys_task_is_learnable_by_its_cnn() -> None:
    """The first GPU run scored chance (0.10) on every trial: its labels came from a random
    projection that a CNN pooling positions away cannot learn. A small copy of the model must
    now beat chance clearly within two epochs, or the check measures nothing but speed."""
    import torch
    from torch import nn

    from rheostat_trainer.examples import gpu_cnn

    torch.manual_seed(0)
    x, y = gpu_cnn.make_data(1280, 16, torch.device("cpu"))
    model = gpu_cnn.build_model(width=8, blocks=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        for inputs, targets in gpu_cnn.batches(x[:1024], y[:1024], 64, gen):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(inputs), targets).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x[1024:]).argmax(dim=1) == y[1024:]).float().mean())
    assert accuracy > 0.3, f"validation accuracy {accuracy:.3f}; chance is {1 / gpu_cnn.CLASSES}"
