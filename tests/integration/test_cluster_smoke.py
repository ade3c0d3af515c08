"""Smoke tests that prove the test cluster is a real one.

Each test exercises a component the operator will rely on: the Job controller and
the node agent (exit code, termination message, downward API), the scheduler's
extended resources, namespace deletion, the garbage collector, CEL validation in
the apiserver, Prometheus discovery through the apiserver, and RBAC.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster.polling import wait_for
from tests.integration.conftest import ClusterHandle, ServiceAccountClient
from tests.integration.operator_support import require_prometheus

pytestmark = pytest.mark.integration

PYTHON = "python"  # resolved on the pod's PATH: the venv's interpreter


def _env_field(name: str, path: str) -> client.V1EnvVar:
    return client.V1EnvVar(
        name=name,
        value_from=client.V1EnvVarSource(field_ref=client.V1ObjectFieldSelector(field_path=path)),
    )


def _pod(
    name: str,
    code: str,
    *,
    env: list[client.V1EnvVar] | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    limits: dict[str, str] | None = None,
) -> client.V1Pod:
    container = client.V1Container(
        name="main",
        image="ignored.invalid/none:0",
        command=[PYTHON, "-c", code],
        env=env,
        resources=client.V1ResourceRequirements(limits=limits) if limits else None,
    )
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels, annotations=annotations),
        spec=client.V1PodSpec(containers=[container], restart_policy="Never"),
    )


def _read_pod(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod | None:
    try:
        return core.read_namespaced_pod(name, namespace)
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def _running(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod | None:
    pod = _read_pod(core, namespace, name)
    return pod if pod is not None and pod.status.phase == "Running" else None


REPORT = """
import json, os
keys = ("POD_IP", "POD_NAME", "POD_NAMESPACE", "NODE_NAME", "STUDY")
message = {k: os.environ[k] for k in keys}
with open(os.environ["RHEOSTAT_TERMINATION_MESSAGE_PATH"], "w") as f:
    json.dump(message, f)
print("hello from the job")
"""


def test_job_completes_with_exit_code_and_termination_message(
    cluster: ClusterHandle, admin_api: client.ApiClient, namespace: str
) -> None:
    env = [
        _env_field("POD_IP", "status.podIP"),
        _env_field("POD_NAME", "metadata.name"),
        _env_field("POD_NAMESPACE", "metadata.namespace"),
        _env_field("NODE_NAME", "spec.nodeName"),
        _env_field("STUDY", "metadata.labels['rheostat.dev/study']"),
    ]
    pod = _pod("unused", REPORT, env=env, limits={"nvidia.com/gpu": "1"})
    template = client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels={"rheostat.dev/study": "smoke"}), spec=pod.spec
    )
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="report"),
        spec=client.V1JobSpec(backoff_limit=0, template=template),
    )
    client.BatchV1Api(admin_api).create_namespaced_job(namespace, job)
    batch = client.BatchV1Api(admin_api)
    wait_for(
        lambda: batch.read_namespaced_job_status("report", namespace).status.succeeded,
        120,
        "the Job to succeed",
    )

    core = client.CoreV1Api(admin_api)
    (pod,) = core.list_namespaced_pod(namespace, label_selector="job-name=report").items
    assert pod.status.phase == "Succeeded"
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0
    assert terminated.reason == "Completed"
    message = json.loads(terminated.message)
    assert message == {
        "POD_IP": pod.status.pod_ip,
        "POD_NAME": pod.metadata.name,
        "POD_NAMESPACE": namespace,
        "NODE_NAME": pod.spec.node_name,
        "STUDY": "smoke",
    }
    assert pod.status.pod_ip.startswith("127.")
    assert pod.spec.node_name in cluster.node_names
    log = cluster.state_dir / "pods" / namespace / pod.metadata.name / "main.log"
    if log.parent.exists():  # only on the harness's own cluster
        assert "hello from the job" in log.read_text()


def test_failing_container_reports_its_exit_code(
    admin_api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(admin_api)
    core.create_namespaced_pod(namespace, _pod("fails", "raise SystemExit(3)"))
    pod = wait_for(
        lambda: (p := _read_pod(core, namespace, "fails")) and p.status.phase == "Failed" and p,
        120,
        "the pod to fail",
    )
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (3, "Error")


def test_more_gpus_than_any_node_stays_pending(admin_api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(admin_api)
    greedy = _pod("greedy", "pass", limits={"nvidia.com/gpu": "64"})
    core.create_namespaced_pod(namespace, greedy)

    def unschedulable() -> client.V1PodCondition | None:
        pod = _read_pod(core, namespace, "greedy")
        for cond in (pod.status.conditions or []) if pod else []:
            if cond.type == "PodScheduled" and cond.status == "False":
                return cond
        return None

    cond = wait_for(unschedulable, 60, "the scheduler to mark the pod unschedulable")
    assert cond.reason == "Unschedulable"
    assert "nvidia.com/gpu" in cond.message
    pod = core.read_namespaced_pod("greedy", namespace)
    assert pod.status.phase == "Pending"
    assert not pod.spec.node_name


SLEEPER = """
import os, sys, time
with open(sys.argv[1], "w") as f:
    f.write(str(os.getpid()))
