"""The Helm chart on a real control plane: it lints, renders, and its RBAC runs the operator.

The operator image cannot run here (the node agent ignores images), so the chart's
ServiceAccount and RBAC are installed and the real operator runs as a local process
with a token minted for that ServiceAccount: a study that reaches Succeeded proves
the chart grants enough, and an account without the binding is refused. Then every
dashboard query runs against the cluster's real Prometheus: the trial pods are
scraped directly, and the operator's /metrics is re-served by a small pod so the
operator panels are evaluated on real series too. A study with two objectives runs
beside the first, for the panels that only such a study fills.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster.polling import wait_for
from tests.integration.conftest import ClusterHandle, ServiceAccountClient
from tests.integration.operator_support import (
    GROUP,
    VERSION,
    OperatorProcess,
    create_study,
    install_crds,
    require_prometheus,
    synthetic_study,
    trials,
    wait_for_phase,
)
from tests.studies import tradeoff_study

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "rheostat"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
TRIAL_METRICS = {"rheostat_trial_metric", "rheostat_trial_step"}
METRIC_NAME = re.compile(r"\b(rheostat_[a-z_]+)\b")
STUDY = "chartsyn"
# Runs beside STUDY; the panels over the Pareto front's series are checked on it.
MULTI_STUDY = "chartmo"
MULTI_METRICS = {"rheostat_study_pareto_front_size", "rheostat_study_objective_best"}
# Trials and the LR sweep last long enough (10-25 s) for a 1 s scrape to see them.
TRIAL_ARGS = ["--steps", "40", "--step-seconds", "0.25"]

# Re-serves the operator's /metrics (a local process here) on the pod's address, so the
# test Prometheus scrapes the operator as it would through the chart's ServiceMonitor.
PROXY = """
import http.server, os, urllib.request
SOURCE = os.environ["SOURCE"]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with urllib.request.urlopen(SOURCE, timeout=5) as r:
            body, kind = r.read(), r.headers["Content-Type"]
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer((os.environ["POD_IP"], 9470), Handler).serve_forever()
"""


def _run(*command: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        list(command), input=stdin, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _template(release: str, namespace: str, *args: str) -> list[dict[str, Any]]:
    out = _run("helm", "template", release, str(CHART), "--namespace", namespace, *args)
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(doc["kind"] for doc in docs)


def _rules(doc: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in doc["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


# ----- lint and render ------------------------------------------------------------------


def test_chart_lints(cluster: ClusterHandle) -> None:
    _run("helm", "lint", "--strict", str(CHART))
    for values in CI_VALUES:
        _run("helm", "lint", "--strict", str(CHART), "-f", str(values))


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_chart_renders(cluster: ClusterHandle, values: Path) -> None:
    docs = _template("rheo", "rheostat", "-f", str(values))
    kinds = _kinds(docs)
    for kind in ("Deployment", "ServiceAccount", "Service", "ConfigMap", "PodMonitor", "Pod"):
        assert kind in kinds, kinds
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "RHEOSTAT_RESYNC_INTERVAL" in env
    assert any(a.startswith("--metrics-port=") for a in container["args"])
    dashboards = next(d for d in docs if d["kind"] == "ConfigMap")
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert {json.loads(text)["uid"] for text in dashboards["data"].values()} == {
        "rheostat-overview",
        "rheostat-study",
    }
    watched = yaml.safe_load(values.read_text()).get("watchNamespaces") or []
    roles = [d for d in docs if d["kind"] in ("Role", "ClusterRole")]
    operator_roles = [r for r in roles if ("rheostat.dev", "tuningstudies", "watch") in _rules(r)]
    if watched:
        assert sorted(r["metadata"]["namespace"] for r in operator_roles) == sorted(watched)
        assert {r["kind"] for r in operator_roles} == {"Role"}
        assert [f"--namespace={n}" for n in watched] == [
            a for a in container["args"] if a.startswith("--namespace")
        ]
    else:
        assert [r["kind"] for r in operator_roles] == ["ClusterRole"]
    # Beyond the studies' own: read-only discovery, and the leader Lease in the
    # release namespace only.
    for role in roles:
        if role in operator_roles:
            continue
        if role["metadata"]["name"].endswith("-leader-election"):
            assert role["kind"] == "Role"
            assert role["metadata"]["namespace"] == "rheostat"
            assert {(g, r) for g, r, _ in _rules(role)} == {("coordination.k8s.io", "leases")}
        else:
            assert {verb for _, _, verb in _rules(role)} <= {"get", "list", "watch"}
    monitor = next(d for d in docs if d["kind"] == "PodMonitor")
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert endpoint["port"] == "metrics"
    assert {r["targetLabel"] for r in endpoint["relabelings"]} == {"study", "trial", "role"}


def test_the_admission_policy_is_on_by_default_and_can_be_turned_off(
    cluster: ClusterHandle,
) -> None:
    policy_kinds = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    docs = _template("rheo", "rheostat")
    assert policy_kinds <= set(_kinds(docs))
    policy = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicy")
    rules = policy["spec"]["matchConstraints"]["resourceRules"]
    assert [r["resources"] for r in rules] == [["tuningstudies"]]  # never the status
    assert "authorizer" in policy["spec"]["validations"][0]["expression"]
    off = _template("rheo", "rheostat", "--set", "admissionPolicy.enabled=false")
    assert not policy_kinds & set(_kinds(off))


def test_rendered_objects_pass_server_side_dry_run(cluster: ClusterHandle, namespace: str) -> None:
    """The core objects are valid for the real API server (CRD-backed monitors aside)."""
    docs = _template(
        f"dry{secrets.token_hex(2)}",
        namespace,
        "--set",
        f"watchNamespaces={{{namespace}}}",
        "--set",
        "grafana.dashboards.enabled=true",
        "--set",
        "networkPolicy.enabled=true",
    )
    assert "NetworkPolicy" in _kinds(docs)
    core = [d for d in docs if d["apiVersion"] != "monitoring.coreos.com/v1"]
    _kubectl("apply", core, "--dry-run=server", "-n", namespace)


# ----- the chart's RBAC runs the real operator --------------------------------------------


def _kubectl(verb: str, docs: list[dict[str, Any]], *flags: str) -> None:
    """`kubectl <verb> -f -` with the admin kubeconfig the cluster fixture exports."""
    _run("kubectl", verb, *flags, "-f", "-", stdin=yaml.safe_dump_all(docs))


def _token_kubeconfig(admin: client.ApiClient, token: str, path: Path) -> Path:
    conf = admin.configuration
    cluster: dict[str, Any] = {"server": conf.host}
    if conf.ssl_ca_cert:
        cluster["certificate-authority"] = str(conf.ssl_ca_cert)
    else:
        cluster["insecure-skip-tls-verify"] = not conf.verify_ssl
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": "rheostat", "user": {"token": token}}],
        "contexts": [{"name": "rheostat", "context": {"cluster": "test", "user": "rheostat"}}],
        "current-context": "rheostat",
    }
    path.write_text(yaml.safe_dump(kubeconfig))
    return path


@pytest.fixture
def chart_rbac(cluster: ClusterHandle, namespace: str) -> Iterator[tuple[str, str]]:
    """The chart's ServiceAccount and RBAC in namespaced mode; yields (release, account)."""
    release = f"rh{secrets.token_hex(3)}"
    docs = _template(
        release,
        namespace,
        "--set",
        f"watchNamespaces={{{namespace}}}",
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
    )
    assert _kinds(docs) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",  # studies in the watched namespace
        "Role",  # the leader Lease in the release namespace
        "RoleBinding",
        "RoleBinding",
        "ServiceAccount",
    ]
    account = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
    _kubectl("apply", docs)
    try:
        yield release, account
    finally:  # the namespace's deletion takes the rest
        cluster_scoped = [d for d in docs if d["kind"].startswith("Cluster")]
        _kubectl("delete", cluster_scoped, "--ignore-not-found", "--wait=false")


