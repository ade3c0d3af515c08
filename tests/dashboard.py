"""optuna-dashboard as a user starts it, on loopback, read back through its HTTP API.

The dashboard is its own package and process: a storage it cannot open (a schema it
does not know, a study it cannot serialise) shows up here as an HTTP error or a
process that exits, not as a passing test.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

START_SECONDS = 120.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


@contextmanager
def optuna_dashboard(storage: str, log: Path) -> Iterator[str]:
    """Run `optuna-dashboard STORAGE` on a free loopback port; yields its base URL.

    Ready means its API answers (polled, no fixed wait); an early exit fails with
    its output.
    """
    port = _free_port()
    executable = Path(sys.executable).parent / "optuna-dashboard"
    command = [str(executable), storage, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--server", "wsgiref"]
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"optuna-dashboard exited ({process.returncode}):\n{log.read_text()}")
            try:
                get_json(f"{base}/api/studies")
                break
            except urllib.error.HTTPError as error:  # it answered, and refused
                pytest.fail(f"optuna-dashboard: {error}:\n{log.read_text()}")
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    pytest.fail(f"optuna-dashboard did not answer in {START_SECONDS}s")
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def study_detail(base: str, name: str) -> dict[str, Any]:
    """The dashboard's view of study `name` (its trials included)."""
    studies = get_json(f"{base}/api/studies")["study_summaries"]
    matches = [s for s in studies if s["study_name"] == name]
    assert len(matches) == 1, f"{name} not among {[s['study_name'] for s in studies]}"
    detail: dict[str, Any] = get_json(f"{base}/api/studies/{matches[0]['study_id']}")
    return detail
