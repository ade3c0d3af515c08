"""The GP's asks in a worker process: same answer, bounded, and it survives its worker.

Real worker processes and Optuna's real GP: the first ask of the module pays the
forkserver's torch import, the others fork from it. Timeouts here are generous
bounds for a loaded machine, never measured durations.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.samplers._gp.sampler import _RELATIVE_PARAMS_KEY
from optuna.trial import FrozenTrial

from rheostat.backends.kubernetes.ask_worker import (
    AskError,
    AskReply,
    AskRequest,
    AskWorker,
    OffloadedSampler,
    spec_sampler,
)
from rheostat.space import SearchSpace
from rheostat.spec import AlgorithmSpec

pytestmark = pytest.mark.slow  # real worker processes: torch's import alone takes seconds
GENEROUS = 600.0  # a cold forkserver imports torch: tens of seconds on a busy machine
SPACE = SearchSpace({"x": FloatDistribution(-5.0, 5.0), "n": IntDistribution(1, 8)})
GP = AlgorithmSpec(name="bayesian", seed=7)


class SlowSampler(RandomSampler):
    """A relative ask that never ends (until its worker is killed)."""

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return dict(SPACE.distributions)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        threading.Event().wait(GENEROUS)
        return {"x": 0.0, "n": 1}


class QuickSampler(SlowSampler):
    """A relative ask that answers after `seconds`, as a small GP fit does."""

    seconds = 0.2

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        threading.Event().wait(self.seconds)
        return {"x": 1.0, "n": 2}


class SteadySampler(QuickSampler):
    seconds = 1.2  # under the timeout of the test that uses it, but not twice


class BrokenSampler(SlowSampler):
    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        raise ValueError("no model today")


def _gp_factory(seed: int | None) -> BaseSampler:
    return spec_sampler(GP, SPACE, seed)


def slow_sampler(seed: int | None) -> BaseSampler:
    return SlowSampler(seed=seed)


def quick_sampler(seed: int | None) -> BaseSampler:
    return QuickSampler(seed=seed)


def steady_sampler(seed: int | None) -> BaseSampler:
    return SteadySampler(seed=seed)


def broken_sampler(seed: int | None) -> BaseSampler:
    return BrokenSampler(seed=seed)


@pytest.fixture(scope="module")
def worker() -> Iterator[AskWorker]:
    pool = AskWorker(timeout=GENEROUS)
    yield pool
    pool.shutdown()


def _study(trials: int = 12) -> tuple[optuna.Study, FrozenTrial]:
    """A seeded study with finished trials and one RUNNING trial with no parameters yet."""
    study = optuna.create_study(sampler=RandomSampler(seed=3))
    for _ in range(trials):
        trial = study.ask(SPACE.distributions)
        study.tell(trial, (trial.params["x"] - 1.0) ** 2 + trial.params["n"])
    trial_id = study._storage.create_new_trial(study._study_id)
    return study, study._storage.get_trial(trial_id)


def _fallbacks(worker: AskWorker, reason: str) -> float:
    value = worker.metrics.fallbacks.labels(reason)._value.get()
    return float(value)


def test_a_seeded_ask_in_the_worker_matches_the_same_ask_in_process(worker: AskWorker) -> None:
    study, trial = _study()
    offloaded = OffloadedSampler(_gp_factory(7), _gp_factory, GP.seed, worker)
    remote = offloaded.sample_relative(study, trial, dict(SPACE.distributions))

    twin = optuna.create_study()
    twin.add_trials(study.trials[:-1])
    twin_trial = twin._storage.get_trial(twin._storage.create_new_trial(twin._study_id))
    local = spec_sampler(GP, SPACE, 7 + trial.number).sample_relative(
        twin, twin_trial, dict(SPACE.distributions)
    )

    assert remote
    assert remote == local
    # What the GP leaves on the trial (later asks read running trials' points) came back.
    attrs = study._storage.get_trial(trial._trial_id).system_attrs
    assert any(key.startswith(_RELATIVE_PARAMS_KEY) for key in attrs)


def test_a_worker_that_does_not_answer_costs_one_ask_its_model(worker: AskWorker) -> None:
    study, _ = _study(trials=6)
    hasty = AskWorker(timeout=5.0)  # cold or warm, the slow sampler never answers in time
    study.sampler = OffloadedSampler(SlowSampler(seed=1), slow_sampler, 1, hasty)

    trial = study.ask(SPACE.distributions)  # returns: the independent sampler stepped in

    assert set(trial.params) == {"x", "n"}
    assert _fallbacks(hasty, "timeout") == 1
    assert hasty._pool is None  # the stuck worker was killed, not queued behind
    hasty.timeout = GENEROUS
    assert worker_answers(hasty, study)
    hasty.shutdown()


def test_a_sampler_that_raises_in_the_worker_falls_back(worker: AskWorker) -> None:
    study, _ = _study(trials=6)
    study.sampler = OffloadedSampler(BrokenSampler(seed=1), broken_sampler, None, worker)

    trial = study.ask(SPACE.distributions)

    assert set(trial.params) == {"x", "n"}
    assert _fallbacks(worker, "error") == 1
    assert worker_answers(worker, study)  # an exception is no reason to replace the pool


def test_a_killed_worker_is_replaced(worker: AskWorker) -> None:
    study, _ = _study()
    request = _request(study, _gp_factory, seed=11)
    first = worker.ask(request)
    os.kill(first.pid, signal.SIGKILL)

    outcomes: list[AskReply | str] = []
    for _ in range(2):  # the first may see the death, or the pool may already have
        try:
            outcomes.append(worker.ask(request))
        except AskError as failure:
            outcomes.append(failure.reason)

    last = outcomes[-1]
    assert isinstance(last, AskReply)
    assert last.pid != first.pid
    assert last.params == first.params  # same trials, same seed: same point
    assert all(o == "worker_lost" for o in outcomes[:-1])


def test_only_model_based_studies_are_offloaded_and_only_once() -> None:
    pool = AskWorker()
    gp = optuna.create_study(sampler=spec_sampler(GP, SPACE, 7))
    tpe_spec = AlgorithmSpec(name="tpe", seed=7)
    tpe = optuna.create_study(sampler=spec_sampler(tpe_spec, SPACE, 7))
    own = tpe.sampler

    pool.offload(gp, GP, SPACE)
    wrapped = gp.sampler
    pool.offload(gp, GP, SPACE)
    pool.offload(tpe, tpe_spec, SPACE)

    assert isinstance(wrapped, OffloadedSampler)
    assert gp.sampler is wrapped
    assert tpe.sampler is own
    assert pool._pool is None  # nothing started before the first ask


def _concurrently(worker: AskWorker, requests: list[AskRequest]) -> list[AskReply | str]:
    """Ask each request from its own thread (as passes of several studies do), in order.

    Each thread starts once the previous one has had time to reach the worker.
    """

    def ask(request: AskRequest) -> AskReply | str:
        try:
            return worker.ask(request)
        except AskError as failure:
            return failure.reason

    return _in_threads([functools.partial(ask, r) for r in requests])


def _in_threads(calls: list[Callable[[], Any]]) -> list[Any]:
    outcomes: list[Any] = ["no answer"] * len(calls)

    def run(index: int) -> None:
        outcomes[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
        time.sleep(0.3)
    for thread in threads:
        thread.join(timeout=GENEROUS)
    return outcomes


def test_one_hung_ask_costs_no_other_study_its_model() -> None:
    """Issue 21.7: three healthy studies' asks queued behind a hung one keep their model."""
    worker = AskWorker(timeout=3.0)
    try:
        assert worker.ask(_request(_study(6)[0], quick_sampler)).params  # started, warm
        studies = [_study(6)[0] for _ in range(4)]
        studies[0].sampler = OffloadedSampler(SlowSampler(seed=1), slow_sampler, 1, worker)
        for study in studies[1:]:
            study.sampler = OffloadedSampler(QuickSampler(seed=1), quick_sampler, 1, worker)

        trials = _in_threads([functools.partial(s.ask, SPACE.distributions) for s in studies])

        assert _fallbacks(worker, "timeout") == 1  # the hung ask's, and no other
        assert _fallbacks(worker, "worker_lost") == _fallbacks(worker, "error") == 0
        assert [t.params for t in trials[1:]] == [{"x": 1.0, "n": 2}] * 3  # the model's point
    finally:
        worker.shutdown()