def _prometheus(base: str, path: str, **params: str) -> dict[str, Any]:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            body: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as error:  # 400 carries Prometheus' own error message
        body = json.load(error)
    assert body["status"] == "success", f"{params}: {body}"
    return body


def _panel_targets() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr) for every query of every panel."""
    found = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                found.append((path.name, panel["title"], target["expr"]))
    return found


def _substitute(expr: str, namespace: str) -> str:
    multi = bool(MULTI_METRICS & set(METRIC_NAME.findall(expr)))
    values = {
        "$namespace": namespace,
        "$study": MULTI_STUDY if multi else STUDY,
        "$metric": "loss",
        "$__rate_interval": "1m",
        "$__range": "15m",
        "$__interval": "15s",
    }
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(name, values[name])
    assert "$" not in expr, expr
    return expr


def _start_proxy(api: client.ApiClient, namespace: str, source: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "operator-metrics",
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9470"},
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "proxy",
                    "image": "ignored.invalid/none:0",
                    "command": ["python", "-c", PROXY],
                    "env": [
                        {"name": "SOURCE", "value": source},
                        {
                            "name": "POD_IP",
                            "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                        },
                    ],
                }
            ],
        },
    }
    # The client takes a plain manifest as well as a V1Pod; its stubs say only V1Pod.
    client.CoreV1Api(api).create_namespaced_pod(namespace, pod)  # type: ignore[arg-type]


def _mint_token(admin: client.ApiClient, namespace: str, account: str) -> str:
    """A token for the account from the TokenRequest API, as its pod's projected token."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    response = client.CoreV1Api(admin).create_namespaced_service_account_token(
        account, namespace, request
    )
    assert response.status is not None
    return str(response.status.token)


