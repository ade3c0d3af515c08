"""Where the control-plane binaries live, and why they might be missing.

``hack/build-control-plane.sh`` builds them into a versioned cache folder; this
module finds that folder (or ``KUBEBUILDER_ASSETS``) without building anything, so
that importing the test suite never triggers a multi-minute Go build. The versions
here must match the script's defaults.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

K8S_VERSION = os.environ.get("RHEOSTAT_K8S_VERSION", "v1.34.4")
ETCD_VERSION = os.environ.get("RHEOSTAT_ETCD_VERSION", "v3.6.4")
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
REPO_ROOT = Path(__file__).resolve().parents[2]


class BinariesMissingError(RuntimeError):
    """The control plane cannot start on this machine; the message says why."""


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of every executable the harness runs."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    prometheus: Path
    bin_dir: Path


def cache_root() -> Path:
    """``$RHEOSTAT_CACHE`` or ~/.cache/rheostat: binaries, images, the real node's containerd."""
    return Path(os.environ.get("RHEOSTAT_CACHE") or Path.home() / ".cache" / "rheostat")


def cache_dir() -> Path:
    return cache_root() / "control-plane" / f"{K8S_VERSION}-etcd{ETCD_VERSION}"


def go_available() -> bool:
    return shutil.which("go") is not None or Path("/usr/local/go/bin/go").exists()


def _complete(folder: Path) -> bool:
    return all(os.access(folder / name, os.X_OK) for name in CONTROL_PLANE)


def find_binaries() -> Binaries:
    """Locate the binaries or raise :class:`BinariesMissingError` with a one-line reason."""
    candidates = []
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        candidates.append(Path(assets))
    candidates.append(cache_dir())
    folder = next((c for c in candidates if _complete(c)), None)
    if folder is None:
        if not go_available():
            reason = "no Go toolchain to build the control plane and no KUBEBUILDER_ASSETS"
        else:
            reason = f"control plane not built in {cache_dir()}; run `make control-plane`"
        raise BinariesMissingError(reason)
    # Debian's prometheus lacks kubernetes_sd_configs; the build script makes one that has it.
    prometheus = cache_dir() / "prometheus"
    if not os.access(prometheus, os.X_OK):
        raise BinariesMissingError(f"{prometheus} not built; run `make control-plane`")
    return Binaries(
        etcd=folder / "etcd",
        kube_apiserver=folder / "kube-apiserver",
        kube_controller_manager=folder / "kube-controller-manager",
        kube_scheduler=folder / "kube-scheduler",
        prometheus=prometheus,
        bin_dir=cache_dir(),
    )


def tool_path() -> str:
    """PATH for tests and pods: the venv's bin first, then the cache (helm), then the rest."""
    venv_bin = Path(sys.executable).parent  # the interpreter running the tests
    parts = [str(venv_bin), str(cache_dir())]
    parts += [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p not in parts]
    return os.pathsep.join(parts)
