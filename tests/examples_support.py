"""Run a study from examples/ end to end through `rheostat run`, on a smaller budget.

The e2e tests of the examples and of the framework integrations copy the committed
document, shrink its budget (trials, epochs, LR sweep steps) and run the real CLI
on it, so what is tested is the file a user runs, not a look-alike.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def load_example(name: str) -> dict[str, Any]:
    """The committed document ``examples/<name>.yaml``."""
    document: dict[str, Any] = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    return document


def shrink(
    document: dict[str, Any],
    *,
    max_trials: int,
    epochs: int,
    parallelism: int = 2,
    lr_steps: int = 60,
) -> dict[str, Any]:
    """A copy with a small budget: fewer trials and epochs, a shorter LR sweep.

    60 steps, not fewer: over the examples' 6.5 decades a 30-step sweep moves too
    fast for the digits models to learn anything, and a curve that never falls 1 %
    rightly gives no advice (rheostat.lr_range.MIN_DESCENT)."""
    small = copy.deepcopy(document)
    spec = small["spec"]
    spec["budget"]["maxTrials"] = max_trials
    spec["budget"]["parallelism"] = parallelism
    if "lrRangeTest" in spec:
        spec["lrRangeTest"]["steps"] = lr_steps
    container = spec["trialTemplate"]["spec"]["containers"][0]
    args = container["args"]
    args[args.index("--epochs") + 1] = str(epochs)
    return small


def run_study(document: dict[str, Any], tmp_path: Path, timeout: float = 420) -> dict[str, Any]:
    """`rheostat run` on the document; returns results.json (the run must succeed)."""
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(document))
    workdir = tmp_path / "work"
    command = [sys.executable, "-m", "rheostat.cli", "run", str(path), "--workdir", str(workdir)]
    done = subprocess.run(
        [*command, "--no-progress"],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    results: dict[str, Any] = json.loads((workdir / "results.json").read_text())
    return results
