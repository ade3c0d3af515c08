"""Read a trial's metrics in the Prometheus text format.

Trials serve `rheostat_trial_metric{metric="<name>"}` and `rheostat_trial_step`
(see docs/contracts.md). The tuner reads them straight from the trial's endpoint
by default, so pruning works with no Prometheus server at all; the parsing is
prometheus_client's own, so any exposition a real client library writes is read.

The endpoint belongs to a tenant's trial and the reader is the (possibly cluster-wide)
operator, so a read is bounded in both time and memory: a trial that trickles bytes
or streams an endless body loses its sample, never the operator.
"""

from __future__ import annotations

import http.client
import logging
import math
import socket
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

METRIC_FAMILY = "rheostat_trial_metric"
STEP_FAMILY = "rheostat_trial_step"

# A trial exposes a handful of gauges (one per reported metric plus the step, and
# whatever process/GC collectors its client library adds): a few KiB at most. 4 MiB
# leaves room for a trainer that also exports many metrics of its own, while keeping
# the operator's memory per scrape small however many trials it watches.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
_CHUNK_BYTES = 64 * 1024

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialSample:
    """What one read of a trial's metrics says: its step and latest values."""

    step: int | None
    metrics: dict[str, float] = field(default_factory=dict)


def parse_trial_metrics(text: str) -> TrialSample:
    """Parse an exposition into a TrialSample; unrelated families are ignored.

    Raises ValueError (from prometheus_client) on text that is not an exposition.
    """
    step: int | None = None
    metrics: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == STEP_FAMILY and math.isfinite(sample.value):
                step = int(sample.value)
            elif sample.name == METRIC_FAMILY and "metric" in sample.labels:
                metrics[sample.labels["metric"]] = sample.value
    return TrialSample(step=step, metrics=metrics)


class _UnusableError(Exception):
    """The trial answered, but not with something to read; the message says why."""


class _DeadlineSocket(socket.socket):
    """A socket whose every read and write may only use the time left before a deadline.

    A plain socket timeout bounds each read, so a server sending one byte per read
    keeps a reader forever. http.client reads the status line, headers and body
    through this socket, so arming each call here bounds the whole request.
    """

    def __init__(self, fileno: int, deadline: float) -> None:
        super().__init__(fileno=fileno)
        self.deadline = deadline

    def _arm(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        self.settimeout(left)

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0, /) -> int:
        self._arm()
        return super().recv_into(buffer, nbytes, flags)

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        self._arm()
        return super().recv(bufsize, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0, /) -> None:
        self._arm()
        super().sendall(data, flags)


class _DeadlineConnection(http.client.HTTPConnection):
    """An HTTP connection whose connect, request and response share one deadline.

    Name resolution is not bounded (getaddrinfo cannot be interrupted), but trial
    endpoints are pod or loopback IP addresses, which resolve without a lookup.
    """

    def __init__(self, host: str, port: int, deadline: float) -> None:
        super().__init__(host, port)
        self.deadline = deadline

    def connect(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed before connecting")
        plain = socket.create_connection((self.host, self.port), timeout=left)
        self.sock = _DeadlineSocket(plain.detach(), self.deadline)


def _read_body(response: http.client.HTTPResponse) -> bytes:
    """The body, in chunks, refusing one over MAX_RESPONSE_BYTES before holding it all."""
    if response.length is not None and response.length > MAX_RESPONSE_BYTES:
        raise _UnusableError(
            f"its Content-Length {response.length} is over the {MAX_RESPONSE_BYTES}-byte cap"
        )
    body = bytearray()
    while chunk := response.read(_CHUNK_BYTES):
        body += chunk
        if len(body) > MAX_RESPONSE_BYTES:
            raise _UnusableError(f"the response is over the {MAX_RESPONSE_BYTES}-byte cap")
    return bytes(body)


def _fetch(host: str, port: int, path: str, timeout: float) -> bytes | None:
    """The body of a 200 response to GET path, all within `timeout` seconds.

    None (another status) or OSError or HTTPException when the trial is not serving
    (yet); _UnusableError when it answers but goes over the deadline or the size cap.
    """
    connection = _DeadlineConnection(host, port, time.monotonic() + timeout)
    try:
        # Refused, unreachable or slow to accept is the ordinary "not serving yet".
        connection.connect()
        try:
            connection.request("GET", path, headers={"Accept": "text/plain"})
            response = connection.getresponse()
            try:
                if response.status != http.client.OK:
                    return None
                return _read_body(response)
            finally:
                response.close()
        except TimeoutError as error:
            raise _UnusableError(f"no complete response within the {timeout}s deadline") from error
    finally:
        connection.close()


def scrape(url: str, timeout: float = 1.0) -> TrialSample | None:
    """Fetch and parse one endpoint; None while the trial is not serving yet.

    `timeout` bounds the whole request (connect, headers and body), and the body is
    capped at MAX_RESPONSE_BYTES. A trial that goes over either, or serves something
    that is not an exposition, also gives None, with a warning naming the url and why,
    so a misbehaving trial loses its samples rather than stalling or exhausting the
    operator that reads every trial.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or 80
    except ValueError as error:
        log.warning("scrape %s: ignored: not a usable url: %s", url, error)
        return None
    if parts.scheme != "http" or not parts.hostname:
        # Trials serve plain HTTP (docs/contracts.md); only that read is bounded here.
        log.warning("scrape %s: ignored: only http://host endpoints are read", url)
        return None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        body = _fetch(parts.hostname, port, path, timeout)
    except _UnusableError as why:
        log.warning("scrape %s: ignored: %s", url, why)
        return None
    except (OSError, http.client.HTTPException) as error:
        log.debug("scrape %s: not serving: %s", url, error)
        return None
    if body is None:
        return None
    try:
        return parse_trial_metrics(body.decode("utf-8", errors="replace"))
    except Exception as error:
        # A tenant's text given to a third-party parser: prometheus_client raises
        # ValueError on malformed text, and anything else it raises on input it did not
        # expect must still mean "unreadable", never a crashed operator.
        log.warning("scrape %s: ignored: not a Prometheus exposition: %s", url, error)
        return None
