"""Kopf handlers: a few lines each, every one with a pinned id, all over one reconcile.

The operator reacts to what happens, not to a clock. Kopf's in-memory indexes keep
every study's Jobs, pods and TuningTrials as the watches report them, and an event
on any of them (or on the study) wakes that study's daemon at once; the daemon runs
one reconcile pass off the event loop, fed from those indexes, with no LIST. While
trials run, the study is also passed over at its metrics scrape interval (metrics
are pulled, timeouts need a clock); an idle study only gets a slow safety resync.
An invalid study is a permanent error with a Failed condition, never retried; so is a
`bayesian` study on an operator with no GP worker (no torch), whatever admission let by.
Deletion needs no change handler: owner references let the garbage collector remove
trials, Jobs and pods, and the study's DELETED watch event drops its cache and its series.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn, cast

import kopf
from kubernetes.client.exceptions import ApiException

from rheostat.backends.kubernetes.ask_worker import OFFLOADED
from rheostat.backends.kubernetes.children import Children
from rheostat.backends.kubernetes.kube import Kube, api_message, pooled_api_client
from rheostat.backends.kubernetes.manifests import LABEL_STUDY
from rheostat.backends.kubernetes.reconcile import TERMINAL_PHASES, Reconciler
from rheostat.spec import API_GROUP, API_VERSION, InvalidStudyError, StudySpec, study_from_mapping
from rheostat.validation import runtime_problems

STUDIES = "tuningstudies"
TRIALS = "tuningtrials"
# The safety net only: every change that matters arrives as a watch event.
RESYNC_SECONDS = float(os.environ.get("RHEOSTAT_RESYNC_INTERVAL", "60"))
# After a pass that raised (the API server away, say), try again this soon.
ERROR_BACKOFF_SECONDS = 2.0
# Passes at once: mostly waiting on the API server and trial endpoints, not on a CPU.
PASS_THREADS = 32
LOGGER = logging.getLogger(__name__)
RECONCILER: Reconciler | None = None
StudyKey = tuple[str, str]  # (namespace, study name)
WAKE: dict[StudyKey, asyncio.Event] = {}
# Each study's validated spec and the generation it was read from, by uid.
SPECS: dict[str, tuple[Any, StudySpec]] = {}
STUDY_KIND = "TuningStudy"
OWNED = {LABEL_STUDY: kopf.PRESENT}


def reconciler() -> Reconciler:
    global RECONCILER  # noqa: PLW0603 - one per operator process, made after config loads
    if RECONCILER is None:
        RECONCILER = Reconciler(Kube(pooled_api_client(PASS_THREADS)))
    return RECONCILER


def _as_body(body: Mapping[str, Any]) -> kopf.Body:
    """A plain snapshot as the Body that Kopf's event posting expects."""
    return kopf.Body(cast("kopf.RawBody", dict(body)))


def _wake(key: StudyKey) -> asyncio.Event:
    return WAKE.setdefault(key, asyncio.Event())


@kopf.on.startup(id="configure")
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Passes run in threads (asyncio.to_thread); Python's default pool of cpu+4
    # threads would queue studies behind each other's API round trips.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=PASS_THREADS, thread_name_prefix="reconcile")
    )
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="rheostat.dev")
    settings.persistence.diffbase_storage = StudiesOnlyDiffBase(prefix="rheostat.dev")
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 60
    settings.execution.max_workers = 8


class StudiesOnlyDiffBase(kopf.AnnotationsDiffBaseStorage):
    """Kopf's diff base, built for TuningStudies only.

    Kopf builds a diff base (a deep copy of the object, then pruned) for every watch
    event of every watched kind, although only change handlers and daemons use it. Our
    Jobs, pods and TuningTrials are watched only to wake their study, so copying each
    pod on each of its events was pure cost: ~6 % of the operator's CPU in the
    10-studies benchmark. Their essence is empty; a study's is Kopf's own.
    """

    def build(
        self,
        *,
        body: kopf.Body,
        extra_fields: Iterable[str | tuple[str, ...] | list[str] | None] | None = None,
    ) -> kopf.BodyEssence:
        if body.get("kind") != STUDY_KIND:
            return cast("kopf.BodyEssence", {})
        return super().build(body=body, extra_fields=extra_fields)


