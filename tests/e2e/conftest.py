"""Helpers for end-to-end local runs: real trainer processes, real scrapes, real SQLite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml


@pytest.fixture
def write_study(tmp_path: Path):  # type: ignore[no-untyped-def]
    def write(document: dict[str, Any]) -> Path:
        path = tmp_path / f"{document['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(document))
        return path

    return write
