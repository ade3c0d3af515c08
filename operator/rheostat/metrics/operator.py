"""The operator's own Prometheus metrics, on an injected registry.

Names follow Prometheus conventions (`rheostat_` prefix, `_total` counters, seconds)
and labels stay low-cardinality: per-study series carry only namespace and study.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class OperatorMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    # The objective label values each study has exported, so forget_study can remove them.
    _objectives: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        r = self.registry
        self.studies = Gauge("rheostat_studies", "Studies by phase.", ["phase"], registry=r)
        self.trials = Counter(
            "rheostat_trials_total", "Trials that reached a final state.", ["state"], registry=r
        )
        self.trial_duration = Histogram(
            "rheostat_trial_duration_seconds",
            "Wall time of finished trials.",
            buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600),
            registry=r,
        )
        self.best_value = Gauge(
            "rheostat_study_best_value", "Best objective value.", ["namespace", "study"], registry=r
        )
        self.finished_trials = Gauge(
            "rheostat_study_trials",
            "Trials per study by state.",
            ["namespace", "study", "state"],
            registry=r,
        )
        self.reconcile = Histogram(
            "rheostat_reconcile_duration_seconds", "Time of one reconcile.", registry=r
        )
        self.sampler = Histogram(
            "rheostat_sampler_duration_seconds",
            "Time to decide and sample the next trials.",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60),
            registry=r,
        )
        self.leader = Gauge(
            "rheostat_operator_leader",
            "1 while this replica holds the leader lease and drives studies; 0 on a standby.",
            registry=r,
        )
        self.api_requests = Counter(
            "rheostat_api_requests_total",
            "Requests the reconcile sent to the API server (watches are Kopf's, not counted).",
            ["verb", "resource"],
            registry=r,
        )
        self.front_size = Gauge(
            "rheostat_study_pareto_front_size",
            "Trials on the Pareto front of a study with several objectives.",
            ["namespace", "study"],
            registry=r,
        )
        self.objective_best = Gauge(
            "rheostat_study_objective_best",
            "Best value of each objective of a study with several objectives "
            "(the front's extreme along it).",
            ["namespace", "study", "objective"],
            registry=r,
        )
        self.lr_suggestion = Gauge(
            "rheostat_lr_range_test_suggestion",
            "Learning rate suggested by the LR range test.",
            ["namespace", "study"],
            registry=r,
        )

    def set_front(self, namespace: str, study: str, size: int, best: Mapping[str, float]) -> None:
        """A multi-objective study's front: its size and each objective's best value."""
        self.front_size.labels(namespace, study).set(size)
        for objective, value in best.items():
            self.objective_best.labels(namespace, study, objective).set(value)
        self._objectives.setdefault((namespace, study), set()).update(best)

    def forget_study(self, namespace: str, study: str) -> None:
        """Remove a deleted study's series: a gauge left behind would be exported forever."""
        for objective in self._objectives.pop((namespace, study), set()):
            with contextlib.suppress(KeyError):
                self.objective_best.remove(namespace, study, objective)
        for gauge in (self.best_value, self.lr_suggestion, self.front_size):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, study)
        for state in ("running", "complete", "pruned", "failed"):
            with contextlib.suppress(KeyError):
                self.finished_trials.remove(namespace, study, state)
