"""The cluster commands' surface: kubectl's plugin name, kubectl's flags, clear errors."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from rheostat.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_kubectl_finds_the_plugin_by_its_executable_name() -> None:
    scripts = _pyproject()["project"]["scripts"]  # type: ignore[index]
    assert scripts["kubectl-rheostat"] == "rheostat.cli:kubectl_main"


def test_the_license_is_an_spdx_string_for_a_setuptools_that_reads_it() -> None:
    document = _pyproject()
    assert document["project"]["license"] == "Apache-2.0"  # type: ignore[index]
    assert "setuptools>=77" in document["build-system"]["requires"]  # type: ignore[index]


def test_the_flags_kubectl_users_expect() -> None:
    parser = build_parser("kubectl rheostat")
    args = parser.parse_args(["get", "-A", "--kubeconfig", "k.yaml", "--context", "c"])
    assert (args.study, args.all_namespaces, args.kubeconfig, args.context) == (
        None,
        True,
        "k.yaml",
        "c",
    )
    args = parser.parse_args(["export", "mnist", "-n", "team", "--storage", "sqlite:///x.db"])
    assert (args.study, args.namespace, args.storage) == ("mnist", "team", "sqlite:///x.db")
    args = parser.parse_args(["plot", "mnist", "-d", "out"])
    assert args.output_dir == "out"
    assert parser.format_usage().startswith("usage: kubectl rheostat")


def test_a_missing_kubeconfig_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["get", "--kubeconfig", str(tmp_path / "absent.yaml")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no usable kubeconfig")
    assert len(err.strip().splitlines()) == 1


def test_kubectl_columns_show_the_operators_rounded_values() -> None:
    """A number column prints a float in full (17 digits); the display strings don't."""
    from rheostat.crd import study_crd

    columns = {c["name"]: c for c in study_crd()["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert columns["Best"] == {"name": "Best", "type": "string", "jsonPath": ".status.display.best"}
    assert columns["LR"] == {"name": "LR", "type": "string", "jsonPath": ".status.display.lr"}
    assert columns["ETA"] == {"name": "ETA", "type": "string", "jsonPath": ".status.display.eta"}


def test_a_trials_value_column_is_rounded_and_its_value_exact() -> None:
    from rheostat.backends.kubernetes.manifests import trial_status
    from rheostat.crd import trial_crd
    from rheostat.events import TrialRecord

    columns = {c["name"]: c for c in trial_crd()["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert columns["Value"]["jsonPath"] == ".status.display.value"
    record = TrialRecord(number=0, params={"x": 1}, state="complete", value=0.04720239222200367)
    status = trial_status(record)
    assert status["value"] == 0.04720239222200367
    assert status["display"] == {"value": "0.0472"}
