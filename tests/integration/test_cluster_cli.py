"""`rheostat get|describe|plot|export` (and `kubectl rheostat`) on a real cluster study.

The study runs on the test cluster under the real operator; the same document runs
locally too, so the files the CLI writes from the cluster can be held against a
local run's: same keys, same columns, same pictures.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from tests.cluster.polling import wait_for
from tests.dashboard import optuna_dashboard, study_detail
from tests.integration.operator_support import (
    OperatorProcess,
    create_study,
    synthetic_study,
    trials,
    wait_for_phase,
)

PNG = b"\x89PNG\r\n\x1a\n"
PICTURES = ("history.png", "intermediate.png", "lr_range_test.png")


def _document() -> dict[str, Any]:
    return synthetic_study(
        "clisyn",
        # Steps long enough to be scraped: intermediate curves are part of the output.
        args=["--steps", "4", "--step-seconds", "0.25"],
        lr_test=True,
        pruner="median",
        budget={"maxTrials": 5, "parallelism": 2},
    )


def _rheostat(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rheostat.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def _kubectl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", *args], capture_output=True, text=True, timeout=120, check=False
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args}: {result.stderr}"
    return result.stdout


def _local_run(tmp_path: Path) -> Path:
    """The same study run on this machine: the reference for the cluster's files."""
    path = tmp_path / "clisyn.yaml"
    path.write_text(yaml.safe_dump(_document()))
    workdir = tmp_path / "local"
    _ok(_rheostat("run", str(path), "--workdir", str(workdir), "--no-progress", cwd=tmp_path))
    return workdir


def _shape(document: dict[str, Any]) -> dict[str, Any]:
    """What must match between a local and a cluster results.json (values differ)."""
    return {
        "top": sorted(document),
        "status": sorted(document["status"]),
        "lrRangeTest": sorted(document["status"]["lrRangeTest"]),
        "trial": sorted(document["trials"][0]),
        "curve": sorted(document["lrRangeTest"]),
    }


