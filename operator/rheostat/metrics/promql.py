"""Read a trial's latest metrics from a Prometheus server with PromQL.

Used when the study names `metrics.prometheusUrl`: the server already scrapes the
trial pods (the chart's PodMonitor, or the test cluster's pod discovery), and the
tuner asks it instead of reaching into every pod.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from rheostat.metrics.scrape import METRIC_FAMILY, STEP_FAMILY, TrialSample


def _instant(base_url: str, query: str, timeout: float) -> list[dict[str, object]]:
    url = base_url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body = json.loads(response.read())
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus query failed: {body.get('error', body)}")
    result = body["data"]["result"]
    assert isinstance(result, list)
    return result


def query_trial(
    base_url: str, namespace: str, study: str, trial: int, timeout: float = 2.0
) -> TrialSample | None:
    """The trial's latest step and metric values as Prometheus last scraped them."""
    selector = f'namespace="{namespace}",study="{study}",trial="{trial}"'
    try:
        steps = _instant(base_url, f"{STEP_FAMILY}{{{selector}}}", timeout)
        values = _instant(base_url, f"{METRIC_FAMILY}{{{selector}}}", timeout)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    if not steps and not values:
        return None
    step = int(float(steps[0]["value"][1])) if steps else None  # type: ignore[index]
    metrics = {
        str(v["metric"]["metric"]): float(v["value"][1])  # type: ignore[index]
        for v in values
        if "metric" in v["metric"]  # type: ignore[operator]
    }
    return TrialSample(step=step, metrics=metrics)
