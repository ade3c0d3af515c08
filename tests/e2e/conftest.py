"""Helpers for end-to-end local runs: real trainer processes, real scrapes, real SQLite."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.bad_specs import good_study


def synthetic_study(
    name: str = "syn",
    *,
    algorithm: str = "tpe",
    args: list[str] | None = None,
    budget: dict[str, Any] | None = None,
    pruner: str = "none",
    lr_test: bool = False,
    scrape_interval: float = 0.1,
) -> dict[str, Any]:
    document = copy.deepcopy(good_study())
    spec = document["spec"]
    document["metadata"]["name"] = name
    spec["objective"] = {"metric": "loss", "direction": "minimize"}
    spec["algorithm"] = {"name": algorithm, "seed": 11}
    if algorithm == "grid":
        spec["parameters"] = [
            {"name": "x", "type": "float", "min": 0.0, "max": 0.6, "step": 0.3},
            {"name": "optimizer", "type": "categorical", "values": ["sgd", "adam"]},
        ]
    if not lr_test:
        spec.pop("lrRangeTest")
    spec["budget"] = budget or {"maxTrials": 6, "parallelism": 2}
    spec["earlyStopping"] = {"pruner": pruner}
    spec["metrics"] = {"scrapeInterval": scrape_interval}
    spec["trialTemplate"]["spec"]["containers"][0]["command"] = [
        "python",
        "-m",
        "rheostat_trainer.examples.synthetic",
        *(args or []),
    ]
    return document


@pytest.fixture
def write_study(tmp_path: Path):  # type: ignore[no-untyped-def]
    def write(document: dict[str, Any]) -> Path:
        path = tmp_path / f"{document['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(document))
        return path

    return write
