"""Every study in examples/ is valid, names a trainer that exists, and says what it shows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from rheostat.cli import main
from rheostat.space import grid_size
from rheostat.spec import TuningStudy
from rheostat.validation import load_study

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_the_examples_are_found() -> None:
    names = {path.stem for path in EXAMPLES}
    assert {
        "bayesian",
        "grid",
        "hyperband",
        "gpu",
        "kueue",
        "lightning",
        "pytorch-loop",
        "transformers",
    } <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_is_valid(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    assert "valid" in capsys.readouterr().out


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_a_trainer_that_exists(path: Path) -> None:
    study = load_study(path.read_text())
    command = study.spec.trial_template.spec.containers[0].command
    assert command is not None
    assert command[:2] == ["python", "-m"], "examples run a module of the trainer image"
    assert importlib.util.find_spec(command[2]) is not None, f"no module {command[2]}"


def _load(name: str) -> TuningStudy:
    return load_study((EXAMPLES[0].parent / f"{name}.yaml").read_text())


def test_bayesian_example_uses_the_gaussian_process() -> None:
    assert _load("bayesian").spec.algorithm.name == "bayesian"


def test_grid_example_budget_covers_the_grid() -> None:
    spec = _load("grid").spec
    assert spec.algorithm.name == "grid"
    assert spec.budget.max_trials == grid_size(spec.parameters)


def test_hyperband_example_prunes_with_hyperband_within_its_epochs() -> None:
    spec = _load("hyperband").spec
    assert spec.early_stopping.pruner == "hyperband"
    args = spec.trial_template.spec.containers[0].args or []
    epochs = int(args[args.index("--epochs") + 1])
    assert spec.early_stopping.settings["max_resource"] == epochs


def test_gpu_example_asks_for_a_gpu_node() -> None:
    """Only validated here (this machine has no GPU): the fields a GPU pool expects."""
    pod = _load("gpu").spec.trial_template.spec
    extra = pod.model_extra or {}
    assert extra["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in extra[
        "tolerations"
    ]
    resources = (pod.containers[0].model_extra or {})["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1


def test_kueue_example_queues_behind_kueue_and_samples_at_admission() -> None:
    spec = _load("kueue").spec
    assert (spec.queue, spec.priority_class) == ("gpus", "low")
    assert spec.budget.queue_depth == 1
    assert spec.budget.parallelism > spec.budget.queue_depth
