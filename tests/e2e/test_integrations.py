"""The framework integrations with a real (tiny) model, through `rheostat run`.

Each study is the committed example (examples/lightning.yaml,
examples/pytorch-loop.yaml, examples/transformers.yaml) with a smaller budget, run
one trial at a time with a seeded random sampler and successive halving, so that
the same trials are pruned on every run (each later trial that is not the best
so far at its first epoch is pruned there). The LR range test goes through the
integration's entry point, trials report every epoch, and a pruned trial's
process stops early and still writes its result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.examples_support import load_example, run_study, shrink

pytestmark = pytest.mark.slow

EPOCHS = 8
TRIALS = 5


def _message(tmp_path: Path, number: int) -> dict[str, Any]:
    path = tmp_path / "work" / "trials" / f"t{number:04d}" / "termination-message.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.mark.parametrize("example", ["lightning", "pytorch-loop", "transformers"])
def test_integration_reports_prunes_and_finishes(example: str, tmp_path: Path) -> None:
    document = shrink(load_example(example), max_trials=TRIALS, epochs=EPOCHS, parallelism=1)
    document["spec"]["algorithm"] = {"name": "random", "seed": 3}
    document["spec"]["metrics"]["scrapeInterval"] = 0.1
    document["spec"]["earlyStopping"] = {
        "pruner": "successive-halving",
        "settings": {"min_resource": 1, "reduction_factor": 3},
    }
    objective = document["spec"]["objective"]["metric"]  # accuracy, or eval_accuracy
    results = run_study(document, tmp_path)
    status = results["status"]
    assert status["phase"] == "Succeeded"
    assert status["trials"]["finished"] == TRIALS
    assert status["trials"]["failed"] == 0

    # The LR range test ran through the integration's entry point and was used.
    lr = document["spec"]["lrRangeTest"]
    assert lr["minLr"] < status["lrRangeTest"]["suggestedLr"] < lr["maxLr"]
    log = (tmp_path / "work" / "trials" / "lr-range-test" / "log.txt").read_text()
    assert "lr range test: " in log

    complete = [t for t in results["trials"] if t["state"] == "complete"]
    pruned = [t for t in results["trials"] if t["state"] == "pruned"]
    assert complete, "no trial completed"
    assert max(t["value"] for t in complete) > 0.5  # real training: far above chance (0.1)
    for trial in complete:
        # Every epoch was reported (some may fall between two scrapes) and the
        # final result came from finish() after the last epoch.
        assert trial["intermediate"], f"trial {trial['number']} reported nothing"
        message = _message(tmp_path, trial["number"])
        assert message["step"] == EPOCHS - 1
        assert message["metrics"][objective] == pytest.approx(trial["value"])

    assert pruned, "no trial was pruned"
    stopped = [_message(tmp_path, t["number"])["step"] for t in pruned]
    # A pruned trial's process stopped before its last epoch and still wrote its result.
    assert min(stopped) < EPOCHS - 1, f"pruned trials ran to the end: steps {stopped}"
