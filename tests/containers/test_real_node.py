"""The real node itself: registration, GPUs, and a trainer container run as a Job.

These are the behaviours the process node agent fakes: the image's own entrypoint
and filesystem, the kubelet's termination-message file, container logs through the
kubelet API, and in-cluster API access through the ``kubernetes`` Service.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from kubernetes import client

from tests.cluster.polling import wait_for
from tests.containers.conftest import (
    GPUS,
    NODE_NAME,
    OPERATOR_IMAGE,
    TRAINER_IMAGE,
    on_real_node,
    restricted_container,
)

WaitPod = Callable[[str, str, float], client.V1Pod]


def test_node_is_ready_with_gpus_and_label(admin_api: client.ApiClient) -> None:
    node = client.CoreV1Api(admin_api).read_node(NODE_NAME)
    assert node.metadata.labels["rheostat.dev/test-node"] == "real"
    assert node.status.capacity["nvidia.com/gpu"] == str(GPUS)
    assert node.status.allocatable["nvidia.com/gpu"] == str(GPUS)
    ready = [c for c in node.status.conditions if c.type == "Ready"]
    assert ready[0].status == "True"
    assert node.status.node_info.container_runtime_version.startswith("containerd://")


def test_trainer_job_runs_in_a_container(
    admin_api: client.ApiClient, namespace: str, wait_pod_done: WaitPod
) -> None:
    """The synthetic trainer from the trainer image, as a plain Job: its result comes
    back through the kubelet's termination message and its log through the kubelet."""
    batch = client.BatchV1Api(admin_api)
    core = client.CoreV1Api(admin_api)
    container = restricted_container(
        "trainer", TRAINER_IMAGE, ["python", "-m", "rheostat_trainer.examples.synthetic"]
    )
    container["env"] = [
        {"name": "RHEOSTAT_PARAMS", "value": json.dumps({"x": 0.5, "lr": 0.01})},
        {"name": "RHEOSTAT_MODE", "value": "trial"},
    ]
    container["resources"] = {"limits": {"nvidia.com/gpu": "1", "memory": "512Mi"}}
    job = {
        "metadata": {"name": "synthetic"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": on_real_node({"restartPolicy": "Never", "containers": [container]})
            },
        },
    }
    created = time.monotonic()
    batch.create_namespaced_job(namespace, job)

    def pod_name() -> str | None:
        pods = core.list_namespaced_pod(namespace, label_selector="job-name=synthetic").items
        return pods[0].metadata.name if pods else None

    name = wait_for(pod_name, 30, "the Job's pod")
    pod = wait_pod_done(namespace, name, 120)
    elapsed = time.monotonic() - created
    assert pod.spec.node_name == NODE_NAME
    assert pod.status.phase == "Succeeded", pod.status
    state = pod.status.container_statuses[0].state.terminated
    assert state.exit_code == 0
    result = json.loads(state.message)
    # (0.5 - 0.3)^2 + (log10(0.01) + 2)^2 = 0.04
    assert abs(result["metrics"]["loss"] - 0.04) < 1e-6, result
    log = core.read_namespaced_pod_log(name, namespace, container="trainer")
    assert log.strip(), "the kubelet returned an empty log"
    print(f"Job created -> pod Succeeded in {elapsed:.1f}s")


def test_pod_reaches_the_api_server_through_the_kubernetes_service(
    admin_api: client.ApiClient, namespace: str, wait_pod_done: WaitPod
) -> None:
    """In-cluster config: the ServiceAccount token volume, KUBERNETES_SERVICE_HOST and
    kube-proxy's ClusterIP rules, from the operator image with a read-only root FS."""
    core = client.CoreV1Api(admin_api)
    script = (
        "from kubernetes import client, config\n"
        "config.load_incluster_config()\n"
        "print(client.VersionApi().get_code().git_version)\n"
        # The operator image has no torch: GP asks go to the gp-worker sidecar.
        "import importlib.util\n"
        "print('torch', importlib.util.find_spec('torch') is not None)\n"
    )
    container = restricted_container("probe", OPERATOR_IMAGE, ["python", "-c", script])
    container["securityContext"]["readOnlyRootFilesystem"] = True  # type: ignore[index]
    container["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
    pod = {
        "metadata": {"name": "in-cluster"},
        "spec": on_real_node(
            {
                "restartPolicy": "Never",
                "containers": [container],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
            }
        ),
    }
    core.create_namespaced_pod(namespace, pod)
    done = wait_pod_done(namespace, "in-cluster", 120)
    log = core.read_namespaced_pod_log("in-cluster", namespace)
    assert done.status.phase == "Succeeded", log
    assert log.split() == ["v1.34.4", "torch", "False"], log


def test_pod_start_latency(admin_api: client.ApiClient, namespace: str) -> None:
    """Pod create -> Running and container exit -> Succeeded, ten pods one after another
    (printed for docs/test-cluster.md; bounds only catch a broken node)."""
    core = client.CoreV1Api(admin_api)
    to_running: list[float] = []
    to_succeeded: list[float] = []
    for i in range(10):
        name = f"lat-{i}"
        container = restricted_container(
            "c", TRAINER_IMAGE, ["python", "-c", "import time; time.sleep(2)"]
        )
        pod = {
            "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "containers": [container]},
        }
        created = time.monotonic()
        core.create_namespaced_pod(namespace, pod)

        def phase(wanted: str, pod_name: str = name) -> bool:
            return bool(core.read_namespaced_pod(pod_name, namespace).status.phase == wanted)

        wait_for(lambda n=name: phase("Running", n) or phase("Succeeded", n), 60, f"{name} Running")
        running_at = time.monotonic()
        wait_for(lambda n=name: phase("Succeeded", n), 60, f"{name} Succeeded")
        to_running.append(running_at - created)
        state = core.read_namespaced_pod(name, namespace).status.container_statuses[0]
        finished = state.state.terminated.finished_at.timestamp()
        to_succeeded.append(time.time() - finished)
    to_running.sort()
    print(
        f"create->Running median {to_running[5]:.2f}s max {to_running[-1]:.2f}s; "
        f"exit->observed Succeeded median {sorted(to_succeeded)[5]:.2f}s "
        f"max {max(to_succeeded):.2f}s"
    )
    assert to_running[-1] < 30


def test_memory_limit_is_enforced_as_oomkilled(
    admin_api: client.ApiClient, namespace: str, wait_pod_done: WaitPod
) -> None:
    """A trainer over its memory limit is killed by the kernel, and the kubelet says so
    (the process node agent enforces no resources)."""
    core = client.CoreV1Api(admin_api)
    container = restricted_container(
        "hog", TRAINER_IMAGE, ["python", "-c", "x = bytearray(512 * 1024 * 1024); print(len(x))"]
    )
    container["resources"] = {"limits": {"memory": "128Mi"}}
    pod = {
        "metadata": {"name": "hog"},
        "spec": on_real_node({"restartPolicy": "Never", "containers": [container]}),
    }
    core.create_namespaced_pod(namespace, pod)
    done = wait_pod_done(namespace, "hog", 120)
    state = done.status.container_statuses[0].state.terminated
    assert done.status.phase == "Failed"
    assert state.reason == "OOMKilled", state
    assert state.exit_code == 137