def test_an_asks_timeout_runs_from_its_start_not_from_its_submission() -> None:
    """Two 1.2 s asks on one worker with a 2 s timeout: the second waits, then answers."""
    worker = AskWorker(timeout=2.0, workers=1)
    try:
        assert worker.ask(_request(_study(6)[0], quick_sampler)).params  # started, warm
        requests = [_request(_study(6)[0], steady_sampler) for _ in range(3)]
        outcomes = _concurrently(worker, requests)
        assert all(isinstance(o, AskReply) for o in outcomes), outcomes
    finally:
        worker.shutdown()


def test_innocent_asks_in_a_pool_replaced_for_a_hung_one_are_resubmitted() -> None:
    """With two workers, the healthy ask running beside a hung one is not lost with it."""
    worker = AskWorker(timeout=3.0, workers=2)
    try:
        assert worker.ask(_request(_study(6)[0], quick_sampler)).params
        hung = _request(_study(6)[0], slow_sampler)
        long_healthy = [_request(_study(6)[0], steady_sampler) for _ in range(3)]
        outcomes = _concurrently(worker, [hung, *long_healthy])
        assert outcomes[0] == "timeout"
        assert all(isinstance(o, AskReply) for o in outcomes[1:]), outcomes
    finally:
        worker.shutdown()


