"""Real Kueue next to the test cluster: started outside it with a kubeconfig.

Built by ``hack/build-kueue.sh`` (``make kueue``) into the cache with the CRDs and
webhook manifests of the same module version. Started the way
``../shared/reference/kueue.md`` found working, traps included:

- one CA and a serving certificate for 127.0.0.1 (the webhook server), also placed
  at the fixed ``/etc/kueue/metrics/certs`` path the manager insists on, inside a
  private mount namespace over an overlay of /etc, so the host stays clean;
- the CRDs applied server-side (the Workload CRD is too big for client-side apply)
  and Established before the manager starts (else it exits 1);
- ``--feature-gates=VisibilityOnDemand=false`` (else it exits wanting another fixed
  certificate path);
- the batch Job and ``kueue.x-k8s.io`` webhooks registered by ``url`` with a
  namespaceSelector on :data:`NAMESPACE_LABEL`, so that Kueue only ever sees the
  namespaces a test labels, and a stopped Kueue blocks nothing. They are deleted
  before the manager stops.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.binaries import BinariesMissingError, cache_root, go_available
from tests.cluster.procs import ManagedProcess, free_port
from tests.cluster.real_node import Pki

KUEUE_VERSION = os.environ.get("RHEOSTAT_KUEUE_VERSION", "v0.17.0")
# Only namespaces with this label reach Kueue's webhooks.
NAMESPACE_LABEL = "rheostat.dev/kueue-test"
WEBHOOK_PREFIX = "rheostat-test-kueue"


def kueue_dir() -> Path:
    return cache_root() / "kueue" / KUEUE_VERSION


def find_kueue() -> Path:
    """The cached Kueue folder (binary, crd/, webhook/) or BinariesMissingError saying why."""
    folder = kueue_dir()
    if os.access(folder / "kueue", os.X_OK) and (folder / "webhook" / "manifests.yaml").exists():
        return folder
    if not go_available():
        raise BinariesMissingError("no Go toolchain to build Kueue")
    raise BinariesMissingError(f"Kueue not built in {folder}; run `make kueue`")


def _kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


API_VERSION = "kueue.x-k8s.io/v1beta2"
FLAVOR = {
    "apiVersion": API_VERSION,
    "kind": "ResourceFlavor",
    "metadata": {"name": "default-flavor"},
}


def apply_objects(kubeconfig: Path, *documents: dict[str, Any]) -> None:
    """`kubectl apply` Kueue's objects (queues, flavors, priority classes)."""
    _kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(documents))


