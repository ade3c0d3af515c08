"""bench.operator_image's pure parts: an image's size from an OCI layout, the results page."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bench.operator_image import image_size, markdown


def _blob(layout: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return f"sha256:{digest}"


def test_an_images_size_is_the_sum_of_its_layers(tmp_path: Path) -> None:
    (tmp_path / "blobs" / "sha256").mkdir(parents=True)
    manifest = {
        "config": {"digest": _blob(tmp_path, b"{}"), "size": 2},
        "layers": [{"digest": f"sha256:{i}", "size": size} for i, size in enumerate((5, 70, 25))],
    }
    digest = _blob(tmp_path, json.dumps(manifest).encode())
    ref = {"org.opencontainers.image.ref.name": "operator"}
    index = {"manifests": [{"digest": digest, "annotations": ref}]}
    (tmp_path / "index.json").write_text(json.dumps(index))

    assert image_size(tmp_path, "operator") == {"bytes": 100, "layers": 3, "largest_layer": 70}


def test_the_page_shows_each_measured_section_with_its_medians() -> None:
    when = {"measured": "2026-12-04 15:00 UTC", "commit": "abc1234", "load_average_at_start": [1]}
    result = {
        "sizes": {
            **when,
            "values": {"operator after": {"bytes": 529e6, "layers": 9, "largest_layer": 3e8}},
        },
        "ready": {**when, "values": {"after (slim operator)": [2.0, 5.0, 3.0]}},
    }

    page = markdown(result)

    assert "| operator after | 529 MB | 9 | 300 MB |" in page
    assert "| after (slim operator) | 3 (2, 5, 3) |" in page
    assert "Import into" not in page  # not measured: not shown
