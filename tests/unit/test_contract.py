"""Reading what a trial wrote: termination messages and LR range test curves.

The text is a tenant's, so parsing it must never raise, and a curve that cannot be
read must fail with a ContractError naming the field, not a bare TypeError.
"""

from __future__ import annotations

import json
import math

import pytest

from rheostat.backends.kubernetes.manifests import trial_job
from rheostat.contract import (
    MAX_TERMINATION_MESSAGE_BYTES,
    ContractError,
    lr_curve,
    parse_termination_message,
    trial_env,
)
from rheostat.spec import study_from_mapping
from tests.bad_specs import objectives_study

# ----- parse_termination_message ------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "[" * 3000 + "]" * 3000,
        '{"a":' * 3000 + "1" + "}" * 3000,
        '{"metrics": {"loss": ' + "[" * 5000 + "]" * 5000 + "}}",
    ],
    ids=["list", "object", "inside-metrics"],
)
def test_deeply_nested_message_is_none(text: str) -> None:
    assert parse_termination_message(text) is None


def test_oversize_message_is_none() -> None:
    padding = "x" * (MAX_TERMINATION_MESSAGE_BYTES + 1)
    text = json.dumps({"metrics": {"loss": 0.5}, "pad": padding})
    assert parse_termination_message(text) is None


def test_oversize_in_bytes_but_not_characters_is_none() -> None:
    padding = "é" * (MAX_TERMINATION_MESSAGE_BYTES // 2 + 100)  # two bytes each in UTF-8
    text = json.dumps({"metrics": {"loss": 0.5}, "pad": padding}, ensure_ascii=False)
    assert len(text) < MAX_TERMINATION_MESSAGE_BYTES
    assert parse_termination_message(text) is None


def test_message_under_the_cap_is_read() -> None:
    padding = "x" * (MAX_TERMINATION_MESSAGE_BYTES - 100)
    text = json.dumps({"metrics": {"loss": "nan"}, "step": 3, "pad": padding})
    message = parse_termination_message(text)
    assert message is not None
    assert message["step"] == 3
    assert math.isnan(message["metrics"]["loss"])


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n",
        "{",
        "null",
        "[1, 2]",
        '"a string"',
        "\x00\x01",
        '"\\ud800"',
        "\ud800",
        "NaN",
        '{"step": ' + "1" * 5000 + "}",  # over Python's int-digit limit: ValueError
    ],
)
def test_unusable_message_is_none(text: str) -> None:
    assert parse_termination_message(text) is None


# ----- lr_curve ------------------------------------------------------------------------


def curve(lrs: object, losses: object) -> dict[str, object]:
    return {"lrRangeTest": {"lrs": lrs, "losses": losses}}


def test_null_loss_is_nan() -> None:
    # JSON.stringify and pandas write NaN as null; the trainer SDK writes "nan".
    text = '{"lrRangeTest": {"lrs": [0.001, 0.01, 0.1], "losses": [2.5, null, "nan"]}}'
    result = lr_curve(parse_termination_message(text))
    assert result is not None
    lrs, losses = result
    assert lrs == [0.001, 0.01, 0.1]
    assert losses[0] == 2.5
    assert math.isnan(losses[1])
    assert math.isnan(losses[2])


def test_non_finite_strings_and_numeric_strings_are_read() -> None:
    result = lr_curve(curve([1, "0.5", 2.0], ["inf", "-inf", "Infinity"]))
    assert result == ([1.0, 0.5, 2.0], [math.inf, -math.inf, math.inf])


def test_unequal_lengths_raise_contract_error() -> None:
    with pytest.raises(ContractError, match=r"^lrRangeTest: 100 lrs but 99 losses$"):
        lr_curve(curve([0.1] * 100, [1.0] * 99))


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ("abc", "lrRangeTest.losses[3] is not a number: 'abc'"),
        (True, "lrRangeTest.losses[3] is not a number: True"),
        ({"v": 1}, "lrRangeTest.losses[3] is not a number: {'v': 1}"),
        ([1.0], "lrRangeTest.losses[3] is not a number: [1.0]"),
        (10**400, "lrRangeTest.losses[3] is not a number: 1000000"),
    ],
    ids=["string", "bool", "dict", "list", "beyond-float"],
)
def test_element_that_is_not_a_number_raises_contract_error(bad: object, expected: str) -> None:
    losses = [1.0, 0.9, 0.8, bad, 0.7]
    with pytest.raises(ContractError) as raised:
        lr_curve(curve([0.1, 0.2, 0.3, 0.4, 0.5], losses))
    assert str(raised.value).startswith(expected)


def test_bad_lr_names_the_lrs_field() -> None:
    with pytest.raises(ContractError, match=r"lrRangeTest\.lrs\[0\] is not a number: False"):
        lr_curve(curve([False, 0.2], [1.0, 0.9]))


@pytest.mark.parametrize(
    ("lrs", "losses", "field"),
    [
        ([0.1], {"0": 1.0}, "losses"),
        ("0.1,0.2", [1.0, 0.9], "lrs"),
        ([0.1], None, "losses"),
        ([0.1], 1.0, "losses"),
    ],
)
def test_field_that_is_not_a_list_raises_contract_error(
    lrs: object, losses: object, field: str
) -> None:
    with pytest.raises(ContractError, match=rf"^lrRangeTest\.{field} is not a list: "):
        lr_curve(curve(lrs, losses))


def test_contract_error_is_a_value_error() -> None:
    # Callers report a failed LR range test by catching ValueError.
    assert issubclass(ContractError, ValueError)


@pytest.mark.parametrize(
    "message",
    [None, {}, {"metrics": {"loss": 1.0}}, {"lrRangeTest": {"lrs": [0.1]}}, {"lrRangeTest": []}],
)
def test_message_without_a_curve_is_none(message: dict[str, object] | None) -> None:
    assert lr_curve(message) is None


def test_well_formed_curve_is_read() -> None:
    assert lr_curve(curve([0.001, 0.01], [2.0, 1.5])) == ([0.001, 0.01], [2.0, 1.5])


# ----- trial_env: what a trial is told ------------------------------------------------


def test_a_trial_is_told_the_studys_objectives_in_order() -> None:
    env = trial_env("s", 3, {"lr": 0.1}, 8000, objectives=["loss", "cost"])
    assert json.loads(env["RHEOSTAT_OBJECTIVES"]) == ["loss", "cost"]
    assert "RHEOSTAT_OBJECTIVES" not in trial_env("s", 3, {"lr": 0.1}, 8000)


def test_a_trial_job_carries_the_objectives_finish_must_keep() -> None:
    document = objectives_study(("accuracy", "size"))
    document["metadata"] |= {"namespace": "ns", "uid": "u-1"}
    spec = study_from_mapping(document).spec
    trial = {
        "apiVersion": "rheostat.dev/v1alpha1",
        "kind": "TuningTrial",
        "metadata": {"name": "good-t0", "uid": "u-2"},
        "spec": {"number": 0},
    }
    job = trial_job(document, spec, trial, {"lr": 0.1})
    env = {
        e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert json.loads(env["RHEOSTAT_OBJECTIVES"]) == ["accuracy", "size"]
