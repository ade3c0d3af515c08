"""Reading a trial's metrics endpoint stays bounded whatever the trial serves.

Each test runs a real HTTP server on loopback in a thread, misbehaving in one way,
and checks that `scrape` gives None (with a warning naming the limit) in bounded
time and memory, while a normal exposition still reads.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from rheostat.metrics import scrape as scrape_module
from rheostat.metrics.scrape import MAX_RESPONSE_BYTES, TrialSample, scrape

LOGGER = scrape_module.__name__
HEADERS = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"


class RawServer:
    """A one-connection-at-a-time TCP server whose answer is `handle(conn, server)`.

    `sent` counts what the handler managed to write; `stop` ends any endless answer,
    so the thread always finishes when the test does.
    """

    def __init__(self, handle: Callable[[socket.socket, RawServer], None]) -> None:
        self.handle = handle
        self.sent = 0
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/metrics"
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1.0)
                try:
                    conn.recv(65536)  # the request; its content does not matter here
                    self.handle(conn, self)
                except OSError:
                    pass  # the client hung up, which is what a bounded reader does

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        self.sent += len(data)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.listener.close()
        assert not self.thread.is_alive(), "the test server did not stop"


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[socket.socket, RawServer], None]], RawServer]]:
    servers: list[RawServer] = []

    def start(handle: Callable[[socket.socket, RawServer], None]) -> RawServer:
        server = RawServer(handle)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def trickle(conn: socket.socket, server: RawServer, byte: bytes = b"H") -> None:
    while not server.stop.wait(0.2):
        server.send(conn, byte)


def warnings_about(caplog: pytest.LogCaptureFixture, url: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER and r.levelno == logging.WARNING and url in r.getMessage()
    ]


@pytest.mark.timeout(30)
def test_trickled_status_line_is_cut_off_at_the_deadline(
    serve: Callable[..., RawServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(trickle)  # "HHHH..." one byte every 0.2 s, forever
    started = time.monotonic()
    assert scrape(server.url, timeout=1.0) is None
    assert time.monotonic() - started < 5.0
    [warning] = warnings_about(caplog, server.url)
    assert "deadline" in warning


@pytest.mark.timeout(30)
def test_trickled_body_is_cut_off_at_the_deadline(
    serve: Callable[..., RawServer], caplog: pytest.LogCaptureFixture
) -> None:
    def handle(conn: socket.socket, server: RawServer) -> None:
        server.send(conn, HEADERS + b"\r\n")
        trickle(conn, server, b"\n")  # blank lines: a valid exposition, never finished

    server = serve(handle)
    started = time.monotonic()
    assert scrape(server.url, timeout=1.0) is None
    assert time.monotonic() - started < 5.0
    [warning] = warnings_about(caplog, server.url)
    assert "deadline" in warning


@pytest.mark.timeout(30)
def test_endless_body_is_cut_off_at_the_size_cap(
    serve: Callable[..., RawServer], caplog: pytest.LogCaptureFixture
) -> None:
    chunk = b"# padding that parses as a comment\n" * 2000

    def handle(conn: socket.socket, server: RawServer) -> None:
        server.send(conn, HEADERS + b"\r\n")
        while not server.stop.is_set():
            server.send(conn, chunk)

    server = serve(handle)
    started = time.monotonic()
    assert scrape(server.url, timeout=10.0) is None
    assert time.monotonic() - started < 5.0
    # The reader stopped after the cap: what the server got out is the cap plus what
    # the kernel's socket buffers absorbed, far from the endless body.
    assert server.sent < MAX_RESPONSE_BYTES + 32 * 1024 * 1024
    [warning] = warnings_about(caplog, server.url)
    assert "cap" in warning


@pytest.mark.timeout(30)
def test_declared_oversize_body_is_refused_before_reading_it(
    serve: Callable[..., RawServer], caplog: pytest.LogCaptureFixture
) -> None:
    def handle(conn: socket.socket, server: RawServer) -> None:
        server.send(conn, HEADERS + b"Content-Length: 1500000000\r\n\r\n")
        server.stop.wait(5)  # never sends the body

    server = serve(handle)
    started = time.monotonic()
    assert scrape(server.url, timeout=3.0) is None
    assert time.monotonic() - started < 2.0  # refused at once, not at the deadline
    [warning] = warnings_about(caplog, server.url)
    assert "Content-Length" in warning


@pytest.mark.timeout(30)
def test_chunked_body_over_the_cap_is_cut_off(
    serve: Callable[..., RawServer], caplog: pytest.LogCaptureFixture
) -> None:
    piece = b"# pad\n" * 10000

    def handle(conn: socket.socket, server: RawServer) -> None:
        server.send(conn, HEADERS + b"Transfer-Encoding: chunked\r\n\r\n")
        while not server.stop.is_set():
            server.send(conn, b"%x\r\n%s\r\n" % (len(piece), piece))

    server = serve(handle)
    assert scrape(server.url, timeout=10.0) is None
    [warning] = warnings_about(caplog, server.url)
    assert "cap" in warning


@pytest.fixture
def trial_endpoint() -> Iterator[str]:
    """A real prometheus_client server exposing what the trainer SDK exposes."""
    registry = CollectorRegistry()
    metric = Gauge("rheostat_trial_metric", "metric", ["metric"], registry=registry)
    step = Gauge("rheostat_trial_step", "step", registry=registry)
    metric.labels("val_loss").set(0.25)
    metric.labels("accuracy").set(0.875)
    step.set(42)
    httpd, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{httpd.server_port}/metrics"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def test_normal_exposition_parses(trial_endpoint: str) -> None:
    assert scrape(trial_endpoint, timeout=5.0) == TrialSample(
        step=42, metrics={"val_loss": 0.25, "accuracy": 0.875}
    )


def test_chunked_exposition_parses(serve: Callable[..., RawServer]) -> None:
    text = b'rheostat_trial_step 7\nrheostat_trial_metric{metric="loss"} 1.5\n'

    def handle(conn: socket.socket, server: RawServer) -> None:
        halves = (text[:20], text[20:])
        body = b"".join(b"%x\r\n%s\r\n" % (len(h), h) for h in halves) + b"0\r\n\r\n"
        server.send(conn, HEADERS + b"Transfer-Encoding: chunked\r\n\r\n" + body)

    server = serve(handle)
    assert scrape(server.url, timeout=5.0) == TrialSample(step=7, metrics={"loss": 1.5})


@pytest.mark.parametrize(
    "body",
    [
        b"this is not { an exposition\n",
        b'rheostat_trial_metric{metric="loss" 1.5\n',
        b"rheostat_trial_step seven\n",
        b"\xff\xfe\x00garbage",
    ],
)
def test_garbage_body_gives_none(
    serve: Callable[..., RawServer], caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    def handle(conn: socket.socket, server: RawServer) -> None:
        server.send(conn, HEADERS + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    server = serve(handle)
    assert scrape(server.url, timeout=5.0) is None
    [warning] = warnings_about(caplog, server.url)
    assert "exposition" in warning


def test_not_serving_yet_gives_none_quietly(caplog: pytest.LogCaptureFixture) -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    # Nothing listens on the port now: connection refused, the normal start-up case.
    assert scrape(f"http://127.0.0.1:{port}/metrics", timeout=1.0) is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_error_status_gives_none(serve: Callable[..., RawServer]) -> None:
    def handle(conn: socket.socket, server: RawServer) -> None:
        server.send(conn, b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")

    server = serve(handle)
    assert scrape(server.url, timeout=5.0) is None


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/metrics", "file:///metrics", "http://127.0.0.1:notaport/"]
)
def test_unusable_url_gives_none(url: str, caplog: pytest.LogCaptureFixture) -> None:
    assert scrape(url, timeout=1.0) is None
    assert warnings_about(caplog, url)
