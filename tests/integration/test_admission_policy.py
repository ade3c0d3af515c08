"""The chart's ValidatingAdmissionPolicy on a real API server: a study grants nothing
its author lacks.

The policy and its binding are rendered by `helm template` from the chart and
applied, bound to the test's namespace only (admissionPolicy.namespaceSelector) so
no other test's studies meet it. Two ServiceAccounts act with their own tokens
(TokenRequest): one may write TuningStudies only and is refused with a message
naming the missing permission; one may also create Jobs and is admitted. A status
write by the first still passes: only the main resource is matched.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.bad_specs import good_study
from tests.cluster.polling import wait_for
from tests.integration.conftest import ClusterHandle, ServiceAccountClient
from tests.integration.operator_support import GROUP, VERSION, install_crds

pytestmark = pytest.mark.integration

CHART = Path(__file__).resolve().parents[2] / "charts" / "rheostat"
PLURAL = "tuningstudies"
MISSING = "may not create jobs.batch in namespace"


@pytest.fixture
def policy(
    cluster: ClusterHandle, admin_api: client.ApiClient, namespace: str
) -> Iterator[list[dict[str, Any]]]:
    """The chart's policy and binding, bound to `namespace` only."""
    done = subprocess.run(
        [
            "helm",
            "template",
            "vap",
            str(CHART),
            "--namespace",
            "rheostat",
            "--set",
            f"admissionPolicy.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name={namespace}",
            "--show-only",
            "templates/admission-policy.yaml",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert sorted(d["kind"] for d in docs) == [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    policy_doc = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicy")
    binding_doc = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding")
    admission = client.AdmissionregistrationV1Api(admin_api)
    admission.create_validating_admission_policy(policy_doc)
    admission.create_validating_admission_policy_binding(binding_doc)
    try:
        yield docs
    finally:
        admission.delete_validating_admission_policy_binding(binding_doc["metadata"]["name"])
        admission.delete_validating_admission_policy(policy_doc["metadata"]["name"])


def _grant(admin: client.ApiClient, namespace: str, account: str, jobs: bool) -> None:
    """A Role on studies (and their status), plus creating Jobs if `jobs`."""
    rules = [
        client.V1PolicyRule(
            api_groups=[GROUP],
            resources=[PLURAL, f"{PLURAL}/status"],
            verbs=["get", "create", "patch", "update"],
        )
    ]
    if jobs:
        rules.append(
            client.V1PolicyRule(api_groups=["batch"], resources=["jobs"], verbs=["create"])
        )
    rbac = client.RbacAuthorizationV1Api(admin)
    rbac.create_namespaced_role(
        namespace, client.V1Role(metadata=client.V1ObjectMeta(name=account), rules=rules)
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name=account),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name=account
            ),
            subjects=[
                client.RbacV1Subject(kind="ServiceAccount", name=account, namespace=namespace)
            ],
        ),
    )


def _study(name: str) -> dict[str, Any]:
    document = copy.deepcopy(good_study())
    document["metadata"]["name"] = name
    return document


def _refusal(api: client.ApiClient, namespace: str, name: str, dry_run: bool) -> str | None:
    """The API server's reason for refusing the study, or None if it was admitted."""
    try:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, _study(name), dry_run="All" if dry_run else None
        )
    except ApiException as error:
        if error.status in {403, 422}:
            return str(error.body)
        raise
    return None


def test_a_study_needs_the_right_to_create_jobs(
    admin_api: client.ApiClient,
    namespace: str,
    policy: list[dict[str, Any]],
    service_account_client: ServiceAccountClient,
) -> None:
    install_crds(admin_api)
    _grant(admin_api, namespace, "studies-only", jobs=False)
    _grant(admin_api, namespace, "studies-and-jobs", jobs=True)
    studies_only = service_account_client(namespace, "studies-only")
    with_jobs = service_account_client(namespace, "studies-and-jobs")

    # The policy takes effect a moment after it is created; dry runs meet it too.
    reason = wait_for(
        lambda: _refusal(studies_only, namespace, "refused", dry_run=True), 60, "the policy"
    )
    assert _refusal(studies_only, namespace, "refused", dry_run=False) is not None
    assert MISSING in reason, reason
    assert f"system:serviceaccount:{namespace}:studies-only" in reason
    assert "verbs [create]" in reason

    assert _refusal(with_jobs, namespace, "admitted", dry_run=False) is None

    # UPDATE is checked too: more budget means more Jobs.
    studies = client.CustomObjectsApi(studies_only)
    with pytest.raises(ApiException) as raised:
        studies.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "admitted", {"spec": {"budget": {"maxTrials": 9}}}
        )
    assert raised.value.status == 403
    assert MISSING in str(raised.value.body)
    # The status subresource is not matched: status writes (the operator's) pass.
    studies.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "admitted", {"status": {"phase": "Running"}}
    )
    client.CustomObjectsApi(with_jobs).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "admitted", {"spec": {"budget": {"maxTrials": 9}}}
    )
