"""The one module that calls the Kubernetes API, in the few verbs the operator needs.

Reads come from Kopf's watches (handlers.py); this module only writes, plus one
rare lookup (why a Job's pods are refused).

Every write is idempotent: creating an object that exists is success (the operator
did that step before a restart), deleting one that is gone is success.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from rheostat.spec import API_GROUP, API_VERSION

TRIALS = "tuningtrials"
STUDIES = "tuningstudies"
# The API server's answers to a manifest it will never accept, whatever the retry.
REFUSED_STATUSES = {400, 422}


class RefusedError(Exception):
    """The API server refused an object for good (invalid); the message is its reason."""


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float as null: the API server refuses NaN in JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def api_message(error: ApiException) -> str:
    """The API server's own explanation, not the client's wall of headers."""
    try:
        return str(json.loads(error.body or "")["message"])
    except (ValueError, KeyError, TypeError):
        return f"{error.status} {error.reason}"


def pooled_api_client(connections: int) -> client.ApiClient:
    """A client that keeps one connection per concurrent pass.

    The default pool holds 5 per CPU (10 here) while up to 32 passes run at once: the
    excess connections were dropped after each request ("Connection pool is full")
    and the next request paid a new TLS handshake.
    """
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = connections
    return client.ApiClient(configuration)


class Kube:
    """Typed-enough access to studies, trials, Jobs and pods as plain dicts."""

    def __init__(
        self,
        api_client: client.ApiClient | None = None,
        on_request: Callable[[str, str], None] | None = None,
    ) -> None:
        self.api = api_client or client.ApiClient()
        # Called with (verb, resource) before each request: the writes-per-trial budget
        # is measured, not assumed (bench/operator_scale.py).
        self.on_request = on_request or (lambda verb, resource: None)
        self.custom = client.CustomObjectsApi(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.core = client.CoreV1Api(self.api)

    def create_trial(self, trial: Mapping[str, Any]) -> dict[str, Any]:
        namespace = trial["metadata"]["namespace"]
        body = {k: v for k, v in trial.items() if k != "status"}
        try:
            self.on_request("create", "tuningtrials")
            created = self.custom.create_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, TRIALS, body
            )
        except ApiException as error:
            if error.status != 409:
                raise
            self.on_request("get", "tuningtrials")
            created = self.custom.get_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, TRIALS, trial["metadata"]["name"]
            )
        assert isinstance(created, dict)
        return created

    def patch_trial_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self._patch_status(TRIALS, namespace, name, status)

    def patch_study_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self._patch_status(STUDIES, namespace, name, status)

    def _patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        body = {"status": json_safe(dict(status))}
        try:
            self.on_request("patch", f"{plural}/status")
            self.custom.patch_namespaced_custom_object_status(
                API_GROUP, API_VERSION, namespace, plural, name, body
            )
        except ApiException as error:
            if error.status != 404:  # the study is being deleted
                raise

    def job_warning(self, namespace: str, job: str) -> str | None:
        """The newest Warning event on a Job (why its pods were refused), if any."""
        self.on_request("list", "events")
        events = self.core.list_namespaced_event(
            namespace,
            field_selector=f"involvedObject.kind=Job,involvedObject.name={job},type=Warning",
        )
        newest = max(
            events.items,
            key=lambda e: str(e.last_timestamp or e.event_time or e.metadata.creation_timestamp),
            default=None,
        )
        return None if newest is None else f"{newest.reason}: {newest.message}"

    def create_job(self, job: Mapping[str, Any]) -> bool:
        """Create a Job; False when it already existed, RefusedError when it never will."""
        try:
            self.on_request("create", "jobs")
            # The client takes a plain manifest as well as a V1Job; its stubs say only V1Job.
            self.batch.create_namespaced_job(job["metadata"]["namespace"], dict(job))  # type: ignore[arg-type]
        except ApiException as error:
            if error.status == 409:
                return False
            if error.status in REFUSED_STATUSES:
                raise RefusedError(api_message(error)) from None
            raise
        return True

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            self.on_request("delete", "jobs")
            self.batch.delete_namespaced_job(
                name, namespace, body=client.V1DeleteOptions(propagation_policy="Background")
            )
        except ApiException as error:
            if error.status != 404:
                raise
