"""Read a trial's metrics in the Prometheus text format.

Trials serve `rheostat_trial_metric{metric="<name>"}` and `rheostat_trial_step`
(see docs/contracts.md). The tuner reads them straight from the trial's endpoint
by default, so pruning works with no Prometheus server at all; the parsing is
prometheus_client's own, so any exposition a real client library writes is read.
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

METRIC_FAMILY = "rheostat_trial_metric"
STEP_FAMILY = "rheostat_trial_step"


@dataclass(frozen=True)
class TrialSample:
    """What one read of a trial's metrics says: its step and latest values."""

    step: int | None
    metrics: dict[str, float] = field(default_factory=dict)


def parse_trial_metrics(text: str) -> TrialSample:
    """Parse an exposition into a TrialSample; unrelated families are ignored."""
    step: int | None = None
    metrics: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == STEP_FAMILY and math.isfinite(sample.value):
                step = int(sample.value)
            elif sample.name == METRIC_FAMILY and "metric" in sample.labels:
                metrics[sample.labels["metric"]] = sample.value
    return TrialSample(step=step, metrics=metrics)


def scrape(url: str, timeout: float = 1.0) -> TrialSample | None:
    """Fetch and parse one endpoint; None while the trial is not serving yet."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return parse_trial_metrics(body)
