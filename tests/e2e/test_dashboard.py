"""A local run's study.db opens in optuna-dashboard, trials and all."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.dashboard import optuna_dashboard, study_detail
from tests.studies import synthetic_study


def test_a_local_runs_study_db_opens_in_optuna_dashboard(tmp_path: Path) -> None:
    document = synthetic_study(
        "dash",
        # Steps long enough to be scraped: intermediate values are part of the test.
        args=["--steps", "4", "--step-seconds", "0.25"],
        lr_test=True,
        pruner="median",
        budget={"maxTrials": 5, "parallelism": 2},
    )
    path = tmp_path / "dash.yaml"
    path.write_text(yaml.safe_dump(document))
    workdir = tmp_path / "run"
    command = [sys.executable, "-m", "rheostat.cli", "run", str(path), "--workdir", str(workdir)]
    finished = subprocess.run(
        [*command, "--no-progress"], capture_output=True, text=True, timeout=300, check=False
    )
    assert finished.returncode == 0, finished.stderr
    results = json.loads((workdir / "results.json").read_text())
    for picture in ("history.png", "intermediate.png", "lr_range_test.png"):
        assert (workdir / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    with optuna_dashboard(f"sqlite:///{workdir / 'study.db'}", tmp_path / "dash.log") as base:
        detail = study_detail(base, "dash")
    assert detail["directions"] == ["minimize"]
    counted = [t for t in detail["trials"] if _kind(t) == "counted"]
    assert [t["number"] for t in counted] == [t["number"] for t in results["trials"]]
    by_number = {t["number"]: t for t in counted}
    for trial in results["trials"]:
        shown = by_number[trial["number"]]
        assert shown["state"].lower() == ("fail" if trial["state"] == "failed" else trial["state"])
        if trial["state"] == "complete":
            assert shown["values"] == [trial["value"]]
        params = {p["name"]: p for p in shown["params"]}
        for name in ("lr", "momentum"):
            assert float(params[name]["param_external_value"]) == trial["params"][name]
            assert params[name]["distribution"]["type"] == "FloatDistribution"
        steps = [v["step"] for v in shown["intermediate_values"]]
        assert steps == sorted(int(k) for k in trial["intermediate"])
    assert detail["has_intermediate_values"]


def _kind(trial: dict[str, Any]) -> str:
    """Rheostat's bookkeeping attribute as the dashboard lists it (counted by default)."""
    attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
    return str(attrs.get("rheostat:kind", "counted"))
