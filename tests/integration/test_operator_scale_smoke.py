"""`bench/operator_scale.py --smoke` runs in CI: the benchmark works, and its counts hold.

Latency figures are reported, never asserted (a loaded machine is slower, not
wrong); what is asserted is structural: every study succeeds, and the reconcile
sends no LIST at all (it reads the watches' memory).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.cluster.binaries import find_binaries

REPO = Path(__file__).resolve().parents[2]


def test_operator_scale_smoke(tmp_path: Path, cluster: object) -> None:
    find_binaries()  # the bench starts its own cluster from the same binaries
    subprocess.run(
        [sys.executable, "-m", "bench.operator_scale", "--smoke", "--out", str(tmp_path)],
        cwd=REPO,
        check=True,
        timeout=600,
    )
    result = json.loads((tmp_path / "operator_scale_smoke.json").read_text())
    assert result["p50_s"] is not None
    assert result["p99_s"] >= result["p50_s"]
    for case in result["cases"]:
        assert case["succeeded"] == case["studies"], case
        assert case["lists"] == 0, case["apiRequests"]
        assert case["latency"]["n"] == case["studies"] * (case["trialsPerStudy"] - 1), case
        assert 0 < case["largestObjectBytes"]["tuningstudies"] < 1_500_000, case
        assert case["samplerAsks"]["asks"] >= case["studies"] * case["trialsPerStudy"], case
    assert (tmp_path / "operator_scale_smoke.md").exists()