def _can_list_studies(api: client.ApiClient, namespace: str) -> bool:
    try:
        client.CustomObjectsApi(api).list_namespaced_custom_object(
            GROUP, VERSION, namespace, "tuningstudies"
        )
    except ApiException as error:
        if error.status == 403:
            return False
        raise
    return True


def test_an_account_without_the_chart_binding_is_refused(
    cluster: ClusterHandle,
    admin_api: client.ApiClient,
    namespace: str,
    chart_rbac: tuple[str, str],
    service_account_client: ServiceAccountClient,
) -> None:
    install_crds(admin_api)
    nobody = service_account_client(namespace, "no-binding")
    with pytest.raises(ApiException) as denied:
        client.CustomObjectsApi(nobody).list_namespaced_custom_object(
            GROUP, VERSION, namespace, "tuningstudies"
        )
    assert denied.value.status == 403
    _, account = chart_rbac
    with cluster.token_client(_mint_token(admin_api, namespace, account)) as api:
        wait_for(lambda: _can_list_studies(api, namespace), 60, "the chart's RoleBinding")
        # Namespaced mode grants nothing on studies elsewhere.
        with pytest.raises(ApiException) as elsewhere:
            client.CustomObjectsApi(api).list_namespaced_custom_object(
                GROUP, VERSION, "default", "tuningstudies"
            )
        assert elsewhere.value.status == 403


def _check_operator_metrics(exposed: str, namespace: str) -> None:
    """Every metric an operator panel uses is exposed by the operator."""
    names = {n for _, _, expr in _panel_targets() for n in METRIC_NAME.findall(expr)}
    for name in sorted(names - TRIAL_METRICS):
        family = re.sub(r"_(bucket|count|sum)$", "", name)
        assert re.search(rf"^# TYPE {family}(_total)? ", exposed, re.M), name
    for gauge in ("rheostat_study_best_value", "rheostat_lr_range_test_suggestion"):
        assert f'{gauge}{{namespace="{namespace}",study="{STUDY}"}}' in exposed, gauge
    front = f'rheostat_study_pareto_front_size{{namespace="{namespace}",study="{MULTI_STUDY}"}}'
    assert front in exposed
    for objective in ("loss", "cost"):
        best = (
            f'rheostat_study_objective_best{{namespace="{namespace}",'
            f'objective="{objective}",study="{MULTI_STUDY}"}}'
        )
        assert best in exposed, objective


def _range_data(base: str, expr: str, started: float) -> list[Any]:
    body = _prometheus(
        base,
        "/api/v1/query_range",
        query=expr,
        start=str(started),
        end=str(time.time()),
        step="2",
    )
    return list(body["data"]["result"])


