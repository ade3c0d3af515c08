"""One REAL node for the test cluster: containerd + runc + a CNI bridge + kubelet + kube-proxy.

The process node agent runs pods as local processes and ignores ``image``; this node
runs the project's images as containers, the way users run them, so the Helm chart,
the operator image and the trainer image are exercised for real
(docs/test-cluster.md). The recipe and its traps are in the shared reference
``real-node.md``; the choices that matter:

- A host bridge (``rheostat0``, 10.213.0.1/16) is the node IP: the kubelet refuses a
  loopback node IP and the kernel has no ``dummy`` driver. The API server binds and
  advertises that address, so pods reach it through the ``kubernetes`` Service.
- containerd has its own socket, state folder (per cluster) and root folder (in the
  cache, so the multi-GB images are imported once, not per test run).
- ``restrict_oom_score_adj``: CAP_SYS_RESOURCE is not in this machine's bounding set.
- The kubelet runs with the cgroupfs driver under a cgroup root of its own, and
  kube-proxy in nftables mode with conntrack settings that leave host sysctls alone.
- Every host side effect (bridge, cgroups, nft tables, iptables chains, fixed
  folders, sysctls) is recorded in ``real-node.json`` before it happens, so
  :func:`cleanup_host` can undo it even from another process (``make cluster-down``)
  or after a crash.

One real node per machine: the kubelet's device-plugin folder is a fixed path.
Needs root (mounts, network namespaces, nftables, cgroup v1 writes).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import tarfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.binaries import cache_dir, cache_root
from tests.cluster.controlplane import ApiEndpoint, wait_until
from tests.cluster.procs import ManagedProcess, free_port

NODE_NAME = "rheostat-real-0"
NODE_LABEL = ("rheostat.dev/test-node", "real")
BRIDGE = "rheostat0"
# Not 10.88.0.0/16: that is podman's and buildah's default CNI network (cni-podman0),
# and a second route for the same subnet silently sends the replies to pods there.
BRIDGE_IP = "10.213.0.1"
POD_CIDR = "10.213.0.0/16"
CGROUP_ROOT = "rheostat-real"
CGROUP_FS = Path("/sys/fs/cgroup")
RECORD = "real-node.json"
# Images the harness loads into the node (hack/build-images.sh exports them).
IMAGES = ("pause", "operator", "trainer", "gp-worker", "curl")
PAUSE_IMAGE = "localhost/rheostat/pause:dev"
# Paths the kubelet and containerd hard-code, whatever their configuration says.
FIXED_PATHS = (
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/var/run/netns",
    "/var/lib/cni",
    "/run/containerd",
)
# Sysctls the kubelet (protectKernelDefaults: false), the bridge plugin and
# kube-proxy may change; recorded before, restored after.
SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "net.netfilter.nf_conntrack_max",
)
NFT_TABLES = (("ip", "kube-proxy"), ("ip6", "kube-proxy"))
IPTABLES_CHAINS = ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT")
HOST_TOOLS = ("containerd", "ctr", "runc", "ip", "nft", "openssl")


class RealNodeUnavailableError(RuntimeError):
    """This machine cannot run the real node; the message says what is missing."""


def images_dir() -> Path:
    """The OCI layout folder hack/build-images.sh exports every image into."""
    return cache_root() / "images" / "layout"


def containerd_root() -> Path:
    """containerd's content and snapshots: kept across runs so images import once."""
    return cache_root() / "real-node" / "containerd"


