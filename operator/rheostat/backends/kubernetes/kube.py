"""The one module that calls the Kubernetes API, in the few verbs the operator needs.

Reads come from Kopf's watches (handlers.py); this module only writes, plus two
rare lookups (why a Job's pods are refused, why Kueue keeps a Job waiting).

Every write is idempotent: creating an object that exists is success (the operator
did that step before a restart), deleting one that is gone is success. An existing
object is ours only if its controller is the owner we meant: a study deleted and
re-applied under the same name meets its predecessor's children, which it must never
adopt (NameTakenError). Status writes are JSON merge patches, so they carry an
explicit null for every key they remove (`merge_patch`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import pydantic
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from rheostat.backends.kubernetes.children import controller_uid
from rheostat.backends.kubernetes.queueing import LABEL_JOB_UID, WORKLOADS
from rheostat.spec import API_GROUP, API_VERSION

TRIALS = "tuningtrials"
STUDIES = "tuningstudies"
# The API server's answers to a manifest it will never accept, whatever the retry.
REFUSED_STATUSES = {400, 422}


class RefusedError(Exception):
    """An object refused for good (invalid); the message is the reason, `by` who said so.

    The API server refuses with 400/422; the client itself refuses a Job whose
    template does not fit its models (a field a PodSpec lacks) before sending it.
    """

    def __init__(self, message: str, by: str = "the API server") -> None:
        super().__init__(message)
        self.by = by


class NameTakenError(Exception):
    """The name is held by an object another owner controls (a deleted study's child
    the garbage collector has not removed yet, or a stranger): not ours to adopt."""


def merge_patch(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386) that turns `before` into `after`.

    It is `after` itself plus an explicit null for every key `before` holds and `after`
    lacks, in nested objects too: the API server merges a status write into what it
    holds, so a key merely left out would stay forever. Lists are replaced whole.
    """
    patch = dict(after)
    for key, old in before.items():
        if key not in after:
            patch[key] = None
        elif isinstance(old, Mapping) and isinstance(after[key], Mapping):
            patch[key] = merge_patch(old, after[key])
    return patch


def client_problems(error: pydantic.ValidationError) -> str:
    """The client's refusal as field paths (`spec.template.spec.metadata: ...`)."""
    problems = []
    for problem in error.errors():
        location = list(problem["loc"])
        if location and isinstance(location[0], int):
            location = location[1:]  # the position of the refused argument, not a field
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in location)
        problems.append(f"{path.lstrip('.')}: {problem['msg']}")
    return "; ".join(problems)


def _owned_by(controller: str | None, owner: Mapping[str, Any]) -> bool:
    wanted = [r["uid"] for r in owner["metadata"].get("ownerReferences") or []]
    return controller is not None and controller in wanted


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
        """Create a TuningTrial, or return the existing one if its owner is ours."""
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
            if not _owned_by(controller_uid(created), trial):
                raise NameTakenError(
                    f"TuningTrial {trial['metadata']['name']} exists and is not this study's"
                ) from None
        assert isinstance(created, dict)
        return created

    def patch_trial_status(
        self,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        before: Mapping[str, Any] | None = None,
    ) -> None:
        """Make the trial's status `status`, removing what `before` (the last one) had."""
        self._patch_status(TRIALS, namespace, name, merge_patch(before or {}, status))

    def patch_study_status(
        self,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        before: Mapping[str, Any] | None = None,
    ) -> None:
        """Make the study's status `status`, removing what `before` (the last one) had."""
        self._patch_status(STUDIES, namespace, name, merge_patch(before or {}, status))

    def _patch_status(
        self, plural: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> None:
        body = {"status": json_safe(dict(patch))}
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

    def workload_of_job(self, namespace: str, job_uid: str) -> dict[str, Any] | None:
        """Kueue's Workload for a Job (by its job-uid label), if Kueue and RBAC let us see it.

        No Workload CRD (404) or no permission (403) reads as "no Workload": the
        operator works without Kueue, it only cannot say why a Job waits.
        """
        group, version, plural = WORKLOADS
        try:
            self.on_request("list", plural)
            found = self.custom.list_namespaced_custom_object(
                group, version, namespace, plural, label_selector=f"{LABEL_JOB_UID}={job_uid}"
            )
        except ApiException as error:
            if error.status in {403, 404}:
                return None
            raise
        items = (found.get("items") or []) if isinstance(found, dict) else []
        return dict(items[0]) if items else None

    def create_job(self, job: Mapping[str, Any]) -> bool:
        """Create a Job; False when ours already existed, RefusedError when it never will.

        NameTakenError when a Job of that name exists under another owner.
        """
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        try:
            self.on_request("create", "jobs")
            # The client takes a plain manifest as well as a V1Job; its stubs say only V1Job.
            self.batch.create_namespaced_job(namespace, dict(job))  # type: ignore[arg-type]
        except pydantic.ValidationError as error:  # raised before any request is sent
            raise RefusedError(client_problems(error), by="the Kubernetes client") from None
        except ApiException as error:
            if error.status == 409:
                self._check_job_owner(namespace, name, job)
                return False
            if error.status in REFUSED_STATUSES:
                raise RefusedError(api_message(error)) from None
            raise
        return True

    def _check_job_owner(self, namespace: str, name: str, job: Mapping[str, Any]) -> None:
        self.on_request("get", "jobs")
        existing = self.batch.read_namespaced_job(name, namespace)
        references = (existing.metadata and existing.metadata.owner_references) or []
        controller = next((r.uid for r in references if r.controller), None)
        if not _owned_by(controller, job):
            raise NameTakenError(f"Job {name} exists and is not this study's")

    def create_service(self, service: Mapping[str, Any]) -> bool:
        """Create a Service (a multi-pod trial's headless one); False when ours existed.

        Same contract as create_job: RefusedError when it never will be accepted,
        NameTakenError when the name is another owner's.
        """
        namespace, name = service["metadata"]["namespace"], service["metadata"]["name"]
        try:
            self.on_request("create", "services")
            self.core.create_namespaced_service(namespace, dict(service))  # type: ignore[arg-type]
        except pydantic.ValidationError as error:
            raise RefusedError(client_problems(error), by="the Kubernetes client") from None
        except ApiException as error:
            if error.status == 409:
                self.on_request("get", "services")
                existing = self.core.read_namespaced_service(name, namespace)
                references = (existing.metadata and existing.metadata.owner_references) or []
                controller = next((r.uid for r in references if r.controller), None)
                if not _owned_by(controller, service):
                    raise NameTakenError(f"Service {name} exists and is not this study's") from None
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
