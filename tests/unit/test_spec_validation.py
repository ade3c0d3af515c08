"""Bad input gets a clear error naming the field, and nothing runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rheostat.spec import InvalidStudyError, parse_study, study_from_mapping
from tests.bad_specs import BAD_CASES, BadCase, bad_document, good_study


def test_the_good_study_is_valid() -> None:
    study = study_from_mapping(good_study())
    assert study.spec.budget.max_trials == 4
    assert study.spec.early_stopping.pruner == "median"  # defaults filled in


def test_the_table_is_big_enough() -> None:
    assert len(BAD_CASES) >= 25
    assert len({c.id for c in BAD_CASES}) == len(BAD_CASES)


@pytest.mark.parametrize("case", BAD_CASES, ids=lambda c: c.id)
def test_bad_study_names_the_field(case: BadCase) -> None:
    with pytest.raises(InvalidStudyError) as raised:
        study_from_mapping(bad_document(case))
    paths = [p.path for p in raised.value.problems]
    assert any(p == case.field or p.startswith(case.field + ".") for p in paths), paths


def test_every_problem_is_reported_at_once() -> None:
    document = good_study()
    document["spec"]["budget"]["maxTrials"] = 0
    document["spec"]["objective"]["metric"] = ""
    with pytest.raises(InvalidStudyError) as raised:
        study_from_mapping(document)
    assert {p.path for p in raised.value.problems} == {
        "spec.budget.maxTrials",
        "spec.objective.metric",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("spec: [unclosed", "malformed YAML at line 1"),
        ("- just\n- a list\n", "must be a mapping"),
        ("", "must be a mapping"),
    ],
)
def test_malformed_yaml(text: str, expected: str) -> None:
    with pytest.raises(InvalidStudyError, match=expected):
        parse_study(text)


def test_categorical_values_of_mixed_types_are_accepted() -> None:
    document = good_study()
    document["spec"]["parameters"][3]["values"] = ["sgd", 1, 0.5, True]
    study = study_from_mapping(document)
    assert study.spec.parameters[3].values == ["sgd", 1, 0.5, True]


def test_a_nested_value_in_a_categorical_names_the_item() -> None:
    document = good_study()
    document["spec"]["parameters"][3]["values"] = ["sgd", {"nested": 1}]
    with pytest.raises(InvalidStudyError) as raised:
        study_from_mapping(document)
    assert [str(p) for p in raised.value.problems] == [
        "spec.parameters[3].values[1]: must be a string or an integer or a number or a boolean"
    ]


def test_validate_cli_exits_2_and_names_fields(tmp_path: Path) -> None:
    bad = bad_document(next(c for c in BAD_CASES if c.id == "min-above-max"))
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(bad))
    run = subprocess.run(
        [sys.executable, "-m", "rheostat.cli", "validate", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 2
    assert "spec.parameters[2].max: max must be greater than min" in run.stderr


def test_run_cli_refuses_invalid_study_and_creates_nothing(tmp_path: Path) -> None:
    bad = bad_document(next(c for c in BAD_CASES if c.id == "unknown-algorithm"))
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(bad))
    workdir = tmp_path / "work"
    run = subprocess.run(
        [sys.executable, "-m", "rheostat.cli", "run", str(path), "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 2
    assert "spec.algorithm.name" in run.stderr
    assert not workdir.exists()


def test_sampler_settings_optuna_refuses_are_reported(tmp_path: Path) -> None:
    document = good_study()
    document["spec"]["algorithm"]["settings"] = {"no_such_option": 1}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(document))
    run = subprocess.run(
        [sys.executable, "-m", "rheostat.cli", "validate", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 2
    assert "spec.algorithm.settings" in run.stderr