def _check_panels(base: str, namespace: str, started: float) -> None:
    """Every panel query is valid PromQL; those over series that exist return data."""
    empty = []
    for dashboard, title, raw in _panel_targets():
        expr = _substitute(raw, namespace)
        _prometheus(base, "/api/v1/query", query=expr)
        # rheostat_studies is declared by the operator but never set: it has no samples.
        if "rheostat_studies" in METRIC_NAME.findall(expr):
            continue
        deadline = time.monotonic() + 60
        while not (found := _range_data(base, expr, started)) and time.monotonic() < deadline:
            time.sleep(2)
        if not found:
            empty.append(f"{dashboard} / {title}: {expr}")
    assert empty == []


def _check_variables(base: str, namespace: str, started: float) -> None:
    """The per-study dashboard's variables resolve to this study."""
    dashboard = json.loads((CHART / "dashboards" / "study.json").read_text())
    expected = {"namespace": namespace, "study": STUDY, "metric": "loss"}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"]["query"])
        assert match, variable["query"]
        body = _prometheus(
            base,
            f"/api/v1/label/{match[2]}/values",
            **{
                "match[]": _substitute(match[1], namespace),
                "start": str(started),
                "end": str(time.time()),
            },
        )
        assert expected[variable["name"]] in body["data"], (variable["name"], body)


def test_the_chart_rbac_runs_a_study_and_every_panel_query_works(
    cluster: ClusterHandle,
    admin_api: client.ApiClient,
    namespace: str,
    chart_rbac: tuple[str, str],
    tmp_path: Path,
) -> None:
    install_crds(admin_api)
    _, account = chart_rbac
    started = time.time()
    token = _mint_token(admin_api, namespace, account)
    with cluster.token_client(token) as api:
        wait_for(lambda: _can_list_studies(api, namespace), 60, "the chart's RoleBinding")
    kubeconfig = _token_kubeconfig(admin_api, token, tmp_path / "operator.kubeconfig")
    # As the chart runs it: leader election on, with the chart's Lease permissions.
    election = {"RHEOSTAT_LEADER_ELECTION": "true", "POD_NAMESPACE": namespace}
    operator = OperatorProcess(kubeconfig, namespace, tmp_path / "operator.log", env=election)
    operator.start()
    try:
        document = synthetic_study(
            STUDY, lr_test=True, args=TRIAL_ARGS, budget={"maxTrials": 3, "parallelism": 3}
        )
        create_study(admin_api, namespace, document)
        multi = tradeoff_study(
            MULTI_STUDY, lr_test=False, args=TRIAL_ARGS, budget={"maxTrials": 3, "parallelism": 3}
        )
        create_study(admin_api, namespace, multi)
        for name in (STUDY, MULTI_STUDY):
            study = wait_for_phase(
                admin_api, namespace, name, {"Succeeded", "Failed"}, seconds=240, operator=operator
            )
            assert study["status"]["phase"] == "Succeeded", study["status"]
            states = [t["status"]["state"] for t in trials(admin_api, namespace, name)]
            assert states == ["Complete"] * 3
        log = operator.log.read_text(errors="replace")
        for refusal in ("Forbidden", "Not enough permissions"):
            assert refusal not in log, operator.log_tail(80)

        source = f"http://127.0.0.1:{operator.metrics_port}/metrics"
        with urllib.request.urlopen(source, timeout=10) as response:
            _check_operator_metrics(response.read().decode(), namespace)

        require_prometheus(cluster.prometheus_url)
        base = str(cluster.prometheus_url)
        _start_proxy(admin_api, namespace, source)
        proxied = (
            "rheostat_reconcile_duration_seconds_count"
            f'{{pod="operator-metrics", namespace="{namespace}"}}'
        )
        wait_for(
            lambda: _prometheus(base, "/api/v1/query", query=proxied)["data"]["result"],
            120,
            "Prometheus to scrape the operator's metrics",
        )
        _check_panels(base, namespace, started)
        _check_variables(base, namespace, started)
    finally:
        client.CustomObjectsApi(admin_api).delete_collection_namespaced_custom_object(
            GROUP, VERSION, namespace, "tuningstudies"
        )
        operator.stop()