def check_available() -> None:
    """Raise :class:`RealNodeUnavailableError` unless everything the node needs is here."""
    if os.geteuid() != 0:
        raise RealNodeUnavailableError("the real node needs root")
    missing = [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
    if missing:
        raise RealNodeUnavailableError(
            f"{', '.join(missing)} missing; run `make test-deps` (hack/install-test-deps.sh)"
        )
    for name in ("kubelet", "kube-proxy", "pause", "coredns"):
        if not os.access(cache_dir() / name, os.X_OK):
            raise RealNodeUnavailableError(f"{name} not built; run `make control-plane`")
    index = images_dir() / "index.json"
    if not index.exists():
        raise RealNodeUnavailableError("images not built; run `make images`")
    for name in IMAGES:
        _layout_manifest(json.loads(index.read_text()), name)
    overlapping = _run(["ip", "-o", "route", "show", "root", POD_CIDR], check=False).stdout
    if overlapping.strip():
        raise RealNodeUnavailableError(f"{POD_CIDR} is routed already: {overlapping.strip()}")
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        raise RealNodeUnavailableError(
            f"bridge {BRIDGE} exists: another real node runs here (one per machine), "
            "or a dead one was not cleaned up (`make cluster-down`)"
        )


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def _read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return None


def _iptables_chains(tool: str) -> dict[str, list[str]]:
    """Chains per table for one of iptables/ip6tables (empty if the tool is missing)."""
    chains: dict[str, list[str]] = {}
    if shutil.which(tool) is None:
        return chains
    for table in ("filter", "nat", "mangle"):
        out = _run([tool, "-w", "-t", table, "-S"], check=False).stdout
        chains[table] = [line.split()[1] for line in out.splitlines() if line.startswith("-N ")]
    return chains


def _nft_tables() -> list[str]:
    out = _run(["nft", "list", "tables"], check=False).stdout
    return [line.removeprefix("table ").strip() for line in out.splitlines()]


@dataclass
class HostRecord:
    """What the host looked like before the node touched it; saved as real-node.json."""

    state_dir: str
    sysctls: dict[str, str] = field(default_factory=dict)
    existing_paths: list[str] = field(default_factory=list)
    existing_netns: list[str] = field(default_factory=list)
    nft_tables: list[str] = field(default_factory=list)
    iptables: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    containerd_address: str = ""

    @classmethod
    def capture(cls, state_dir: Path, containerd_address: str) -> HostRecord:
        netns = Path("/var/run/netns")
        return cls(
            state_dir=str(state_dir),
            sysctls={n: v for n in SYSCTLS if (v := _read_sysctl(n)) is not None},
            existing_paths=[p for p in FIXED_PATHS if Path(p).exists()],
            existing_netns=sorted(p.name for p in netns.iterdir()) if netns.is_dir() else [],
            nft_tables=_nft_tables(),
            iptables={tool: _iptables_chains(tool) for tool in ("iptables", "ip6tables")},
            containerd_address=containerd_address,
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> HostRecord:
        data: dict[str, Any] = json.loads(path.read_text())
        return cls(**data)


class Pki:
    """A cluster CA and the client/serving certificates of the node's components.

    The kubelet authenticates as ``system:node:<name>`` (Node authorizer,
    NodeRestriction), kube-proxy as ``system:kube-proxy`` (bound to
    ``system:node-proxier`` by default), and the API server to the kubelet with a
    ``system:masters`` client certificate (logs, exec, port-forward).
    """

    def __init__(self, folder: Path) -> None:
        self.dir = folder
        self.ca_crt = folder / "ca.crt"
        self.ca_key = folder / "ca.key"

    def create_ca(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _run(
            [
                "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30",
                "-subj", "/CN=rheostat-test-ca", "-keyout", str(self.ca_key),
                "-out", str(self.ca_crt),
            ]
        )  # fmt: skip

    def issue(self, name: str, subject: str, *, server_ip: str | None = None) -> tuple[Path, Path]:
        """A certificate signed by the CA: (cert, key)."""
        key, csr, crt = (self.dir / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
        _run(
            [
                "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-subj", subject,
                "-keyout", str(key), "-out", str(csr),
            ]
        )  # fmt: skip
        ext = self.dir / f"{name}.ext"
        usage = "serverAuth" if server_ip else "clientAuth"
        lines = [f"extendedKeyUsage={usage}", "keyUsage=critical,digitalSignature"]
        if server_ip:
            lines.append(f"subjectAltName=IP:{server_ip},DNS:{NODE_NAME}")
        ext.write_text("\n".join(lines) + "\n")
        _run(
            [
                "openssl", "x509", "-req", "-in", str(csr), "-CA", str(self.ca_crt),
                "-CAkey", str(self.ca_key), "-CAcreateserial", "-days", "30",
                "-extfile", str(ext), "-out", str(crt),
            ]
        )  # fmt: skip
        return crt, key


def apiserver_args(pki: Pki) -> list[str]:
    """What the API server needs for a kubelet: client CA, kubelet client cert, Node authz."""
    crt, key = pki.issue("apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver")
    return [
        f"--client-ca-file={pki.ca_crt}",
        f"--kubelet-client-certificate={crt}",
        f"--kubelet-client-key={key}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        # The node's name resolves nowhere; its InternalIP is the bridge address.
        "--kubelet-preferred-address-types=InternalIP",
    ]


def create_bridge() -> None:
    """The node IP: a host bridge with BRIDGE_IP/16 (the CNI bridge plugin reuses it)."""
    _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    _run(["ip", "addr", "add", f"{BRIDGE_IP}/16", "dev", BRIDGE])
    _run(["ip", "link", "set", BRIDGE, "up"])


def prepare_host(state_dir: Path) -> HostRecord:
    """Record the host's state, then create the bridge (before the API server binds it)."""
    check_available()
    state_dir.mkdir(parents=True, exist_ok=True)
    address = str(state_dir / "containerd" / "containerd.sock")
    record = HostRecord.capture(state_dir, address)
    record.save(state_dir / RECORD)
    create_bridge()
    return record


def _kubeconfig(path: Path, endpoint: ApiEndpoint, crt: Path, key: Path, user: str) -> Path:
    """A kubeconfig that authenticates with a client certificate (NodeRestriction needs one)."""
    cluster = {"server": endpoint.server, "certificate-authority": str(endpoint.ca_file)}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": user, "user": {"client-certificate": str(crt), "client-key": str(key)}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": user}}],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


class RealNode:
    """containerd, CoreDNS, kubelet and kube-proxy of :data:`NODE_NAME` (module docstring)."""

    def __init__(self, state_dir: Path, pki: Pki, die_with_parent: bool, gpus: int) -> None:
        self.dir = state_dir / "real-node"
        self.state_dir = state_dir
        self.pki = pki
        self.die_with_parent = die_with_parent
        self.gpus = gpus
        self.processes: list[ManagedProcess] = []
        self.address = str(state_dir / "containerd" / "containerd.sock")

    def _spawn(self, name: str, argv: list[str]) -> ManagedProcess:
        proc = ManagedProcess(
            name,
            argv,
            self.state_dir / "logs" / f"{name}.log",
            die_with_parent=self.die_with_parent,
        )
        proc.start()
        self.processes.append(proc)
        return proc

    def _alive(self) -> None:
        for proc in self.processes:
            proc.check_alive()

    def start(self, endpoint: ApiEndpoint, timeout: float = 120.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._create_cgroups()
        self._start_containerd(timeout)
        self.import_images()
        self._start_coredns(timeout)
        self._start_kubelet(endpoint, timeout)
        self._start_kube_proxy(endpoint)

    # containerd.
    def _start_containerd(self, timeout: float) -> None:
        state = self.state_dir / "containerd"
        cni_conf = self.dir / "cni"
        cni_conf.mkdir(parents=True, exist_ok=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": "rheostat",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR, "gateway": BRIDGE_IP}]],
                        # Without it pods have no route to ClusterIPs (10.0.0.0/24).
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.dir / "ipam"),
                    },
                }
            ],
        }
        (cni_conf / "10-rheostat.conflist").write_text(json.dumps(conflist, indent=2))
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""version = 2
root = "{containerd_root()}"
state = "{state}"
[grpc]
  address = "{self.address}"
