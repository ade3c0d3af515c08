"""Export images from buildah's storage into one OCI layout, writing only new blobs.

Usage: ``python3 hack/oci_export.py <graph-root> <layout> <name>=<image-id> ...``

Why not ``buildah push oci:...``: buildah 1.28 re-reads and re-hashes every layer on
each push, even when the destination holds the blob already, which costs about 80 s
per image for the multi-GB torch layer, on every code-only change. Here a layer is
written only when the layout lacks its digest, and then it is reassembled from what
containers-storage keeps anyway: the layer's tar-split (tar headers and padding,
verbatim) and its overlay ``diff`` folder (file contents). That reproduces the
original tar byte for byte; its sha256 is checked against the manifest before the
blob is moved into place, so a mismatch fails the build instead of shipping a bad
image. The manifest and config are the exact bytes buildah stored with the image, so
the image's ID and layers are the ones ``buildah images`` shows.

Each ``name`` becomes the layout's ``org.opencontainers.image.ref.name`` (what the
real node imports as ``localhost/rheostat/<name>:dev``). Blobs no indexed manifest
refers to are deleted. Needs the overlay driver; the caller falls back to ``buildah
push`` otherwise. Standard library only: it runs with the host's python3.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

REF = "org.opencontainers.image.ref.name"
CHUNK = 1 << 20


def log(message: str) -> None:
    print(f"[oci-export {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr)


def big_data(image_dir: Path, key: str) -> bytes:
    """A containers-storage big-data item: keys with ':' are stored base64-named."""
    plain = image_dir / key
    if plain.exists():
        return plain.read_bytes()
    return (image_dir / ("=" + base64.b64encode(key.encode()).decode())).read_bytes()


def tar_split_entries(path: Path) -> Iterator[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as stream:
        for line in stream:
            if line.strip():
                yield json.loads(line)


def assemble(graph_root: Path, layer_id: str, out: BinaryIO) -> str:
    """Write the layer's tar to ``out``; return its sha256 digest."""
    digest = hashlib.sha256()
    diff = graph_root / "overlay" / layer_id / "diff"
    split = graph_root / "overlay-layers" / f"{layer_id}.tar-split.gz"

    def write(data: bytes) -> None:
        digest.update(data)
        out.write(data)

    for entry in tar_split_entries(split):
        if entry["type"] == 2:  # a segment: tar headers and padding, verbatim
            write(base64.b64decode(entry["payload"]))
            continue
        size = int(entry.get("size") or 0)
        if size == 0:
            continue
        raw = entry.get("name_raw")
        name = base64.b64decode(raw) if raw else entry["name"].encode()
        with open(os.path.join(bytes(diff), name.lstrip(b"/")), "rb") as source:
            left = size
            while left:
                data = source.read(min(CHUNK, left))
                if not data:
                    raise RuntimeError(f"{name!r} in layer {layer_id} is shorter than its entry")
                write(data)
                left -= len(data)
    return f"sha256:{digest.hexdigest()}"


def layers_by_digest(graph_root: Path) -> dict[str, str]:
    """Uncompressed layer digest -> a storage layer id holding that content."""
    layers = json.loads((graph_root / "overlay-layers" / "layers.json").read_text())
    found: dict[str, str] = {}
    for layer in layers:
        digest = layer.get("diff-digest")
        if digest and (graph_root / "overlay-layers" / f"{layer['id']}.tar-split.gz").exists():
            found.setdefault(digest, layer["id"])
    return found


def write_blob(blobs: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    target = blobs / digest
    if not target.exists():
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.rename(target)
    return f"sha256:{digest}"


def export(graph_root: Path, layout: Path, name: str, image_id: str) -> dict[str, Any]:
    """Write one image's missing blobs; return its index descriptor."""
    blobs = layout / "blobs" / "sha256"
    image_dir = graph_root / "overlay-images" / image_id
    manifest_bytes = big_data(image_dir, "manifest")
    manifest = json.loads(manifest_bytes)
    if manifest.get("mediaType") != "application/vnd.oci.image.manifest.v1+json":
        raise RuntimeError(f"{name}: stored manifest is not OCI ({manifest.get('mediaType')})")
    config_digest = manifest["config"]["digest"]
    write_blob(blobs, big_data(image_dir, config_digest))
    by_digest: dict[str, str] | None = None
    for layer in manifest["layers"]:
        target = blobs / layer["digest"].split(":")[1]
        if target.exists():
            continue
        if by_digest is None:
            by_digest = layers_by_digest(graph_root)
        started = time.monotonic()
        tmp = target.with_suffix(".tmp")
        with tmp.open("wb") as out:
            got = assemble(graph_root, by_digest[layer["digest"]], out)
        if got != layer["digest"] or tmp.stat().st_size != layer["size"]:
            tmp.unlink()
            raise RuntimeError(f"{name}: layer {layer['digest']} reassembled as {got}")
        tmp.rename(target)
        took = time.monotonic() - started
        size = layer["size"] / 1e6
        log(f"{name}: wrote layer {layer['digest'][7:19]} ({size:.1f} MB, {took:.1f}s)")
    digest = write_blob(blobs, manifest_bytes)
    return {
        "mediaType": manifest["mediaType"],
        "digest": digest,
        "size": len(manifest_bytes),
        "annotations": {REF: name},
    }


def prune(layout: Path, index: dict[str, Any]) -> None:
    """Delete blobs (and leftovers of interrupted writes) no indexed manifest uses."""
    blobs = layout / "blobs" / "sha256"
    keep: set[str] = set()
    for desc in index["manifests"]:
        keep.add(desc["digest"][7:])
        manifest = json.loads((blobs / desc["digest"][7:]).read_text())
        keep.add(manifest["config"]["digest"][7:])
        keep.update(layer["digest"][7:] for layer in manifest["layers"])
    freed = 0
    for blob in blobs.iterdir():
        if blob.name not in keep:
            freed += blob.stat().st_size
            blob.unlink()
    if freed:
        log(f"pruned {freed / 1e6:.0f} MB of blobs no image uses")


def main(argv: list[str]) -> int:
    graph_root, layout = Path(argv[1]), Path(argv[2])
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index_path = layout / "index.json"
    index: dict[str, Any] = (
        json.loads(index_path.read_text())
        if index_path.exists()
        else {"schemaVersion": 2, "manifests": []}
    )
    for pair in argv[3:]:
        name, image_id = pair.split("=", 1)
        desc = export(graph_root, layout, name, image_id)
        index["manifests"] = [
            d for d in index["manifests"] if d.get("annotations", {}).get(REF) not in (name, None)
        ] + [desc]
    tmp = index_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(index, indent=2) + "\n")
    tmp.rename(index_path)
    prune(layout, index)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
