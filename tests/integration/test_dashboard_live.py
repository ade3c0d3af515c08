"""`rheostat dashboard` on the test cluster, in a real browser, while a study runs.

Debian's chromium, driven by selenium through Debian's chromedriver (both from
hack/install-test-deps.sh), loads the page a user would: the study list, then the
study, whose optimization history plot must have one point per finished trial the
cluster has, and, once the study ends, its final best value; all from one
dashboard process started before the study ended, with no page reload.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.integration.operator_support import (
    OperatorProcess,
    create_study,
    get_study,
    synthetic_study,
    trials,
    wait,
    wait_for_phase,
)

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# The history plot's element (optuna-dashboard's `plot-history`) and its points: the
# marker trace of Plotly's data on that element is one point per complete trial.
POINTS_SCRIPT = """
const plot = document.getElementById('plot-history');
if (!plot || !plot.data) { return null; }
const markers = plot.data.filter(t => (t.mode || '').includes('markers'));
return markers.reduce((n, t) => n + (t.x ? t.x.length : 0), 0);
"""


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.fail("chromium and chromium-driver are missing: run hack/install-test-deps.sh")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def dashboard(cluster: Any, namespace: str, tmp_path: Path) -> Iterator[str]:
    """`rheostat dashboard -n NAMESPACE --port 0` as a user runs it; yields its URL."""
    log = tmp_path / "dashboard.log"
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "rheostat.cli", "dashboard", "-n", namespace, "--port", "0"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:

        def url() -> str | None:
            assert process.poll() is None, log.read_text()
            for line in log.read_text().splitlines():
                if "http://" in line:
                    return line[line.index("http://") :].strip()
            return None

        yield str(wait(url, 60, "the dashboard to listen"))
    finally:
        process.terminate()
        process.wait(timeout=20)


def _finished(api: client.ApiClient, namespace: str, name: str) -> int:
    return sum(
        1
        for t in trials(api, namespace, name)
        if (t.get("status") or {}).get("state") in {"Complete", "Pruned", "Failed"}
    )


def _until(check: Callable[[], Any], seconds: float, what: str, last: Callable[[], str]) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out after {seconds}s waiting for {what}: {last()}")


def test_the_dashboard_shows_a_running_study_live_in_a_browser(
    admin_api: client.ApiClient,
    namespace: str,
    operator: OperatorProcess,
    dashboard: str,
    browser: Any,
) -> None:
    from selenium.webdriver.common.by import By

    name = "live"
    document = synthetic_study(
        name,
        args=["--steps", "8", "--step-seconds", "1"],
        budget={"maxTrials": 4, "parallelism": 1},
    )
    create_study(admin_api, namespace, document)
    wait(lambda: _finished(admin_api, namespace, name) >= 1, 120, "a first finished trial")

    # The study list, as a user opens the dashboard.
    browser.get(dashboard)
    link = _until(
        lambda: next(
            (e for e in browser.find_elements(By.XPATH, f"//a[.//text()='{name}']")), None
        ),
        60,
        "the study in the list",
        lambda: browser.find_element(By.TAG_NAME, "body").text[:2000],
    )
    link.click()

    def points() -> int | None:
        found = browser.execute_script(POINTS_SCRIPT)
        return None if found is None else int(found)

    # While it runs: the plot has as many points as the cluster has finished trials.
    seen: list[tuple[int | None, int]] = []

    def agrees() -> bool:
        page, cluster = points(), _finished(admin_api, namespace, name)
        seen.append((page, cluster))
        return page is not None and page == cluster

    _until(agrees, 60, "the history plot to match the cluster", lambda: str(seen[-5:]))
    # A running trial's intermediate values are drawn too (the legend names it).
    _until(
        lambda: "(running)" in browser.find_element(By.TAG_NAME, "body").text,
        30,
        "a running trial's intermediate values",
        lambda: browser.find_element(By.TAG_NAME, "body").text[-1500:],
    )
    phase = (get_study(admin_api, namespace, name).get("status") or {}).get("phase")
    assert phase == "Running", f"the study ended before the live check: {phase}"
    assert seen[-1][1] < 4

    # After it ends: the same page, never reloaded, shows the final best value.
    study = wait_for_phase(
        admin_api, namespace, name, {"Succeeded", "Failed"}, seconds=240, operator=operator
    )
    assert study["status"]["phase"] == "Succeeded", study["status"]
    best = study["status"]["bestTrial"]["value"]
    _until(
        lambda: points() == 4 and repr(best) in browser.find_element(By.TAG_NAME, "body").text,
        60,
        f"the final best value {best!r} and 4 points",
        lambda: f"points={points()} page={browser.find_element(By.TAG_NAME, 'body').text[:3000]}",
    )
