"""Keep an :class:`ObjectCache` current with one watch per resource (the dashboard's feed).

Each resource (TuningStudies, TuningTrials) gets one thread: one LIST to start (and
again only when the API server says the watch's resourceVersion is too old, 410
Gone), then a WATCH from that version, resumed from the last version seen when the
server ends it. Requests to the dashboard read the cache and never reach the API.
An error (RBAC, a lost connection) is logged and retried after a pause on the
thread's stop event, never a sleep: stopping the watch ends the pause at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from rheostat.backends.kubernetes.kube import STUDIES, TRIALS, api_message
from rheostat.backends.kubernetes.live import STUDIES_KIND, TRIALS_KIND, ObjectCache
from rheostat.spec import API_GROUP, API_VERSION

LOGGER = logging.getLogger(__name__)

WATCH_SECONDS = 240  # the server ends each WATCH after this; it is resumed, not re-listed
RETRY_SECONDS = 5.0
_PLURALS = {STUDIES_KIND: STUDIES, TRIALS_KIND: TRIALS}


class ClusterWatch:
    """One watch thread per resource feeding `cache`; `namespace=None` watches them all."""

    def __init__(self, api: client.ApiClient, namespace: str | None, cache: ObjectCache) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.cache = cache
        self._stop = threading.Event()
        self._synced = {kind: threading.Event() for kind in _PLURALS}
        # Set once a resource was listed or its first attempt failed: no waiting out a
        # refusal (RBAC) before the user hears of it.
        self._settled = {kind: threading.Event() for kind in _PLURALS}
        self.errors: dict[str, str] = {}  # the last error of each resource, for the user
        self._threads = [
            threading.Thread(target=self._run, args=(kind,), name=f"watch-{kind}", daemon=True)
            for kind in _PLURALS
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()

    def wait_synced(self, timeout: float) -> bool:
        """True once every resource was listed (the dashboard shows them all at once);
        False at once when one failed (see `errors`), or after `timeout` seconds."""
        settled = all(event.wait(timeout) for event in self._settled.values())
        return settled and all(event.is_set() for event in self._synced.values())

    def _list(self, kind: str, **kwargs: Any) -> Any:
        plural = _PLURALS[kind]
        if self.namespace is None:
            return self.custom.list_cluster_custom_object(API_GROUP, API_VERSION, plural, **kwargs)
        return self.custom.list_namespaced_custom_object(
            API_GROUP, API_VERSION, self.namespace, plural, **kwargs
        )

    def _list_function(self, kind: str) -> Callable[..., Any]:
        if self.namespace is None:
            return self.custom.list_cluster_custom_object
        return self.custom.list_namespaced_custom_object

    def _run(self, kind: str) -> None:
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    listed = self._list(kind)
                    self.cache.replace(kind, listed["items"])
                    version = str(listed["metadata"]["resourceVersion"])
                    self.errors.pop(kind, None)
                    self._synced[kind].set()
                    self._settled[kind].set()
                version = self._follow(kind, version)
            except ApiException as error:
                if error.status == 410:  # too old to resume: list again
                    version = None
                    continue
                self._failed(kind, f"cannot watch {_PLURALS[kind]}: {api_message(error)}")
            except (urllib3.exceptions.HTTPError, OSError) as error:
                self._failed(kind, f"lost the watch on {_PLURALS[kind]}: {error}")

    def _follow(self, kind: str, version: str) -> str:
        """Apply the watch's events to the cache; returns the last version seen."""
        args: tuple[str, ...] = (API_GROUP, API_VERSION)
        if self.namespace is not None:
            args += (self.namespace,)
        # The client's watch module is untyped.
        stream = watch.Watch()  # type: ignore[no-untyped-call]
        for event in stream.stream(  # type: ignore[no-untyped-call]
            self._list_function(kind),
            *args,
            _PLURALS[kind],
            resource_version=version,
            timeout_seconds=WATCH_SECONDS,
            allow_watch_bookmarks=True,
        ):
            obj = event["object"]
            version = str(obj["metadata"].get("resourceVersion") or version)
            if event["type"] == "DELETED":
                self.cache.delete(kind, obj)
            elif event["type"] in {"ADDED", "MODIFIED"}:
                self.cache.put(kind, obj)
            if self._stop.is_set():
                stream.stop()  # type: ignore[no-untyped-call]
        return version

    def _failed(self, kind: str, message: str) -> None:
        if self.errors.get(kind) != message:
            LOGGER.warning("%s (retrying every %gs)", message, RETRY_SECONDS)
        self.errors[kind] = message
        self._settled[kind].set()
        self._stop.wait(RETRY_SECONDS)
