"""A small in-memory Kubernetes API behind the real kubernetes client, for reconcile tests.

It replaces only the client's REST layer (`ApiClient.rest_client`), so everything
above it runs for real: the client's own model validation of a Job (pydantic, raised
before any request), its serialisation, and `ApiException` built from the status
code. The server keeps what a reconcile pass depends on and nothing more:

- create answers 409 AlreadyExists on an existing name and assigns a fresh uid;
- a status write is applied as a JSON merge patch (RFC 7386), which is what
  `patch_namespaced_custom_object_status` sends with a dict body, so a key left out
  of a write stays unless the write nulls it;
- owner references are kept; `collect_garbage()` plays the garbage collector (an
  object whose controller owner is gone is deleted, unless it holds a finalizer);
- `children()` shows a study's children as the operator's indexes do: by the
  `rheostat.dev/study` label, that is by name, not by owner.

The clock is the test's (`now`), never the machine's.
"""

from __future__ import annotations

import copy
import itertools
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from kubernetes import client
from kubernetes.client import rest

from rheostat.backends.kubernetes.children import Children, controller_uid
from rheostat.backends.kubernetes.kube import Kube
from rheostat.backends.kubernetes.manifests import LABEL_STUDY

Key = tuple[str, str, str]  # (resource plural, namespace, name)


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: a null removes a key, an object merges, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def _rfc3339(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@dataclass
class FakeApiServer:
    """Objects by (plural, namespace, name); `requests` logs (method, plural[/sub])."""

    now: float = 1_000_000.0
    objects: dict[Key, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    # Called with (method, plural) before a request is served: a test's way to make
    # something happen in the middle of a pass.
    on_request: list[Callable[[str, str], None]] = field(default_factory=list)
    _uids: itertools.count[int] = field(default_factory=itertools.count)

    # ----- what tests use ------------------------------------------------------------

    def kube(self) -> Kube:
        api = client.ApiClient(client.Configuration(host="http://fake-apiserver"))
        api.rest_client = self  # type: ignore[assignment]  # the one seam: the REST layer
        return Kube(api)

    def add(self, plural: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Store an object as a create would (fresh uid), whatever exists."""
        stored = copy.deepcopy(dict(obj))
        meta = stored.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{next(self._uids)}")
        meta.setdefault("creationTimestamp", _rfc3339(self.now))
        meta.setdefault("generation", 1)
        self.objects[(plural, meta["namespace"], meta["name"])] = stored
        return stored

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((plural, namespace, name))

    def delete(self, plural: str, namespace: str, name: str) -> None:
        """A user's delete (no cascade: call `collect_garbage` for the dependents)."""
        self.objects.pop((plural, namespace, name), None)

    def of(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        return [
            o for (p, ns, _), o in sorted(self.objects.items()) if (p, ns) == (plural, namespace)
        ]

    def collect_garbage(self) -> None:
        """Delete every object whose controller owner is gone (finalizers hold it)."""
        while True:
            uids = {o["metadata"]["uid"] for o in self.objects.values()}
            orphans = [
                key
                for key, obj in self.objects.items()
                if (owner := controller_uid(obj)) is not None
                and owner not in uids
                and not obj["metadata"].get("finalizers")
            ]
            if not orphans:
                return
            for key in orphans:
                del self.objects[key]

    def children(self, study: Mapping[str, Any], seeds_of: str = "") -> Children:
        """What the operator's label-keyed indexes hold for a study's name."""
        namespace, name = study["metadata"]["namespace"], study["metadata"]["name"]

        def labelled(plural: str, of: str = name) -> list[dict[str, Any]]:
            return [
                copy.deepcopy(o)
                for o in self.of(plural, namespace)
                if (o["metadata"].get("labels") or {}).get(LABEL_STUDY) == of
            ]

        return Children(
            jobs={j["metadata"]["name"]: j for j in labelled("jobs")},
            pods=labelled("pods"),
            trials=labelled("tuningtrials"),
            seeds=labelled("tuningtrials", seeds_of) if seeds_of else [],
            seed_objective=self._objective(namespace, seeds_of) if seeds_of else None,
        )

    def _objective(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A study's first objective, as the operator's `objectives` index holds it."""
        study = self.get("tuningstudies", namespace, name)
        if study is None:
            return None
        spec = study["spec"]
        objective = spec.get("objective") or next(iter(spec.get("objectives") or []), None)
        return dict(objective) if objective else None

    def run_pod(self, job_name: str, namespace: str, *, ip: str = "") -> dict[str, Any]:
        """A running pod of the Job, as its controller and the kubelet would make it."""
        job = self.objects[("jobs", namespace, job_name)]
        template = job["spec"]["template"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{job_name}-pod",
                "namespace": namespace,
                "labels": dict(template["metadata"]["labels"]),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": job_name,
                        "uid": job["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": copy.deepcopy(template["spec"]),
            "status": {
                "podIP": ip,
                "containerStatuses": [
                    {
                        "name": template["spec"]["containers"][0]["name"],
                        "state": {"running": {"startedAt": _rfc3339(self.now)}},
                    }
                ],
            },
        }
        return self.add("pods", pod)

    def finish_pod(self, job_name: str, namespace: str, message: Mapping[str, Any]) -> None:
        """The trainer exits 0 having written `message` as its termination message."""
        pod = self.objects[("pods", namespace, f"{job_name}-pod")]
        pod["status"]["containerStatuses"][0]["state"] = {
            "terminated": {
                "exitCode": 0,
                "message": json.dumps(message),
                "finishedAt": _rfc3339(self.now),
            }
        }

    # ----- the REST layer the client calls --------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> rest.RESTResponse:
        parts = urlsplit(url).path.strip("/").split("/")
        at = parts.index("namespaces")
        namespace, rest_of = parts[at + 1], parts[at + 2 :]
        plural = rest_of[0]
        name = rest_of[1] if len(rest_of) > 1 else None
        sub = rest_of[2] if len(rest_of) > 2 else None
        self.requests.append((method, plural + (f"/{sub}" if sub else "")))
        for hook in list(self.on_request):
            hook(method, plural)
        key = (plural, namespace, name or "")
        if method == "POST":
            if (plural, namespace, body["metadata"]["name"]) in self.objects:
                return _status(
                    409, "AlreadyExists", f"{plural} {body['metadata']['name']!r} already exists"
                )
            created = {k: v for k, v in body.items() if k != "status"}
            created["metadata"] = {**created["metadata"], "namespace": namespace}
            return _ok(self.add(plural, created), 201)
        if method == "GET" and name is None and plural == "workloads":  # Kueue's, by label
            wanted = dict(parse_qsl(urlsplit(url).query)).get("labelSelector", "")
            key_, _, value = wanted.partition("=")
            found = [
                w
                for w in self.of("workloads", namespace)
                if (w["metadata"].get("labels") or {}).get(key_) == value
            ]
            return _ok(
                {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "WorkloadList", "items": found}
            )
        if method == "GET" and name is None:  # else only events are listed
            return _ok({"apiVersion": "v1", "kind": "EventList", "metadata": {}, "items": []})
        if key not in self.objects:
            return _status(404, "NotFound", f"{plural} {name!r} not found")
        if method == "GET":
            return _ok(self.objects[key])
        if method == "DELETE":
            del self.objects[key]
            return _ok({"kind": "Status", "apiVersion": "v1", "status": "Success"})
        if method == "PATCH" and sub == "status":
            assert (headers or {}).get("Content-Type") == "application/merge-patch+json"
            current = self.objects[key]
            self.objects[key] = apply_merge_patch(current, {"status": body["status"]})
            return _ok(self.objects[key])
        raise AssertionError(f"the fake API server does not serve {method} {url}")


def _response(code: int, reason: str, payload: Mapping[str, Any]) -> rest.RESTResponse:
    raw = SimpleNamespace(
        status=code,
        reason=reason,
        data=json.dumps(payload).encode(),
        headers={"content-type": "application/json"},
    )
    return rest.RESTResponse(raw)


def _ok(obj: Mapping[str, Any], code: int = 200) -> rest.RESTResponse:
    return _response(code, "OK", copy.deepcopy(dict(obj)))


def _status(code: int, reason: str, message: str) -> rest.RESTResponse:
    payload = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason}
    return _response(code, reason, {**payload, "message": message, "code": code})
