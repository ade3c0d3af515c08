"""`lrRangeTest.apply: schedule`: the study side (space, status, each trial's bounds and
env) and the trainer side (rt.lr_schedule, rt.one_cycle, rt.cyclic_lr)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import rheostat_trainer as rt
from rheostat import lr_phase
from rheostat.backends.kubernetes.manifests import trial_job
from rheostat.contract import trial_env
from rheostat.lr_range import LrRangeResult
from rheostat.space import build_space
from rheostat.spec import StudySpec, study_from_mapping
from tests.bad_specs import good_study


def _spec(apply: str = "schedule") -> StudySpec:
    document = copy.deepcopy(good_study())
    document["spec"]["lrRangeTest"]["apply"] = apply
    return study_from_mapping(document).spec


def _result(schedule: tuple[float, float] | None = (1e-3, 2e-2)) -> LrRangeResult:
    return LrRangeResult(
        lrs=(1e-4, 1e-3, 1e-2, 1e-1),
        losses=(2.0, 1.5, 0.5, 3.0),
        smoothed=(2.0, 1.5, 0.5, 3.0),
        suggestions={"minimum": 1e-3},
        rule="minimum",
        suggested_lr=1e-3,
        lower=1e-4,
        upper=3e-3,
        schedule=schedule,
    )


def test_the_lr_parameter_is_searched_within_half_a_decade_of_the_peak() -> None:
    spec = _spec()
    override = lr_phase.override(spec, _result())
    assert (override.policy, override.suggested_lr) == ("schedule", 2e-2)
    assert override.lower == pytest.approx(2e-2 / math.sqrt(10))
    assert override.upper == pytest.approx(2e-2 * math.sqrt(10))
    lr = build_space(spec.parameters, override).distributions["lr"]
    assert (lr.low, lr.high) == (override.lower, override.upper)  # type: ignore[attr-defined]
    summary = lr_phase.summary(spec, _result())
    assert summary["schedule"] == {"base": 1e-3, "peak": 2e-2}
    assert summary["narrowedTo"] == [override.lower, override.upper]


def test_each_trial_cycles_from_its_own_peak_with_the_tests_ratio() -> None:
    spec = _spec()
    assert lr_phase.trial_schedule(spec, _result(), {"lr": 4e-2}) == pytest.approx((2e-3, 4e-2))
    assert lr_phase.trial_schedule(_spec("narrow"), _result(), {"lr": 4e-2}) is None
    assert lr_phase.trial_schedule(spec, None, {"lr": 4e-2}) is None


@pytest.mark.parametrize(
    ("schedule", "why"),
    [(None, "no steep descent"), ((1e-3, 50.0), "peak lr 50 lies outside lr's range")],
)
def test_no_usable_schedule_searches_the_whole_range_and_says_why(
    schedule: tuple[float, float] | None, why: str
) -> None:
    spec = _spec()
    result = _result(schedule)
    assert lr_phase.override(spec, result).policy == "report"
    assert lr_phase.trial_schedule(spec, result, {"lr": 1e-2}) is None
    assert why in (lr_phase.disagreement(spec, result) or "")
    assert why in lr_phase.summary(spec, result)["warning"]


def test_the_bounds_reach_the_trainer_in_env_and_in_the_job() -> None:
    env = trial_env("s", 3, {"lr": 4e-2}, 9090, lr_schedule=(2e-3, 4e-2))
    assert (float(env["RHEOSTAT_LR_BASE"]), float(env["RHEOSTAT_LR_PEAK"])) == (2e-3, 4e-2)
    assert "RHEOSTAT_LR_BASE" not in trial_env("s", 3, {"lr": 4e-2}, 9090)
    study = {"metadata": {"name": "s", "namespace": "ns", "uid": "u"}, **good_study()}
    study["metadata"] = {"name": "s", "namespace": "ns", "uid": "u"}
    trial = {"metadata": {"name": "s-t3", "uid": "t"}, "spec": {"number": 3}}
    trial |= {"apiVersion": "rheostat.dev/v1alpha1", "kind": "TuningTrial"}
    job = trial_job(study, _spec(), trial, {"lr": 4e-2}, (2e-3, 4e-2))
    container = job["spec"]["template"]["spec"]["containers"][0]
    names = {e["name"]: e.get("value") for e in container["env"]}
    assert names["RHEOSTAT_LR_PEAK"] == repr(4e-2)


# ------------------------------------------------------------------ trainer side


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0, momentum=0.9)


def test_lr_schedule_reads_both_bounds_or_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RHEOSTAT_LR_BASE", raising=False)
    monkeypatch.delenv("RHEOSTAT_LR_PEAK", raising=False)
    assert rt.lr_schedule() is None
    assert rt.lr_schedule(default=(1e-3, 1e-2)) == (1e-3, 1e-2)
    with pytest.raises(rt.EnvError, match=r"lrRangeTest\.apply: schedule"):
        rt.one_cycle(_optimizer(), total_steps=10)
    monkeypatch.setenv("RHEOSTAT_LR_PEAK", "0.1")
    with pytest.raises(rt.EnvError, match="without its partner"):
        rt.lr_schedule()
    monkeypatch.setenv("RHEOSTAT_LR_BASE", "0.5")
    with pytest.raises(rt.EnvError, match="below RHEOSTAT_LR_PEAK"):
        rt.lr_schedule()
    monkeypatch.setenv("RHEOSTAT_LR_BASE", "0.01")
    assert rt.lr_schedule() == (0.01, 0.1)


def test_one_cycle_starts_at_the_base_and_peaks_at_the_peak(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RHEOSTAT_LR_BASE", "0.01")
    monkeypatch.setenv("RHEOSTAT_LR_PEAK", "0.1")
    optimizer = _optimizer()
    scheduler = rt.one_cycle(optimizer, total_steps=100)
    seen = []
    for _ in range(99):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx(0.01)
    assert max(seen) == pytest.approx(0.1)
    assert seen[-1] < 0.01  # annealed below the base at the end


def test_cyclic_lr_moves_between_the_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RHEOSTAT_LR_BASE", "0.01")
    monkeypatch.setenv("RHEOSTAT_LR_PEAK", "0.1")
    optimizer = _optimizer()
    scheduler = rt.cyclic_lr(optimizer, step_size_up=5)
    seen = []
    for _ in range(21):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert min(seen) == pytest.approx(0.01)
    assert max(seen) == pytest.approx(0.1)
    assert seen[5] == pytest.approx(0.1)
    assert seen[10] == pytest.approx(0.01)
