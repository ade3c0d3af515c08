"""etcd, kube-apiserver, kube-controller-manager and kube-scheduler on loopback.

The flag set follows controller-runtime's envtest, plus what envtest leaves out and
our tests need: RBAC with a static admin token (so a ServiceAccount token really has
only its own rights), a service-account signing key (TokenRequest), and the
controller-manager and scheduler (Jobs, garbage collection, namespace deletion,
scheduling with the scheduler's real reasons).
"""

from __future__ import annotations

import json
import secrets
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.cluster.binaries import Binaries
from tests.cluster.procs import ManagedProcess, free_port

SERVICE_CIDR = "10.0.0.0/24"


class NotReadyError(TimeoutError):
    """A component did not become ready before its deadline."""


def wait_until(
    what: str, check: Callable[[], bool], timeout: float, alive: Callable[[], None]
) -> None:
    """Poll ``check`` until true; ``alive`` raises if a component died meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive()
        try:
            if check():
                return
        except (OSError, urllib.error.URLError, ValueError):
            pass
        time.sleep(0.2)
    alive()
    raise NotReadyError(f"{what} not ready after {timeout:.0f}s")


@dataclass
class ApiEndpoint:
    """How to reach the apiserver as admin, from Python or a kubeconfig."""

    server: str
    ca_file: Path
    token: str
    token_file: Path

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        request = urllib.request.Request(
            self.server + path, headers={"Authorization": f"Bearer {self.token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self.ssl_context()) as r:
                return int(r.status), bytes(r.read())
        except urllib.error.HTTPError as err:
            with err:
                return int(err.code), bytes(err.read())

    def write_kubeconfig(self, path: Path) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "rheostat-test",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(self.ca_file),
                    },
                }
            ],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [
                {"name": "rheostat-test", "context": {"cluster": "rheostat-test", "user": "admin"}}
            ],
            "current-context": "rheostat-test",
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)


class ControlPlane:
    """Starts the four components in order and waits for each to be ready."""

    def __init__(
        self,
        binaries: Binaries,
        state_dir: Path,
        die_with_parent: bool,
        *,
        address: str = "127.0.0.1",
        apiserver_args: list[str] | None = None,
    ) -> None:
        """``address``: where the API server binds and what it advertises. Loopback
        unless a real node runs: its pods reach the API server through the
        ``kubernetes`` Service, whose endpoint is this address (a bridge IP).
        ``apiserver_args`` are appended (client CA, kubelet client certificate)."""
        self.binaries = binaries
        self.dir = state_dir
        self.die_with_parent = die_with_parent
        self.address = address
        self.apiserver_args = list(apiserver_args or [])
        self.processes: list[ManagedProcess] = []
        self.kubeconfig = state_dir / "kubeconfig"
        self.endpoint: ApiEndpoint | None = None

    def _spawn(self, name: str, argv: list[str]) -> ManagedProcess:
        proc = ManagedProcess(
            name, argv, self.dir / "logs" / f"{name}.log", die_with_parent=self.die_with_parent
        )
        proc.start()
        self.processes.append(proc)
        return proc

    def _alive(self) -> None:
        for proc in self.processes:
            proc.check_alive()

    def start(self, timeout: float = 90.0) -> ApiEndpoint:
        pki = self.dir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        sa_key = pki / "sa.key"
        subprocess.run(
            ["openssl", "genrsa", "-out", str(sa_key), "2048"], check=True, capture_output=True
        )
        token = secrets.token_hex(16)
        token_file = pki / "admin-token"
        token_file.write_text(token)
        (pki / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')

        etcd_url = self._start_etcd(timeout)
        endpoint = self._start_apiserver(etcd_url, sa_key, token, token_file, timeout)
        endpoint.write_kubeconfig(self.kubeconfig)
        self.endpoint = endpoint
        self._start_controller_manager(sa_key, endpoint, timeout)
        self._start_scheduler(timeout)
        return endpoint

    def _start_etcd(self, timeout: float) -> str:
        client, peer = free_port(), free_port()
        url = f"http://127.0.0.1:{client}"
        self._spawn(
            "etcd",
            [
                str(self.binaries.etcd),
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls={url}",
                f"--advertise-client-urls={url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=default=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                return bool(json.load(r).get("health") == "true")

        wait_until("etcd", healthy, timeout, self._alive)
        return url

    def _start_apiserver(
        self, etcd_url: str, sa_key: Path, token: str, token_file: Path, timeout: float
    ) -> ApiEndpoint:
        port = free_port()
        pki = self.dir / "pki"
        server = f"https://{self.address}:{port}"
        # --authorization-mode is a list flag: given twice it would repeat modes.
        authz = [a for a in self.apiserver_args if a.startswith("--authorization-mode=")]
        extra = [a for a in self.apiserver_args if a not in authz]
        self._spawn(
            "kube-apiserver",
            [
                str(self.binaries.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                f"--secure-port={port}",
                f"--cert-dir={pki}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--service-account-issuer={server}/",
                f"--service-account-key-file={sa_key}",
                f"--service-account-signing-key-file={sa_key}",
                *(authz or ["--authorization-mode=RBAC"]),
                f"--token-auth-file={pki / 'tokens.csv'}",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
                *extra,
            ],
        )
        endpoint = ApiEndpoint(server, pki / "apiserver.crt", token, token_file)

        def ready() -> bool:
            if not endpoint.ca_file.exists():
                return False
            status, _ = endpoint.get("/readyz")
            if status != 200:
                return False
            status, _ = endpoint.get("/api/v1/namespaces/default")
            return status == 200

        wait_until("kube-apiserver", ready, timeout, self._alive)
        return endpoint

    def _component_kubeconfig(self, name: str) -> Path:
        # Same admin credentials; a separate file only so each log names its own.
        path = self.dir / f"{name}.kubeconfig"
        path.write_text(self.kubeconfig.read_text())
        path.chmod(0o600)
        return path

    def _start_controller_manager(
        self, sa_key: Path, endpoint: ApiEndpoint, timeout: float
    ) -> None:
        kubeconfig = self._component_kubeconfig("kube-controller-manager")
        self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries.kube_controller_manager),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={self.dir / 'pki' / 'controller-manager'}",
                "--controllers=*",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={sa_key}",
                f"--root-ca-file={endpoint.ca_file}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--leader-elect=false",
                "--v=1",
            ],
        )

        def default_sa() -> bool:
            status, _ = endpoint.get("/api/v1/namespaces/default/serviceaccounts/default")
            return status == 200

        wait_until(
            "kube-controller-manager (default ServiceAccount)", default_sa, timeout, self._alive
        )

    def _start_scheduler(self, timeout: float) -> None:
        kubeconfig = self._component_kubeconfig("kube-scheduler")
        port = free_port()
        self._spawn(
            "kube-scheduler",
            [
                str(self.binaries.kube_scheduler),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                "--leader-elect=false",
                "--v=1",
            ],
        )
        # The scheduler serves /healthz to anyone over its self-signed TLS certificate.
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE

        def healthy() -> bool:
            url = f"https://127.0.0.1:{port}/healthz"
            with urllib.request.urlopen(url, timeout=2, context=insecure) as r:
                return bool(r.status == 200)

        wait_until("kube-scheduler", healthy, timeout, self._alive)

    def restart(self, name: str, timeout: float = 90.0) -> ManagedProcess:
        """Stop one component (SIGTERM, as a kubelet would) and start it again with the
        same flags, ports and data; return once it serves again. For chaos tests."""
        proc = next(p for p in self.processes if p.name == name)
        proc.stop()
        proc.start()
        if name == "etcd":
            url = next(a for a in proc.argv if a.startswith("--listen-client-urls="))
            health = url.split("=", 1)[1] + "/health"

            def serving() -> bool:
                with urllib.request.urlopen(health, timeout=2) as r:
                    return bool(json.load(r).get("health") == "true")

        else:
            assert self.endpoint is not None
            endpoint = self.endpoint

            def serving() -> bool:
                return endpoint.get("/readyz")[0] == 200

        wait_until(name, serving, timeout, self._alive)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()
