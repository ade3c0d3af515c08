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


def tradeoff_study(
    name: str = "pareto",
    *,
    algorithm: str = "nsga2",
    args: list[str] | None = None,
    budget: dict[str, Any] | None = None,
    lr_test: bool = True,
    seed: int = 11,
) -> dict[str, Any]:
    """A study with two objectives of `rheostat_trainer.examples.tradeoff` (instant).

    loss and cost pull apart along the learning rate, so the front has several trials.
    """
    document = synthetic_study(name, algorithm=algorithm, budget=budget, lr_test=lr_test, seed=seed)
    spec = document["spec"]
    del spec["objective"]
    spec["objectives"] = [
        {"metric": "loss", "direction": "minimize"},
        {"metric": "cost", "direction": "minimize"},
    ]
    if algorithm == "nsga2":
        spec["algorithm"]["settings"] = {"population_size": 4}
    if lr_test:
        spec["lrRangeTest"].update({"steps": 30, "suggestion": "minimum"})
    container = spec["trialTemplate"]["spec"]["containers"][0]
    container["command"] = ["python", "-m", "rheostat_trainer.examples.tradeoff", *(args or [])]
    return document
