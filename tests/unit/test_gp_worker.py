"""The GP asks served from another container: the same answer over the socket, and a
lost worker costs an ask its model, never the study.

A real AskServer (its own real worker processes and Optuna's real GP) on a Unix
socket in a temporary folder, asked by the client the operator uses.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from rheostat.backends.kubernetes.ask_worker import (
    AskError,
    AskReply,
    AskWorker,
    OffloadedSampler,
    spec_sampler,
)
from rheostat.backends.kubernetes.gp_worker import (
    NO_GP,
    SOCKET_ENV,
    AskServer,
    NoGP,
    SocketAskClient,
    ask_backend,
)
from tests.unit.test_ask_worker import (
    GENEROUS,
    GP,
    SPACE,
    _gp_factory,
    _request,
    _study,
    broken_sampler,
)

pytestmark = pytest.mark.slow  # real worker processes: torch's import alone takes seconds


@pytest.fixture(scope="module")
def socket_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A served socket; the server imports torch before it binds, as the sidecar does."""
    path = str(tmp_path_factory.mktemp("gp") / "ask.sock")
    server = AskServer(path, AskWorker(timeout=GENEROUS))
    server.listen()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path
    server.close()
    thread.join(timeout=GENEROUS)
    assert not thread.is_alive()


def test_a_seeded_ask_over_the_socket_matches_the_same_ask_in_process(socket_path: str) -> None:
    study, trial = _study()
    client = SocketAskClient(socket_path, timeout=GENEROUS)
    offloaded = OffloadedSampler(_gp_factory(7), _gp_factory, GP.seed, client)
    remote = offloaded.sample_relative(study, trial, dict(SPACE.distributions))

    twin = optuna.create_study()
    twin.add_trials(study.trials[:-1])
    twin_trial = twin._storage.get_trial(twin._storage.create_new_trial(twin._study_id))
    local = spec_sampler(GP, SPACE, 7 + trial.number).sample_relative(
        twin, twin_trial, dict(SPACE.distributions)
    )

    assert remote
    assert remote == local
    assert client.metrics.seconds._sum.get() > 0  # the operator's histogram saw the ask


def test_asks_from_many_threads_are_all_answered(socket_path: str) -> None:
    study, _ = _study()
    client = SocketAskClient(socket_path, timeout=GENEROUS)
    requests = [_request(study, _gp_factory, seed=s) for s in range(3)]
    replies: list[AskReply | None] = [None] * len(requests)

    def ask(i: int) -> None:
        replies[i] = client.ask(requests[i])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=GENEROUS)

    assert all(isinstance(r, AskReply) and r.params for r in replies)


def test_a_sampler_that_raises_in_the_worker_comes_back_as_its_error(socket_path: str) -> None:
    study, _ = _study(trials=6)
    client = SocketAskClient(socket_path, timeout=GENEROUS)

    with pytest.raises(AskError) as raised:
        client.ask(_request(study, broken_sampler))

    assert raised.value.reason == "error"
    assert "no model today" in str(raised.value)
    assert client.ask(_request(study, _gp_factory)).params  # the connection served on


def test_no_worker_listening_costs_the_ask_its_model_not_the_study(tmp_path: Path) -> None:
    study, _ = _study(trials=6)
    client = SocketAskClient(str(tmp_path / "nobody.sock"), timeout=5.0)
    study.sampler = OffloadedSampler(_gp_factory(1), _gp_factory, 1, client)

    trial = study.ask(SPACE.distributions)  # returns: the independent sampler stepped in

    assert set(trial.params) == {"x", "n"}
    assert client.metrics.fallbacks.labels("worker_lost")._value.get() == 1


def test_asks_go_to_the_socket_when_one_is_configured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(SOCKET_ENV, str(tmp_path / "ask.sock"))

    backend = ask_backend()

    assert isinstance(backend, SocketAskClient)
    assert backend.path == str(tmp_path / "ask.sock")
    assert backend.unavailable is None


def test_without_socket_or_torch_model_based_studies_are_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The operator image: no torch installed (find_spec answers as it does there)."""
    monkeypatch.delenv(SOCKET_ENV, raising=False)
    real = importlib.util.find_spec

    def no_torch(name: str, *args: Any) -> Any:
        return None if name == "torch" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", no_torch)

    backend = ask_backend()

    assert isinstance(backend, NoGP)
    assert backend.unavailable == NO_GP
    assert "gpWorker.enabled=true" in NO_GP
    with pytest.raises(AskError):
        backend.ask(_request(_study(trials=3)[0], _gp_factory))


def test_with_torch_and_no_socket_asks_stay_in_a_local_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(SOCKET_ENV, raising=False)

    backend = ask_backend()

    assert isinstance(backend, AskWorker)
    assert backend.unavailable is None