[ttrpc]
  address = "{self.address}.ttrpc"
[metrics]
  address = ""
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  enable_selinux = false
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  BinaryName = "{shutil.which("runc")}"
[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{cni_conf}"
"""
        path = self.dir / "containerd.toml"
        path.write_text(config)
        containerd_root().mkdir(parents=True, exist_ok=True)
        self._spawn("containerd", ["containerd", "--config", str(path), "--log-level", "warn"])

        def up() -> bool:
            return self.ctr("version", check=False).returncode == 0

        wait_until("containerd", up, timeout, self._alive)

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(["ctr", "--address", self.address, "--namespace", "k8s.io", *args], check)

    def import_images(self) -> dict[str, float]:
        """Import each image unless containerd already has its manifest.

        The tar stream handed to ``ctr images import`` is built here from the OCI
        layout and carries only the blobs containerd lacks: the torch layer is
        gigabytes and shared by both images, so it is imported once, ever (the
        containerd root is kept in the cache). Returns the seconds per image (0 when
        it was already there) and writes them to ``image-imports.json``.
        """
        layout = images_dir()
        index = json.loads((layout / "index.json").read_text())
        took: dict[str, float] = {}
        for name in IMAGES:
            ref = f"localhost/rheostat/{name}:dev"
            desc = _layout_manifest(index, name)
            present_images = self.ctr("images", "list").stdout.splitlines()
            if any(line.split()[:3:2] == [ref, desc["digest"]] for line in present_images):
                took[name] = 0.0
                continue
            have = set(self.ctr("content", "list", "--quiet").stdout.split())
            started = time.monotonic()
            _import_stream(layout, desc, ref, have, self.address)
            took[name] = round(time.monotonic() - started, 1)
        (self.dir / "image-imports.json").write_text(json.dumps(took, indent=2) + "\n")
        return took

    # Cluster DNS.
    def _start_coredns(self, timeout: float) -> None:
        """CoreDNS on the node IP, port 53, as a host process: pods' resolv.conf points
        at it (kubelet ``clusterDNS``), so Service names such as the chart's
        ``<release>-metrics.<namespace>.svc`` resolve. Other names go to the host's
        resolver."""
        corefile = self.dir / "Corefile"
        kubeconfig = self.state_dir / "kubeconfig"
        corefile.write_text(
            f""".:53 {{
    bind {BRIDGE_IP}
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} rheostat-test
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    forward . /etc/resolv.conf
    cache 5
}}
"""
        )
        proc = self._spawn("coredns", [str(cache_dir() / "coredns"), "-conf", str(corefile)])

        def serving() -> bool:
            return "CoreDNS-" in proc.log_path.read_text(errors="replace")

        wait_until("coredns", serving, timeout, self._alive)

    # kubelet.
    def _create_cgroups(self) -> None:
        for hierarchy in _cgroup_hierarchies():
            (hierarchy / CGROUP_ROOT).mkdir(exist_ok=True)

    def _start_kubelet(self, endpoint: ApiEndpoint, timeout: float) -> None:
        crt, key = self.pki.issue("kubelet-client", f"/O=system:nodes/CN=system:node:{NODE_NAME}")
        kubeconfig = _kubeconfig(self.dir / "kubelet.kubeconfig", endpoint, crt, key, "kubelet")
        serving_crt, serving_key = self.pki.issue(
            "kubelet-serving", f"/CN={NODE_NAME}", server_ip=BRIDGE_IP
        )
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": BRIDGE_IP,
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "authentication": {
                "x509": {"clientCAFile": str(self.pki.ca_crt)},
                "webhook": {"enabled": True},
                "anonymous": {"enabled": False},
            },
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(serving_crt),
            "tlsPrivateKeyFile": str(serving_key),
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{CGROUP_ROOT}",
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.address}",
            "podLogsDirectory": str(self.dir / "pod-logs"),
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "makeIPTablesUtilChains": False,
            "serializeImagePulls": False,
            "clusterDomain": "cluster.local",
            "clusterDNS": [BRIDGE_IP],
            "maxPods": 110,
            "nodeStatusUpdateFrequency": "4s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "20s",
        }
        path = self.dir / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        label = "=".join(NODE_LABEL)
        self._spawn(
            "kubelet",
            [
                str(cache_dir() / "kubelet"),
                f"--config={path}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.dir / 'kubelet'}",
                f"--cert-dir={self.dir / 'kubelet' / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={BRIDGE_IP}",
                f"--node-labels={label}",
                "--v=1",
            ],
        )

        def ready() -> bool:
            status, body = endpoint.get(f"/api/v1/nodes/{NODE_NAME}")
            if status != 200:
                return False
            conditions = json.loads(body).get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        wait_until("kubelet (node Ready)", ready, timeout, self._alive)
        self._patch_gpus(endpoint)

    def _patch_gpus(self, endpoint: ApiEndpoint) -> None:
        """Advertise fake ``nvidia.com/gpu`` capacity, as a device plugin would."""
        if self.gpus <= 0:
            return
        body = json.dumps(
            [
                {
                    "op": "add",
                    "path": "/status/capacity/nvidia.com~1gpu",
                    "value": str(self.gpus),
                },
                {
                    "op": "add",
                    "path": "/status/allocatable/nvidia.com~1gpu",
                    "value": str(self.gpus),
                },
            ]
        )
        request = urllib.request.Request(
            f"{endpoint.server}/api/v1/nodes/{NODE_NAME}/status",
            data=body.encode(),
            method="PATCH",
            headers={
                "Authorization": f"Bearer {endpoint.token}",
                "Content-Type": "application/json-patch+json",
            },
        )
        with urllib.request.urlopen(request, timeout=10, context=endpoint.ssl_context()) as r:
            r.read()

    # kube-proxy.
    def _start_kube_proxy(self, endpoint: ApiEndpoint) -> None:
        crt, key = self.pki.issue("kube-proxy", "/CN=system:kube-proxy")
        kubeconfig = _kubeconfig(
            self.dir / "kube-proxy.kubeconfig",
            endpoint,
            crt,
            key,
            "kube-proxy",
        )
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "mode": "nftables",
            "hostnameOverride": NODE_NAME,
            "bindAddress": BRIDGE_IP,
            "clusterCIDR": POD_CIDR,
            "nodePortAddresses": [f"{BRIDGE_IP}/32"],
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            # Zero: kube-proxy leaves the host's conntrack sysctls alone.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        path = self.dir / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self._spawn("kube-proxy", [str(cache_dir() / "kube-proxy"), f"--config={path}", "--v=1"])

    # Stopping.
    def stop(self) -> None:
        """Stop kube-proxy and the kubelet, then every container, then containerd."""
        for proc in reversed(self.processes):
            if proc.name != "containerd":
                proc.stop(grace=10.0)
        remove_containers(self.address)
        for proc in self.processes:
            if proc.name == "containerd":
                proc.stop(grace=10.0)
        self.processes.clear()


def _layout_manifest(index: dict[str, Any], name: str) -> dict[str, Any]:
    """The descriptor hack/build-images.sh pushed as ``oci:<layout>:<name>``."""
    for desc in index["manifests"]:
        if desc.get("annotations", {}).get("org.opencontainers.image.ref.name") == name:
            return dict(desc)
    raise RealNodeUnavailableError(f"image {name} is not in {images_dir()}; run `make images`")


def _import_stream(
    layout: Path, desc: dict[str, Any], ref: str, have: set[str], address: str
) -> None:
    """Pipe an OCI archive of one image, minus the blobs in ``have``, into ``ctr import``."""
    blobs = layout / "blobs" / "sha256"
    manifest = json.loads((blobs / desc["digest"].split(":")[1]).read_text())
    digests = [desc["digest"], manifest["config"]["digest"]]
    digests += [layer["digest"] for layer in manifest["layers"] if layer["digest"] not in have]
    annotations = {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": "dev"}
    index = {"schemaVersion": 2, "manifests": [{**desc, "annotations": annotations}]}
    argv = ["ctr", "--address", address, "--namespace", "k8s.io", "images", "import", "-"]
    with subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdin is not None
        with tarfile.open(fileobj=proc.stdin, mode="w|") as tar:
            for arcname, data in (
                ("oci-layout", (layout / "oci-layout").read_bytes()),
                ("index.json", json.dumps(index).encode()),
            ):
                info = tarfile.TarInfo(arcname)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            for digest in dict.fromkeys(digests):
                tar.add(blobs / digest.split(":")[1], arcname=f"blobs/sha256/{digest[7:]}")
        proc.stdin.close()
        error = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.wait() != 0:
            raise RuntimeError(f"ctr images import {ref} failed: {error}")


def _cgroup_hierarchies() -> list[Path]:
    """Every cgroup hierarchy: the v1 ones and, in the hybrid layout, the cgroup2 mount
    (the kubelet makes its cgroup root there too)."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[2] in ("cgroup", "cgroup2"):
            found.append(Path(parts[1]))
    return found


