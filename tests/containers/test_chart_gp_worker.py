"""The slim operator image (no torch) and the GP ask worker, on the real node.

Installed with its defaults, the chart runs an operator with no torch: a TPE study
runs as ever, and a bayesian study is refused, never sampled at random unsaid. At
`kubectl apply` by the admission policy, or, where no policy stands in the way, by
the operator, with a Failed condition that says how to enable the worker. (A
bayesian study on the GP worker is test_chart.py's first test.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster.polling import wait_for
from tests.containers.chart import (
    GROUP,
    RELEASE,
    VERSION,
    helm_apply,
    operator_pods,
    run,
    trial_study,
    trials,
    wait_finished,
)
from tests.containers.conftest import RealCluster


def _bayesian(name: str) -> dict[str, Any]:
    document = trial_study(name, max_trials=2, seed=4)
    document["spec"]["algorithm"]["name"] = "bayesian"
    return document


def test_the_slim_operator_runs_tpe_and_refuses_bayesian_until_a_gp_worker_is_enabled(
    admin_api: client.ApiClient, real_cluster: RealCluster, namespace: str, tmp_path: Path
) -> None:
    core = client.CoreV1Api(admin_api)
    custom = client.CustomObjectsApi(admin_api)
    helm_apply("install", namespace, tmp_path)
    try:
        pods = operator_pods(core, namespace)
        assert [[c.name for c in p.spec.containers] for p in pods] == [["operator"]]
        assert all(not p.spec.init_containers for p in pods)

        # Refused at admission, naming the field and the value that fixes it.
        with pytest.raises(ApiException) as refused:
            custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "tuningstudies", _bayesian("gp-refused")
            )
        assert refused.value.status in (400, 422), refused.value
        assert "spec.algorithm.name bayesian" in str(refused.value.body), refused.value.body
        assert "gpWorker.enabled=true" in str(refused.value.body), refused.value.body

        # TPE needs no torch: it runs as ever.
        tpe = trial_study("tpe", max_trials=3, seed=4)
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "tuningstudies", tpe)
        study = wait_finished(custom, namespace, "tpe")
        assert study["status"]["phase"] == "Succeeded", study["status"]
        assert len(trials(custom, namespace, "tpe")) == 3

        # With no admission policy, the operator itself refuses it, loudly.
        helm_apply("upgrade", namespace, tmp_path, admissionPolicy={"enabled": False})

        def admitted() -> bool:
            try:
                custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, "tuningstudies", _bayesian("gp-none")
                )
            except ApiException as error:
                if "gpWorker" in str(error.body):
                    return False  # the removed policy is still cached by the API server
                raise
            return True

        wait_for(admitted, 60, "the admission policy to be gone")
        study = wait_finished(custom, namespace, "gp-none", timeout=120)
        failed = next(c for c in study["status"]["conditions"] if c["type"] == "Failed")
        assert failed["reason"] == "BayesianUnavailable", failed
        assert "gpWorker.enabled=true" in failed["message"], failed
        assert not trials(custom, namespace, "gp-none")
        assert (
            not client.BatchV1Api(admin_api)
            .list_namespaced_job(namespace, label_selector="rheostat.dev/study=gp-none")
            .items
        )
        events = core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=gp-none"
        ).items
        assert any(e.reason == "BayesianUnavailable" for e in events), [e.reason for e in events]
    finally:
        run("kubectl", "delete", "tuningstudies", "--all", "--namespace", namespace, "--wait")
        run("helm", "uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "120s")