COLD_START = """
from rheostat.backends.kubernetes.ask_worker import AskError, AskWorker
from tests.unit.test_ask_worker import _request, _study, quick_sampler

study, _ = _study(6)
impatient = AskWorker(timeout=600.0, startup_timeout=0.01)
try:
    impatient.ask(_request(study, quick_sampler))
    print("started at once?")
except AskError as failure:
    print("startup", failure.reason, "start" in str(failure))
impatient.shutdown()
# A cold start (the forkserver imports torch: seconds) is not the ask's time.
worker = AskWorker(timeout=1.0, startup_timeout=600.0)
print("answered", worker.ask(_request(study, quick_sampler)).params)
worker.shutdown()
"""


def test_starting_the_worker_is_bounded_apart_from_the_ask() -> None:
    """A fresh operator process: torch's import in the forkserver has its own bound."""
    run = subprocess.run(
        [sys.executable, "-c", COLD_START],
        capture_output=True,
        text=True,
        timeout=GENEROUS,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "startup timeout True" in run.stdout, run.stdout
    assert "answered {'x': 1.0, 'n': 2}" in run.stdout, run.stdout


def _request(study: optuna.Study, factory: Any, seed: int | None = 5) -> AskRequest:
    trial = study._storage.get_trial(study._storage.create_new_trial(study._study_id))
    return AskRequest(
        factory=factory,
        seed=seed,
        directions=study.directions,
        trials=study.get_trials(deepcopy=False),
        number=trial.number,
        search_space=dict(SPACE.distributions),
    )


def worker_answers(worker: AskWorker, study: optuna.Study) -> bool:
    return bool(worker.ask(_request(study, _gp_factory)).params)


OWNER = """
import sys
from rheostat.backends.kubernetes.ask_worker import AskRequest, AskWorker
from tests.unit.test_ask_worker import _gp_factory, _request, _study

worker = AskWorker(timeout=600.0)
study, _ = _study()
reply = worker.ask(_request(study, _gp_factory))
print(reply.pid, flush=True)
sys.stdin.read()  # until killed
"""


def test_the_worker_ends_when_the_operator_is_killed(tmp_path: Any) -> None:
    """SIGKILL gives the operator no chance to stop its pool: the worker must notice."""
    with subprocess.Popen(
        [sys.executable, "-c", OWNER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    ) as owner:
        try:
            assert owner.stdout is not None
            worker_pid = int(owner.stdout.readline())
            os.kill(worker_pid, 0)  # running
            owner.kill()
            owner.wait(timeout=60)
            deadline = time.monotonic() + 60
            while _alive(worker_pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not _alive(worker_pid), "the ask worker outlived its operator"
        finally:
            owner.kill()


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for the forkserver to reap it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