def remove_containers(address: str) -> None:
    """Kill and delete every container and sandbox of this node's containerd.

    containerd's shims outlive containerd itself, so containers must go before it
    stops; deleting a sandbox's container also releases its network namespace.
    """
    if not Path(address).exists():
        return
    base = ["ctr", "--address", address, "--namespace", "k8s.io"]
    with contextlib.suppress(subprocess.TimeoutExpired):
        ids = subprocess.run(
            [*base, "containers", "list", "--quiet"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        ).stdout.split()
        for cid in ids:
            subprocess.run(
                [*base, "tasks", "kill", "--signal", "SIGKILL", "--all", cid],
                capture_output=True,
                timeout=20,
                check=False,
            )
        deadline = time.monotonic() + 10
        for cid in ids:
            while time.monotonic() < deadline:
                done = subprocess.run(
                    [*base, "tasks", "delete", cid], capture_output=True, timeout=20, check=False
                )
                if done.returncode == 0 or b"not found" in done.stderr:
                    break
                time.sleep(0.2)
            subprocess.run(
                [*base, "containers", "delete", cid], capture_output=True, timeout=20, check=False
            )


def _kill_shims(address: str) -> None:
    """SIGKILL containerd shims started for this node (their command line names its socket)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            cmdline
            and cmdline[0].endswith(b"containerd-shim-runc-v2")
            and address.encode() in (b" ".join(cmdline))
        ):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)


def _unmount_under(*roots: str) -> None:
    """Lazily unmount every mount point below these folders, deepest first."""
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].encode().decode("unicode_escape")
        if any(point == r or point.startswith(r.rstrip("/") + "/") for r in roots):
            points.append(point)
    for point in sorted(points, key=len, reverse=True):
        _run(["umount", "-l", point], check=False)


def _remove_cgroup_tree(folder: Path) -> None:
    if not folder.is_dir():
        return
    for child in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            child.rmdir()
    with contextlib.suppress(OSError):
        folder.rmdir()


def cleanup_host(state_dir: Path) -> bool:
    """Undo every host side effect recorded in ``state_dir``; False if nothing was recorded.

    Safe to call more than once and from another process: it works from
    real-node.json, not from memory. Processes must be stopped first.
    """
    path = state_dir / RECORD
    if not path.exists():
        return False
    record = HostRecord.load(path)
    if record.containerd_address:
        _kill_shims(record.containerd_address)
    _unmount_under(str(state_dir), str(containerd_root()), "/run/containerd")
    # Network namespaces the CRI plugin made (their veths go with them).
    netns = Path("/var/run/netns")
    if netns.is_dir():
        for ns in netns.glob("cni-*"):
            if ns.name not in record.existing_netns:
                _run(["umount", "-l", str(ns)], check=False)
                with contextlib.suppress(OSError):
                    ns.unlink()
    _run(["ip", "link", "delete", BRIDGE], check=False)
    for family, table in NFT_TABLES:
        if f"{family} {table}" not in record.nft_tables:
            _run(["nft", "delete", "table", family, table], check=False)
    for tool, tables in record.iptables.items():
        now = _iptables_chains(tool)
        for table, chains in now.items():
            for chain in chains:
                if chain in tables.get(table, []) or not chain.startswith("KUBE-"):
                    continue
                _delete_iptables_chain(tool, table, chain)
    for hierarchy in _cgroup_hierarchies():
        _remove_cgroup_tree(hierarchy / CGROUP_ROOT)
    for name, value in record.sysctls.items():
        if _read_sysctl(name) != value:
            with contextlib.suppress(OSError):
                Path("/proc/sys", *name.split(".")).write_text(value)
    # libcni's cache: per-sandbox results of our network (named "rheostat").
    results = Path("/var/lib/cni/results")
    for result in results.glob("rheostat-*") if results.is_dir() else []:
        sandbox = result.name.removeprefix("rheostat-").removesuffix("-eth0")
        for stale in (result, results / f"cni-loopback-{sandbox}-lo"):
            with contextlib.suppress(OSError):
                stale.unlink()
    for fixed in FIXED_PATHS:
        if fixed not in record.existing_paths:
            _unmount_under(fixed)
            shutil.rmtree(fixed, ignore_errors=True)
    # Folders of the kubelet may hold read-only or mounted entries (projected volumes).
    _unmount_under(str(state_dir / "real-node"))
    path.unlink()
    return True


def _delete_iptables_chain(tool: str, table: str, chain: str) -> None:
    """Delete the jumps to ``chain``, then flush and delete it."""
    rules = _run([tool, "-w", "-t", table, "-S"], check=False).stdout.splitlines()
    for rule in rules:
        parts = shlex.split(rule)
        if parts[:1] == ["-A"] and f"-j {chain}" in rule and parts[1] != chain:
            _run([tool, "-w", "-t", table, "-D", *parts[1:]], check=False)
    _run([tool, "-w", "-t", table, "-F", chain], check=False)
    _run([tool, "-w", "-t", table, "-X", chain], check=False)