def quota_objects(
    cluster_queue: str,
    local_queue: str,
    namespace: str,
    gpus: int,
    preemption: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """A ClusterQueue of `gpus` nvidia.com/gpu (cpu and memory ample) on FLAVOR, and the
    namespace's LocalQueue feeding it."""
    spec: dict[str, Any] = {
        "namespaceSelector": {},
        "resourceGroups": [
            {
                "coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
                "flavors": [
                    {
                        "name": "default-flavor",
                        "resources": [
                            {"name": "cpu", "nominalQuota": "64"},
                            {"name": "memory", "nominalQuota": "256Gi"},
                            {"name": "nvidia.com/gpu", "nominalQuota": str(gpus)},
                        ],
                    }
                ],
            }
        ],
    }
    if preemption is not None:
        spec["preemption"] = preemption
    return [
        {
            "apiVersion": API_VERSION,
            "kind": "ClusterQueue",
            "metadata": {"name": cluster_queue},
            "spec": spec,
        },
        {
            "apiVersion": API_VERSION,
            "kind": "LocalQueue",
            "metadata": {"name": local_queue, "namespace": namespace},
            "spec": {"clusterQueue": cluster_queue},
        },
    ]


def _serving(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait(check: Any, timeout: float, what: str, process: ManagedProcess) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        process.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kueue: timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


@dataclass
class Kueue:
    """One Kueue manager for a cluster; `start`, label namespaces, `stop`."""

    kubeconfig: Path
    state_dir: Path
    folder: Path = field(default_factory=find_kueue)
    process: ManagedProcess | None = None
    webhook_port: int = field(default_factory=free_port)

    def start(self, timeout: float = 90.0) -> None:
        started = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        certs = self._certificates()
        _kubectl(
            self.kubeconfig,
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            str(self.folder / "crd"),
        )
        _kubectl(
            self.kubeconfig,
            "wait",
            "--for=condition=Established",
            f"--timeout={int(timeout)}s",
            "-f",
            str(self.folder / "crd"),
        )
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kueue-system"}}
        _kubectl(self.kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump(namespace))
        health = free_port()
        config = self.state_dir / "config.yaml"
        config.write_text(yaml.safe_dump(self._configuration(certs, health)))
        self.process = ManagedProcess(
            "kueue", self._argv(certs, config), self.state_dir / "kueue.log"
        )
        self.process.start()
        process = self.process
        _wait(lambda: _serving(health), timeout, "its health probe", process)
        _wait(lambda: _serving(self.webhook_port), timeout, "its webhook server", process)
        self._register_webhooks(certs / "ca.crt")
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        """Webhooks first: a Job create must never wait on a Kueue that is gone."""
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            _kubectl(self.kubeconfig, "delete", kind, f"{WEBHOOK_PREFIX}", "--ignore-not-found")
        if self.process is not None:
            self.process.stop()

    # ----- the pieces -----------------------------------------------------------------

    def _certificates(self) -> Path:
        pki = Pki(self.state_dir / "pki")
        pki.create_ca()
        crt, key = pki.issue("kueue-webhook", "/CN=kueue-webhook", server_ip="127.0.0.1")
        certs = self.state_dir / "certs"
        certs.mkdir(exist_ok=True)
        shutil.copy(crt, certs / "tls.crt")
        shutil.copy(key, certs / "tls.key")
        shutil.copy(pki.ca_crt, certs / "ca.crt")
        return certs

    def _configuration(self, certs: Path, health: int) -> dict[str, Any]:
        return {
            "apiVersion": "config.kueue.x-k8s.io/v1beta2",
            "kind": "Configuration",
            "namespace": "kueue-system",
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            "webhook": {"host": "127.0.0.1", "port": self.webhook_port, "certDir": str(certs)},
            "metrics": {"bindAddress": "127.0.0.1:0"},
            "health": {"healthProbeBindAddress": f"127.0.0.1:{health}"},
            "integrations": {"frameworks": ["batch/job"]},
            "visibilityServer": {"bindAddress": "127.0.0.1", "bindPort": free_port()},
        }

    def _argv(self, certs: Path, config: Path) -> list[str]:
        """The manager in a private mount namespace where /etc/kueue/metrics/certs exists."""
        overlay = self.state_dir / "etc-overlay"
        upper, work = overlay / "upper", overlay / "work"
        upper.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        script = (
            f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc"
            " && mkdir -p /etc/kueue/metrics/certs"
            f" && cp {certs}/tls.crt {certs}/tls.key /etc/kueue/metrics/certs/"
            f' && exec "$0" --config={config} --kubeconfig={self.kubeconfig}'
            " --feature-gates=VisibilityOnDemand=false"
        )
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            str(self.folder / "kueue"),
        ]

    def _register_webhooks(self, ca: Path) -> None:
        """The shipped webhooks for Jobs and Kueue's own kinds, by url, test namespaces only."""
        bundle = base64.b64encode(ca.read_bytes()).decode()
        documents = list(
            yaml.safe_load_all((self.folder / "webhook" / "manifests.yaml").read_text())
        )
        for document in documents:
            if not document:
                continue
            kept = []
            for hook in document.get("webhooks") or []:
                groups = {g for rule in hook.get("rules") or [] for g in rule.get("apiGroups", [])}
                resources = {
                    r for rule in hook.get("rules") or [] for r in rule.get("resources", [])
                }
                if not ("kueue.x-k8s.io" in groups or ("batch" in groups and "jobs" in resources)):
                    continue
                path = hook["clientConfig"]["service"]["path"]
                hook["clientConfig"] = {
                    "url": f"https://127.0.0.1:{self.webhook_port}{path}",
                    "caBundle": bundle,
                }
                hook["namespaceSelector"] = {"matchLabels": {NAMESPACE_LABEL: "true"}}
                kept.append(hook)
            document["webhooks"] = kept
            document["metadata"] = {"name": WEBHOOK_PREFIX}
            _kubectl(self.kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump(document))