time.sleep(3600)
"""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_deleting_a_namespace_kills_its_pods(admin_api: client.ApiClient, tmp_path: Path) -> None:
    core = client.CoreV1Api(admin_api)
    name = f"t-doomed-{os.getpid()}-{tmp_path.name[-6:]}".lower().replace("_", "-")
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    pid_file = tmp_path / "pid"
    pod = _pod("sleeper", SLEEPER)
    pod.spec.containers[0].args = [str(pid_file)]

    def create() -> bool:
        try:
            core.create_namespaced_pod(name, pod)
        except ApiException as err:  # the default ServiceAccount may not exist yet
            if err.status == 403 and "serviceaccount" in str(err.body).lower():
                return False
            raise
        return True

    wait_for(create, 60, "the pod to be admitted")
    wait_for(lambda: _running(core, name, "sleeper"), 120, "the pod to run")
    pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), 60, "the pid file"))
    assert _pid_alive(pid)

    core.delete_namespace(name)

    def namespace_gone() -> bool:
        try:
            core.read_namespace(name)
        except ApiException as err:
            if err.status == 404:
                return True
            raise
        return False

    wait_for(namespace_gone, 120, "the namespace to be deleted")
    wait_for(lambda: not _pid_alive(pid), 30, "the pod's process to exit")


def test_owner_references_are_garbage_collected(
    admin_api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(admin_api)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    reference = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    dependent = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="dependent", owner_references=[reference])
    )
    core.create_namespaced_config_map(namespace, dependent)
    core.delete_namespaced_config_map("owner", namespace)

    def dependent_gone() -> bool:
        try:
            core.read_namespaced_config_map("dependent", namespace)
        except ApiException as err:
            if err.status == 404:
                return True
            raise
        return False

    wait_for(dependent_gone, 60, "the garbage collector to delete the dependent")


def _crd(group: str) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                "x-kubernetes-validations": [
                    {"rule": "self.min <= self.max", "message": "min must not exceed max"}
                ],
            }
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"ranges.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "ranges", "singular": "range", "kind": "Range"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def test_crd_cel_rule_rejects_a_bad_object(admin_api: client.ApiClient, namespace: str) -> None:
    group = f"{namespace}.smoke.rheostat.dev"
    extensions = client.ApiextensionsV1Api(admin_api)
    extensions.create_custom_resource_definition(_crd(group))
    custom = client.CustomObjectsApi(admin_api)
    try:

        def established() -> bool:
            crd = extensions.read_custom_resource_definition(f"ranges.{group}")
            conditions = crd.status.conditions or []
            return any(c.type == "Established" and c.status == "True" for c in conditions)

        wait_for(established, 60, "the CRD to be established")

        def create(name: str, low: int, high: int) -> dict[str, Any]:
            body = {
                "apiVersion": f"{group}/v1",
                "kind": "Range",
                "metadata": {"name": name},
                "spec": {"min": low, "max": high},
            }
            created: dict[str, Any] = custom.create_namespaced_custom_object(
                group, "v1", namespace, "ranges", body
            )
            return created

        def good() -> dict[str, Any] | None:
            try:
                return create("good", 1, 2)
            except ApiException as err:  # discovery of a new CRD takes a moment
                if err.status == 404:
                    return None
                raise

        wait_for(good, 60, "the CRD to serve objects")
        with pytest.raises(ApiException) as rejected:
            create("bad", 5, 1)
        assert rejected.value.status == 422
        assert "min must not exceed max" in str(rejected.value.body)
    finally:
        extensions.delete_custom_resource_definition(f"ranges.{group}")


EXPORTER = """
import os, time
from prometheus_client import Gauge, start_http_server
Gauge("rheostat_smoke_value", "a constant for the smoke test").set(42)
start_http_server(9464, addr=os.environ["POD_IP"])
time.sleep(3600)
"""


def _query(base: str, promql: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_prometheus_scrapes_a_running_pod(
    cluster: ClusterHandle, admin_api: client.ApiClient, namespace: str
) -> None:
    require_prometheus(cluster.prometheus_url)
    core = client.CoreV1Api(admin_api)
    labels = {
        "rheostat.dev/study": "smoke",
        "rheostat.dev/trial": "3",
        "rheostat.dev/role": "trial",
    }
    annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": "9464"}
    pod = _pod(
        "exporter",
        EXPORTER,
        env=[_env_field("POD_IP", "status.podIP")],
        labels=labels,
        annotations=annotations,
    )
    core.create_namespaced_pod(namespace, pod)
    promql = f'rheostat_smoke_value{{namespace="{namespace}"}}'
    (sample,) = wait_for(lambda: _query(str(cluster.prometheus_url), promql), 120, promql)
    assert sample["value"][1] == "42"
    assert sample["metric"]["study"] == "smoke"
    assert sample["metric"]["trial"] == "3"
    assert sample["metric"]["role"] == "trial"
    assert sample["metric"]["pod"] == "exporter"
    running = core.read_namespaced_pod("exporter", namespace)
    assert sample["metric"]["instance"] == f"{running.status.pod_ip}:9464"


def test_service_account_has_only_its_rights(
    admin_api: client.ApiClient, namespace: str, service_account_client: ServiceAccountClient
) -> None:
    api = service_account_client(namespace, "nobody")
    with pytest.raises(ApiException) as denied:
        client.CoreV1Api(api).list_namespaced_pod(namespace)
    assert denied.value.status == 403

    rbac = client.RbacAuthorizationV1Api(admin_api)
    rule = client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["list"])
    rbac.create_namespaced_role(
        namespace, client.V1Role(metadata=client.V1ObjectMeta(name="pod-lister"), rules=[rule])
    )
    binding = client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="pod-lister"),
        role_ref=client.V1RoleRef(
            api_group="rbac.authorization.k8s.io", kind="Role", name="pod-lister"
        ),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name="nobody", namespace=namespace)],
    )
    rbac.create_namespaced_role_binding(namespace, binding)

    def allowed() -> bool:
        try:
            client.CoreV1Api(api).list_namespaced_pod(namespace)
        except ApiException as err:
            if err.status == 403:
                return False
            raise
        return True

    wait_for(allowed, 30, "the RoleBinding to take effect")
    with pytest.raises(ApiException) as still_denied:
        client.CoreV1Api(api).list_namespace()
    assert still_denied.value.status == 403


def test_kubectl_and_helm_are_on_path(cluster: ClusterHandle) -> None:
    nodes = subprocess.run(
        ["kubectl", "get", "nodes", "-o", "name"], check=True, capture_output=True, text=True
    ).stdout.split()
    assert sorted(nodes) == sorted(f"node/{n}" for n in cluster.node_names)
    helm = subprocess.run(
        ["helm", "version", "--short"], check=True, capture_output=True, text=True
    )
    assert helm.stdout.startswith("v3.")
