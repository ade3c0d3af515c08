"""Study documents shared by the local and the cluster tests: the synthetic trainer."""

from __future__ import annotations

import copy
from typing import Any

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
    seed: int = 11,
    resources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A study of `rheostat_trainer.examples.synthetic` (instant, known optimum)."""
    document = copy.deepcopy(good_study())
    spec = document["spec"]
    document["metadata"]["name"] = name
    spec["objective"] = {"metric": "loss", "direction": "minimize"}
    spec["algorithm"] = {"name": algorithm, "seed": seed}
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
    container = spec["trialTemplate"]["spec"]["containers"][0]
    container["command"] = ["python", "-m", "rheostat_trainer.examples.synthetic", *(args or [])]
    if resources:
        container["resources"] = resources
    return document
