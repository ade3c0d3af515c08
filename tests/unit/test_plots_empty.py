"""Plots of a study with nothing to show yet draw without matplotlib's legend warning.

A study whose trials all failed (or that has none finished) still gets its
history.png; pytest turns warnings into errors, so `No artists with labels found to
put in legend` fails these tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rheostat.backends.local.plots import write_plots
from rheostat.backends.local.report import StudyResults
from rheostat.events import TrialView
from rheostat.spec import study_from_mapping
from tests.bad_specs import good_study, objectives_study


def _results(document: dict[str, object], trials: list[TrialView]) -> StudyResults:
    spec = study_from_mapping(document).spec
    return StudyResults(name="empty", spec=spec, status={"phase": "Failed"}, trials=trials)


FAILED = TrialView(0, "failed", {"lr": 0.1}, None, "exit code 1", {}, 1.0)


@pytest.mark.parametrize("trials", [[], [FAILED]], ids=["no-trials", "only-a-failure"])
@pytest.mark.parametrize("document", [good_study(), objectives_study()], ids=["one", "several"])
def test_no_complete_trial_draws_without_a_legend_warning(
    document: dict[str, object], trials: list[TrialView], tmp_path: Path
) -> None:
    written = write_plots(_results(document, trials), tmp_path)
    assert tmp_path / "history.png" in written
    assert (tmp_path / "history.png").stat().st_size > 1000