def test_the_cli_shows_a_cluster_study_as_a_local_run(
    cluster: Any,
    admin_api: client.ApiClient,
    namespace: str,
    operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    create_study(admin_api, namespace, _document())
    local = _local_run(tmp_path)  # runs while the cluster study does
    study = wait_for_phase(
        admin_api, namespace, "clisyn", {"Succeeded", "Failed"}, seconds=240, operator=operator
    )
    status = study["status"]
    assert status["phase"] == "Succeeded", status
    where = ["-n", namespace, "--kubeconfig", str(cluster.kubeconfig)]
    counted = [
        t
        for t in trials(admin_api, namespace, "clisyn")
        if t["status"].get("kind", "counted") == "counted"
    ]
    _check_listings(status, namespace, where, tmp_path)
    _check_describe(status, where, tmp_path)
    _check_files(status, counted, local, where, tmp_path)
    _check_dashboard(status, counted, where, tmp_path)
    # A study that is not there: one line, exit 2.
    missing = _rheostat("get", "nothere", *where, cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        f'error: tuningstudy "nothere" not found in namespace {namespace}'
    )


def _check_listings(status: dict[str, Any], namespace: str, where: list[str], cwd: Path) -> None:
    """`get`, `kubectl rheostat get -A` and kubectl's own printer columns."""
    best = status["bestTrial"]["value"]
    listing = _ok(_rheostat("get", *where, cwd=cwd)).splitlines()
    print("\n".join(listing))
    assert listing[0].split() == ["NAME", "PHASE", "DONE", "TOTAL", "BEST", "LR", "ETA", "AGE"]
    assert listing[1].split()[:5] == ["clisyn", "Succeeded", "5", "5", f"{best:.4g}"]
    # Through kubectl's plugin mechanism: the kubeconfig comes from $KUBECONFIG,
    # which kubectl passes on with the rest of its environment.
    plugin = _ok(_kubectl("rheostat", "get", "-A"))
    assert any(line.split()[:2] == [namespace, "clisyn"] for line in plugin.splitlines())
    # kubectl's own BEST and LR columns: the operator's rounded display values.
    columns = _ok(_kubectl("get", "tstudy", "clisyn", "-n", namespace))
    print(columns)
    shown = _columns(columns)
    assert shown["ETA"] == ""  # kubectl leaves a missing field's cell blank
    assert shown["BEST"] == f"{best:.4g}"
    assert shown["LR"] == f"{status['lrRangeTest']['suggestedLr']:.3g}"


def _check_describe(status: dict[str, Any], where: list[str], cwd: Path) -> None:
    """`describe`: the local run's table, plus conditions and Events."""
    text = _ok(_rheostat("describe", "clisyn", *where, cwd=cwd))
    print(text)
    best = status["bestTrial"]
    assert "clisyn: tpe" in text
    assert f"Best trial #{best['number']}: loss={best['value']:.5g}" in text
    assert "LR range test: minimum suggestion" in text
    assert "Complete=True BudgetSpent" in text
    assert "TrialCompleted" in text


def _check_files(
    status: dict[str, Any],
    counted: list[dict[str, Any]],
    local: Path,
    where: list[str],
    cwd: Path,
) -> None:
    """`plot` and `export`: the files a local run writes, in the same shape."""
    out = cwd / "from-cluster"
    _ok(_rheostat("plot", "clisyn", *where, "-d", str(out), cwd=cwd))
    _ok(_rheostat("export", "clisyn", *where, "-d", str(out), cwd=cwd))
    for picture in PICTURES:
        assert (out / picture).read_bytes()[:8] == PNG
        assert (local / picture).read_bytes()[:8] == PNG
    exported = json.loads((out / "results.json").read_text())
    reference = json.loads((local / "results.json").read_text())
    assert _shape(exported) == _shape(reference)
    assert exported["status"]["bestTrial"] == status["bestTrial"]
    assert [t["number"] for t in exported["trials"]] == [t["spec"]["number"] for t in counted]
    with (out / "results.csv").open() as theirs, (local / "results.csv").open() as ours:
        assert next(csv.reader(theirs)) == next(csv.reader(ours))
    as_json = json.loads(_ok(_rheostat("get", "clisyn", *where, "-o", "json", cwd=cwd)))
    assert as_json == exported


def _check_dashboard(
    status: dict[str, Any], counted: list[dict[str, Any]], where: list[str], cwd: Path
) -> None:
    """`export --storage`: optuna-dashboard opens it and shows every trial."""
    storage = f"sqlite:///{cwd / 'exported.db'}"
    _ok(_rheostat("export", "clisyn", *where, "--storage", storage, cwd=cwd))
    with optuna_dashboard(storage, cwd / "dashboard.log") as base:
        detail = study_detail(base, "clisyn")
    assert detail["directions"] == ["minimize"]
    by_number = {t["number"]: t for t in detail["trials"]}
    for trial in counted:
        shown = by_number[trial["spec"]["number"]]
        assert shown["state"] == trial["status"]["state"].replace("Failed", "Fail")
        params = {p["name"]: p["param_external_value"] for p in shown["params"]}
        assert float(params["momentum"]) == trial["spec"]["params"]["momentum"]
        assert params["optimizer"] == trial["spec"]["params"]["optimizer"]
        steps = sorted(int(s) for s in trial["status"]["intermediate"])
        assert [v["step"] for v in shown["intermediate_values"]] == steps
        if trial["status"]["state"] == "Complete":
            assert shown["values"] == [trial["status"]["value"]]
    assert [t["number"] for t in detail["best_trials"]] == [status["bestTrial"]["number"]]


def _columns(table: str) -> dict[str, str]:
    """A one-study listing (header and one row) as column -> cell, cut where the
    header's columns start (kubectl leaves the cell of a missing field blank)."""
    header, row = table.splitlines()[:2]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    ends = [*starts[1:], None]
    return {header[a:b].strip(): row[a:b].strip() for a, b in zip(starts, ends, strict=True)}


def test_a_running_study_shows_its_eta_and_why_it_waits(
    cluster: Any,
    admin_api: client.ApiClient,
    namespace: str,
    operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    """One slot, four trials of a few seconds: describe says the slot is busy, and once
    a trial has ended `kubectl get` and `rheostat get` show an ETA, gone at the end."""
    document = synthetic_study(
        "etasyn",
        args=["--steps", "8", "--step-seconds", "0.5"],
        budget={"maxTrials": 4, "parallelism": 1},
    )
    create_study(admin_api, namespace, document)
    where = ["-n", namespace, "--kubeconfig", str(cluster.kubeconfig)]

    def waiting() -> str | None:
        text = _ok(_rheostat("describe", "etasyn", *where, cwd=tmp_path))
        return text if "ParallelismFull:" in text else None

    text = wait_for(waiting, 120, "describe to say the study's one slot is busy")
    print(text)
    reasons = [line for line in text.splitlines() if "ParallelismFull:" in line]
    assert "every parallel slot is busy (budget.parallelism=1)" in reasons[0], text
    assert text.index("Waiting:") <= text.index("ParallelismFull:")

    def eta() -> dict[str, str] | None:
        shown = _columns(_ok(_kubectl("get", "tstudy", "etasyn", "-n", namespace)))
        return shown if shown["ETA"] else None

    shown = wait_for(eta, 120, "kubectl get to show an ETA once a trial has ended")
    print(shown)
    assert re.fullmatch(r"\d+s|\d+m(\d+s)?", shown["ETA"]), shown
    assert shown["PHASE"] == "Running"
    listed = _columns(_ok(_rheostat("get", "etasyn", *where, cwd=tmp_path)))
    assert listed["PHASE"] != "Running" or re.fullmatch(r"\d+s|\d+m(\d+s)?", listed["ETA"])

    study = wait_for_phase(
        admin_api, namespace, "etasyn", {"Succeeded", "Failed"}, seconds=240, operator=operator
    )
    assert study["status"]["phase"] == "Succeeded", study["status"]
    assert "etaSeconds" not in study["status"]
    final = _columns(_ok(_kubectl("get", "tstudy", "etasyn", "-n", namespace)))
    assert final["ETA"] == ""
    text = _ok(_rheostat("describe", "etasyn", *where, cwd=tmp_path))
    assert "Waiting:" not in text