# ----- what the watches saw, in memory ----------------------------------------------
# Async on purpose: Kopf runs a sync handler in its thread pool, a hop per watch event.


@kopf.index("batch", "v1", "jobs", labels=OWNED, id="jobs")
async def jobs_index(
    *, namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> Any:
    return {(namespace, labels[LABEL_STUDY]): dict(body)}


@kopf.index("", "v1", "pods", labels=OWNED, id="pods")
async def pods_index(
    *, namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> Any:
    return {(namespace, labels[LABEL_STUDY]): dict(body)}


@kopf.index(API_GROUP, API_VERSION, TRIALS, labels=OWNED, id="trials")
async def trials_index(
    *, namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> Any:
    return {(namespace, labels[LABEL_STUDY]): dict(body)}


@kopf.index(API_GROUP, API_VERSION, STUDIES, id="objectives")
async def objectives_index(*, namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> Any:
    """Each study's (first) objective: a study seeded from it must optimise the same."""
    objective = spec.get("objective") or next(iter(spec.get("objectives") or []), None)
    return {(namespace, name): dict(objective)} if objective else None


# ----- what wakes a study -----------------------------------------------------------


@kopf.on.event("batch", "v1", "jobs", labels=OWNED, id="wake-on-job")
async def wake_on_job(*, namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
    _wake((namespace or "", labels[LABEL_STUDY])).set()


@kopf.on.event("", "v1", "pods", labels=OWNED, id="wake-on-pod")
async def wake_on_pod(*, namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
    _wake((namespace or "", labels[LABEL_STUDY])).set()


@kopf.on.event(API_GROUP, API_VERSION, STUDIES, id="wake-on-study")
async def wake_on_study(
    *,
    type: str | None,  # Kopf's name for the watch event's type
    namespace: str | None,
    name: str,
    meta: kopf.Meta,
    status: kopf.Status,
    **_: Any,
) -> None:
    key = (namespace or "", name)
    if type == "DELETED":  # gone for good (the daemon was stopped before): drop its cache
        reconciler().forget(str(meta.get("uid")), key[0], name)
        SPECS.pop(str(meta.get("uid")), None)
        WAKE.pop(key, None)
    # Only a spec change (a new budget) matters; our own status writes do not.
    elif meta.get("generation") != status.get("observedGeneration"):
        _wake(key).set()


# ----- the study's driver -----------------------------------------------------------


@kopf.daemon(API_GROUP, API_VERSION, STUDIES, id="drive", cancellation_timeout=5.0)
async def drive(
    *,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    stopped: kopf.DaemonStopped,
    **indexes: Any,
) -> None:
    """Pass over the study whenever something of it changed, until it is deleted."""
    assert namespace is not None  # TuningStudy is namespaced
    key = (namespace, name)
    jobs: kopf.Index[StudyKey, Any] = indexes["jobs"]
    pods: kopf.Index[StudyKey, Any] = indexes["pods"]
    trials: kopf.Index[StudyKey, Any] = indexes["trials"]
    objectives: kopf.Index[StudyKey, Any] = indexes["objectives"]
    while not stopped:
        # Looked up each time: a predecessor's DELETED event, handled after this study
        # (same name) started, drops the key's Event, and a held one would never fire.
        wake = _wake(key)
        wake.clear()
        # Snapshots are taken here, on the event loop that updates them.
        study = copy.deepcopy(dict(body))
        children = Children(
            jobs={j["metadata"]["name"]: j for j in jobs.get(key, [])},
            pods=list(pods.get(key, [])),
            trials=list(trials.get(key, [])),
            seeds=list(trials.get((namespace, _seed_study(study)), [])),
            seed_objective=next(iter(objectives.get((namespace, _seed_study(study)), [])), None),
        )
        try:
            delay = await asyncio.to_thread(drive_once, study, children)
        except kopf.PermanentError:
            raise
        except Exception:
            LOGGER.exception("%s/%s: the reconcile pass failed; retrying", namespace, name)
            delay = ERROR_BACKOFF_SECONDS
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=delay)


def _seed_study(study: Mapping[str, Any]) -> str:
    """The study named by spec.warmStart.fromStudy ("" for none: no study has that name)."""
    warm = (study.get("spec") or {}).get("warmStart") or {}
    return str(warm.get("fromStudy") or "")


def drive_once(body: Mapping[str, Any], children: Children) -> float:
    """One pass over a study; returns how long it may sleep if nothing happens."""
    status = dict(body.get("status") or {})
    generation = body["metadata"].get("generation")
    if status.get("phase") in TERMINAL_PHASES and status.get("observedGeneration") == generation:
        return RESYNC_SECONDS  # finished, and nobody changed the budget since
    spec = _valid_spec(body)
    new_status, events = reconciler().reconcile(body, spec, children)
    for event in events:
        (kopf.info if event.type == "Normal" else kopf.warn)(
            _as_body(body), reason=event.reason, message=event.message
        )
    _write_status(body, new_status)
    busy = reconciler().busy(body["metadata"]["uid"])
    return spec.metrics.scrape_interval if busy else RESYNC_SECONDS


def _valid_spec(body: Mapping[str, Any]) -> StudySpec:
    """The study's spec, or a Failed status and a permanent error naming every problem.

    A spec is parsed and checked once per generation (the API server bumps it on every
    spec change), not on every pass: that was ~5 % of the operator's CPU.
    """
    uid, generation = str(body["metadata"]["uid"]), body["metadata"].get("generation")
    cached = SPECS.get(uid)
    if cached is not None and cached[0] == generation:
        return cached[1]
    spec = _parse_spec(body)
    SPECS[uid] = (generation, spec)
    return spec


def _parse_spec(body: Mapping[str, Any]) -> StudySpec:
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
        _refuse(body, "InvalidSpec", str(error))
    unavailable = reconciler().asks.unavailable
    if study.spec.algorithm.name in OFFLOADED and unavailable:
        _refuse(body, "BayesianUnavailable", unavailable)
    return study.spec


def _refuse(body: Mapping[str, Any], reason: str, message: str) -> NoReturn:
    """Mark the study Failed with `reason` (a condition and a Warning Event), for good."""
    condition = {"type": "Failed", "status": "True", "reason": reason, "message": message}
    status = {
        **(body.get("status") or {}),  # what it ran so far stays on show
        "phase": "Failed",
        "observedGeneration": body["metadata"].get("generation"),
        "conditions": [condition],
    }
    _write_status(body, status)
    kopf.warn(_as_body(body), reason=reason, message=message)
    raise kopf.PermanentError(f"study refused ({reason}): {message}")


def _write_status(body: Mapping[str, Any], status: Mapping[str, Any]) -> None:
    """Write the study's status ourselves (when it changed), so that a refused write is loud.

    A write the API server refuses is logged and posted as an Event; the next pass
    sees the old status and writes again, so the study is never silently left behind.
    """
    meta = body["metadata"]
    try:
        reconciler().write_status(body, status)
    except ApiException as error:
        message = f"could not write the study's status: {api_message(error)}"
        LOGGER.error("%s/%s: %s", meta["namespace"], meta["name"], message)
        kopf.warn(_as_body(body), reason="StatusWriteFailed", message=message)


@kopf.on.probe(id="studies")
def studies_probe(**_: Any) -> int:
    return len(reconciler().runtimes)
