"""`rheostat run` reading the final values trainers write: a value no float can hold
fails its trial with a reason, and the run goes on (issue 21, defect 4).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.studies import synthetic_study

WriteStudy = Callable[[dict[str, Any]], Path]

# Checks it is told the objective, then writes the loss as a JSON integer of 401
# digits: valid JSON, beyond a float's range.
HUGE_VALUE_TRAINER = """
import json, os, sys
if json.loads(os.environ.get("RHEOSTAT_OBJECTIVES", "[]")) != ["loss"]:
    sys.exit(3)  # the local backend names the objective finish() must keep
with open(os.environ["RHEOSTAT_TERMINATION_MESSAGE_PATH"], "w") as f:
    f.write('{"metrics": {"loss": 1' + '0' * 400 + '}}')
"""


def test_a_final_value_too_large_for_a_float_fails_the_trial_with_a_reason(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    document = synthetic_study(
        "huge", budget={"maxTrials": 2, "parallelism": 2, "maxFailedTrials": 2}
    )
    container = document["spec"]["trialTemplate"]["spec"]["containers"][0]
    container["command"] = ["python", "-c", HUGE_VALUE_TRAINER]
    workdir = tmp_path / "work"
    command = [sys.executable, "-m", "rheostat.cli", "run", "--no-progress"]
    run = subprocess.run(
        [*command, str(write_study(document)), "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=90,
    )
    assert "OverflowError" not in run.stderr
    results = json.loads((workdir / "results.json").read_text())
    assert results["status"]["trials"]["failed"] == 2, results["status"]
    reasons = [t["reason"] for t in results["trials"]]
    assert all("'loss' is too large for a float" in str(r) for r in reasons), reasons
