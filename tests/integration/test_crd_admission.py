"""The generated CRDs on a real API server: the bad-input table fails there too.

Every case of tests/bad_specs.py is rejected by `rheostat validate`
(tests/unit/test_spec_validation.py); here the same documents go to a real
kube-apiserver through the generated CRD, and each must be refused with its field
named, so local runs and `kubectl apply` agree.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.bad_specs import BAD_CASES, BadCase, bad_document, good_study
from tests.integration.operator_support import install_crds

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "rheostat.dev", "v1alpha1", "tuningstudies"
# Where the API server's wording of a path differs from ours (list-map keys, root fields).
SERVER_FIELD = {
    "duplicate-parameter-names": "spec.parameters[1]",
    "wrong-api-version": "",
    "wrong-kind": "",
}
# The API server itself routes by apiVersion and kind: such a document never reaches
# the schema. They are refused all the same, with the server's own words.
ROUTING_CASES = {"wrong-api-version", "wrong-kind"}
# A categorical's values may mix types, so their schema is untyped and CEL cannot see
# them (see rheostat.spec.Rule): admission lets these through and the operator,
# which validates with spec.py when it reads a study, refuses them.
OPERATOR_ONLY_CASES = {"categorical-without-values"}


@pytest.fixture(scope="module")
def crds_installed(admin_api: client.ApiClient) -> client.CustomObjectsApi:
    install_crds(admin_api)
    return client.CustomObjectsApi(admin_api)


def _create(api: client.CustomObjectsApi, namespace: str, document: dict[str, Any]) -> Any:
    # kubectl asks for strict field validation by default; so do we.
    return api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, document, field_validation="Strict"
    )


def test_the_good_study_is_admitted_with_defaults(
    crds_installed: client.CustomObjectsApi, namespace: str
) -> None:
    created = _create(crds_installed, namespace, good_study())
    assert created["spec"]["earlyStopping"]["pruner"] == "median"
    assert created["spec"]["budget"]["maxFailedTrials"] == 3


@pytest.mark.parametrize("case", BAD_CASES, ids=lambda c: c.id)
def test_the_api_server_rejects_each_bad_study(
    case: BadCase, crds_installed: client.CustomObjectsApi, namespace: str
) -> None:
    document = bad_document(case)
    document["metadata"]["name"] = case.id[:45].strip("-")
    if case.id in OPERATOR_ONLY_CASES:
        _create(crds_installed, namespace, document)  # admitted: documented gap
        return
    with pytest.raises(ApiException) as raised:
        _create(crds_installed, namespace, document)
    body = str(raised.value.body)
    if case.id in ROUTING_CASES:
        assert raised.value.status in {400, 404, 422}, body
        assert ("apiVersion" in body) or ("kind" in body), body
        return
    assert raised.value.status in {400, 422}, body  # 400: strict decoding (unknown field)
    field = SERVER_FIELD.get(case.id, case.field)
    assert field in body, body


def test_only_the_budget_of_a_study_may_change(
    crds_installed: client.CustomObjectsApi, namespace: str
) -> None:
    document = copy.deepcopy(good_study())
    document["metadata"]["name"] = "mutable"
    _create(crds_installed, namespace, document)
    patch_budget = {"spec": {"budget": {"maxTrials": 9, "parallelism": 2}}}
    patched = crds_installed.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "mutable", patch_budget
    )
    assert patched["spec"]["budget"]["maxTrials"] == 9
    with pytest.raises(ApiException) as raised:
        crds_installed.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            "mutable",
            {"spec": {"objective": {"metric": "loss"}}},
        )
    assert "objective cannot change once a study exists" in str(raised.value.body)
