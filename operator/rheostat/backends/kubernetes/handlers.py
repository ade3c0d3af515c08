"""Kopf handlers: a few lines each, every one with a pinned id, all over one reconcile.

A timer drives each study (level-based: it looks at the world, not at what changed);
creation and spec changes only trigger an immediate pass. An invalid study is a
permanent error with a Failed condition, never retried. Deletion needs no handler:
owner references let the garbage collector remove trials, Jobs and pods.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from rheostat.backends.kubernetes.kube import Kube, api_message
from rheostat.backends.kubernetes.reconcile import TERMINAL_PHASES, Reconciler
from rheostat.spec import API_GROUP, API_VERSION, InvalidStudyError, study_from_mapping
from rheostat.validation import runtime_problems

STUDIES = "tuningstudies"
LOGGER = logging.getLogger(__name__)
INTERVAL = float(os.environ.get("RHEOSTAT_RECONCILE_INTERVAL", "2"))
RECONCILER: Reconciler | None = None


def reconciler() -> Reconciler:
    global RECONCILER  # noqa: PLW0603 - one per operator process, made after config loads
    if RECONCILER is None:
        RECONCILER = Reconciler(Kube())
    return RECONCILER


def _drive(body: kopf.Body, patch: kopf.Patch) -> None:
    status = dict(body.get("status") or {})
    generation = body["metadata"].get("generation")
    if status.get("phase") in TERMINAL_PHASES and status.get("observedGeneration") == generation:
        return  # finished, and nobody changed the budget since
    document = {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "metadata": {"name": body["metadata"]["name"]},
        "spec": dict(body["spec"]),
    }
    try:
        study = study_from_mapping(document)
        problems = runtime_problems(study)
        if problems:
            raise InvalidStudyError(problems)
    except InvalidStudyError as error:
        patch.status["phase"] = "Failed"
        patch.status["observedGeneration"] = generation
        patch.status["conditions"] = [
            {"type": "Failed", "status": "True", "reason": "InvalidSpec", "message": str(error)}
        ]
        kopf.warn(body, reason="InvalidSpec", message=str(error))
        raise kopf.PermanentError(f"invalid study: {error}") from None
    new_status, events = reconciler().reconcile(body, study.spec)
    for event in events:
        (kopf.info if event.type == "Normal" else kopf.warn)(
            body, reason=event.reason, message=event.message
        )
    if {k: status.get(k) for k in new_status} != new_status:
        _write_status(body, new_status)


def _write_status(body: kopf.Body, status: dict[str, Any]) -> None:
    """Write the study's status ourselves, so that a refused write is loud.

    A write the API server refuses is logged and posted as an Event; the next pass
    sees the old status and writes again, so the study is never silently left behind.
    """
    meta = body["metadata"]
    try:
        reconciler().kube.patch_study_status(meta["namespace"], meta["name"], status)
    except ApiException as error:
        message = f"could not write the study's status: {api_message(error)}"
        LOGGER.error("%s/%s: %s", meta["namespace"], meta["name"], message)
        kopf.warn(body, reason="StatusWriteFailed", message=message)


@kopf.on.startup(id="configure")
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="rheostat.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="rheostat.dev")
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 60
    settings.execution.max_workers = 8


@kopf.timer(API_GROUP, API_VERSION, STUDIES, interval=INTERVAL, id="reconcile")
def reconcile_timer(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    _drive(body, patch)


@kopf.on.delete(API_GROUP, API_VERSION, STUDIES, id="forget", optional=True)
def forget(body: kopf.Body, **_: Any) -> None:
    reconciler().forget(body["metadata"]["uid"])


@kopf.on.probe(id="studies")
def studies_probe(**_: Any) -> int:
    return len(reconciler().runtimes)
