"""Files and folders the CLI cannot use are one message and exit 2, never a traceback.

Each case runs the real command in-process (``main(argv)``) on real files: a study
saved as UTF-16 or Latin-1, a `study.db` that is not a database, a warm-start source
that is a CSV, a work folder that is a file. The read-only folder and the full disk
need a mount; they are in tests/e2e/test_local_faults.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rheostat.cli import EXIT_INVALID, main
from tests.studies import synthetic_study


def _study_text(name: str = "syn", **spec: object) -> str:
    document = synthetic_study(name, budget={"maxTrials": 1, "parallelism": 1})
    document["spec"].update(spec)
    # A non-ASCII comment: the bytes differ between UTF-8, UTF-16 and Latin-1.
    return "# réglage\n" + yaml.safe_dump(document)


def test_study_files_that_are_not_utf8_are_named_and_every_file_is_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    utf16 = tmp_path / "utf16.yaml"
    utf16.write_text(_study_text(), encoding="utf-16")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_text(_study_text(), encoding="latin-1")
    good = tmp_path / "good.yaml"
    good.write_text(_study_text(), encoding="utf-8")

    assert main(["validate", str(utf16), str(latin1), str(good)]) == EXIT_INVALID
    out, err = capsys.readouterr()
    assert f"{utf16}: not UTF-8 text" in err
    assert f"{latin1}: not UTF-8 text" in err
    assert "save it as UTF-8" in err
    assert f"{good}: valid (syn, 4 parameters)" in out  # the last file was still checked

    assert main(["run", str(latin1), "--workdir", str(tmp_path / "w")]) == EXIT_INVALID
    assert f"{latin1}: not UTF-8 text" in capsys.readouterr().err


def test_status_of_a_corrupt_study_db_is_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "study.db").write_bytes(b"this is not a SQLite database\n" * 100)
    assert main(["status", str(tmp_path)]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert f"{tmp_path / 'study.db'} is not a study database (not an SQLite file)" in err


def test_a_warm_start_from_a_csv_is_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "results.csv"
    csv.write_text("number,state,loss\n0,complete,0.5\n")
    study = tmp_path / "study.yaml"
    study.write_text(_study_text(warmStart={"fromStudy": str(csv)}))
    assert main(["run", "--no-progress", str(study), "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert f"spec.warmStart.fromStudy: {csv} is not a study database" in err
    assert "results.json or study.db" in err


def test_a_workdir_that_is_a_file_is_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = tmp_path / "study.yaml"
    study.write_text(_study_text())
    workdir = tmp_path / "taken"
    workdir.write_text("a file, not a folder\n")
    assert main(["run", "--no-progress", str(study), "--workdir", str(workdir)]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert f"{study}: the work folder {workdir} cannot be used:" in err
    assert workdir.read_text() == "a file, not a folder\n"


def test_a_multi_pod_trial_is_refused_locally_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = yaml.safe_load(_study_text())
    document["spec"]["trialTemplate"]["replicas"] = 2
    path = tmp_path / "distributed.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")

    assert main(["validate", str(path)]) == 0  # valid: a cluster runs it
    capsys.readouterr()
    assert main(["run", str(path), "--workdir", str(tmp_path / "w")]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert "spec.trialTemplate.replicas" in err
    assert "replicas 2 needs a cluster" in err
    assert not (tmp_path / "w" / "study.db").exists()  # refused before anything ran
