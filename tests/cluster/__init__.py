"""A real Kubernetes control plane on loopback for the integration tests.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler built from their Go
modules (``hack/build-control-plane.sh``), a test-only node agent that runs pods as
local processes, and a real Prometheus that scrapes them. See docs/test-cluster.md.
"""

from tests.cluster.binaries import BinariesMissingError, find_binaries
from tests.cluster.harness import ClusterInfo, LocalCluster, existing_cluster

__all__ = [
    "BinariesMissingError",
    "ClusterInfo",
    "LocalCluster",
    "existing_cluster",
    "find_binaries",
]
