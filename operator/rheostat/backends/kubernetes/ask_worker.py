"""Model-based asks in a worker process, so a GP fit never stalls the operator.

The operator passes over every study in threads of one process. A GP ask is a model
fit plus an acquisition search that holds the GIL for up to seconds (and imports
torch, ~0.6 GB): every other study's pass waits behind it. Here the expensive half of
an ask, the sampler's `sample_relative`, runs in a long-lived worker process instead:
the study's trials (picklable FrozenTrials), its directions and the relative search
space go over, the worker rebuilds an in-memory study, builds the same sampler and
returns the parameters (plus the system attributes Optuna's GP leaves on the trial,
which later asks read to see the running trials' points).

An ask is bounded: a worker that does not answer within the timeout, dies or raises
costs that one ask its model. It falls back to the sampler's independent (random)
sampling with a warning and a metric, the pool is replaced, and no study waits on it
again. The timeout counts an ask's own run only: at most one ask per worker is in
the pool, the others wait for a free worker outside it, and an ask that was running
beside a hung one when its pool was killed is submitted again. So a hang costs the
asks queued behind it time, never their model. Starting the workers (the first start
imports torch in the forkserver) has its own bound, `RHEOSTAT_ASK_STARTUP_TIMEOUT`.

A seeded study stays reproducible: the worker's sampler is seeded from the
study's seed and the trial's number, so the same trials always give the same point,
across operator restarts too. Only the Kubernetes backend offloads; `rheostat run`
asks in its own process, where nothing else waits.

Workers come from a forkserver that has torch and Optuna imported already (never a
fork of this threaded process), run at a lower CPU priority than the operator, and
are replaced every `TASKS_PER_POOL` asks, so a worker's RSS does not stay at a GP
fit's peak. (Python 3.11's own `max_tasks_per_child` can deadlock a backlog,
cpython gh-115634, hence the pool-level recycling.)
"""

from __future__ import annotations

import abc
import functools
import logging
import multiprocessing
import os
import select
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from prometheus_client import CollectorRegistry, Counter, Histogram

from rheostat.sampling import make_sampler
from rheostat.space import SearchSpace
from rheostat.spec import AlgorithmSpec

LOGGER = logging.getLogger(__name__)
# Algorithms whose asks are worth a process hop: the GP's take up to seconds. TPE,
# CMA-ES, QMC, random and grid ask in milliseconds, less than shipping the trials.
# They are also the ones that need torch (Optuna's GPSampler), which the operator
# image does not carry: without a GP worker (gp_worker.py) they cannot run at all.
OFFLOADED = frozenset({"bayesian"})
ASK_TIMEOUT_SECONDS = float(os.environ.get("RHEOSTAT_ASK_TIMEOUT", "60"))
# Starting the workers: the first start imports torch in the forkserver (seconds,
# more on a loaded node), which is no ask's time and has its own bound.
STARTUP_TIMEOUT_SECONDS = float(os.environ.get("RHEOSTAT_ASK_STARTUP_TIMEOUT", "300"))
ASK_WORKERS = int(os.environ.get("RHEOSTAT_ASK_WORKERS", "1"))
# How often an ask innocent of a hang is submitted again after its pool was replaced.
RESUBMITS = 2
TASKS_PER_POOL = int(os.environ.get("RHEOSTAT_ASK_TASKS_PER_POOL", "25"))
# Below the operator's own priority: its passes come first when CPUs are short.
WORKER_NICENESS = 5
_PRELOAD = ["rheostat.backends.kubernetes.ask_worker", "torch"]

SamplerFactory = Callable[[int | None], BaseSampler]


class AskError(Exception):
    """The worker gave no parameters; `reason` is a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class AskRequest:
    """Everything a worker needs to repeat the ask (all picklable)."""

    factory: SamplerFactory  # a module-level function or partial: pickled by name
    seed: int | None
    directions: Sequence[StudyDirection]
    trials: Sequence[FrozenTrial]
    number: int
    search_space: dict[str, BaseDistribution]


@dataclass(frozen=True)
class AskReply:
    params: dict[str, Any]
    system_attrs: dict[str, Any]  # set on the trial by the sampler
    seconds: float
    pid: int


def spec_sampler(algorithm: AlgorithmSpec, space: SearchSpace, seed: int | None) -> BaseSampler:
    """The spec's sampler with another seed: the worker's default factory."""
    return make_sampler(algorithm.model_copy(update={"seed": seed}), space)


def remote_ask(request: AskRequest) -> AskReply:
    """In the worker: rebuild the study and run the sampler's relative ask on it."""
    started = time.perf_counter()
    sampler = request.factory(request.seed)
    study = optuna.create_study(directions=list(request.directions), sampler=sampler)
    study.add_trials(request.trials)
    trial = study._storage.get_trial(
        study._storage.get_trial_id_from_study_id_trial_number(study._study_id, request.number)
    )
    before = dict(trial.system_attrs)
    params = sampler.sample_relative(study, trial, request.search_space)
    after = study._storage.get_trial_system_attrs(trial._trial_id)
    changed = {k: v for k, v in after.items() if k not in before or before[k] != v}
    return AskReply(params, changed, time.perf_counter() - started, os.getpid())


def _init_worker(operator_pid: int) -> None:
    os.nice(WORKER_NICENESS)
    threading.Thread(target=_exit_with, args=(operator_pid,), daemon=True).start()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" per ask


def _exit_with(operator_pid: int) -> None:
    """End this worker when the operator process ends, however it ends.

    A pool's workers wait for work on a pipe whose ends they hold themselves, and the
    forkserver lives as long as they do: an operator killed with SIGKILL (outside a
    container, where nothing reaps the rest) left both running, ~0.5 GB each. The
    operator is not this worker's parent (the forkserver is), so no parent-death
    signal reaches it; its pidfd turns readable the moment it exits.
    """
    try:
        pidfd = os.pidfd_open(operator_pid)
    except ProcessLookupError:
        os._exit(0)
    select.select([pidfd], [], [])
    os._exit(0)


class AskMetrics:
    """The worker's cost and its failures, on the operator's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.seconds = Histogram(
            "rheostat_ask_worker_seconds",
            "Time of a model-based ask in the worker process (fit and acquisition).",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60),
            registry=registry,
        )
        self.fallbacks = Counter(
            "rheostat_ask_fallbacks_total",
            "Asks that fell back to independent sampling: timeout, worker_lost or error.",
            ["reason"],
            registry=registry,
        )


class _Pool:
    """One generation of worker processes, and whether it has started.

    Starting is slow the first time (the forkserver imports torch, and the thread
    that spawns the first worker blocks until it has), so it runs in a thread of its
    own, bounded by the startup timeout instead of any ask's.
    """

    def __init__(self, executor: ProcessPoolExecutor, startup_timeout: float) -> None:
        self.executor = executor
        self.deadline = time.monotonic() + startup_timeout
        self.started = threading.Event()
        self.failure: BaseException | None = None
        self.submitted = 0
        # Set when this pool is killed for one hung ask: the others in it are innocent.
        self.killed_for_a_hang = False
        threading.Thread(target=self._start, name="ask-worker-start", daemon=True).start()

    def _start(self) -> None:
        try:
            self.executor.submit(os.getpid).result()
        except BaseException as error:  # handed to every ask that waits for the start
            self.failure = error
        self.started.set()

    def wait_started(self) -> None:
        """Return once the workers run, or AskError when they did not start in time."""
        if not self.started.wait(max(0.0, self.deadline - time.monotonic())):
            raise AskError("timeout", "the ask worker did not start in time (importing torch)")
        if self.failure is not None:
            raise AskError("worker_lost", f"the ask worker did not start: {self.failure!r}")


class AskBackend(abc.ABC):
    """Where a study's model-based asks run: a process pool here (AskWorker) or the
    GP worker container next to the operator (gp_worker.SocketAskClient).

    `unavailable` says why no model-based ask can run at all (None when they can):
    the operator refuses such studies instead of sampling them at random unsaid.
    """

    unavailable: str | None = None

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.metrics = AskMetrics(registry or CollectorRegistry())

    @abc.abstractmethod
    def ask(self, request: AskRequest) -> AskReply:
        """The worker's answer, or AskError (the caller falls back to independent sampling)."""

    def offload(self, study: optuna.Study, algorithm: AlgorithmSpec, space: SearchSpace) -> None:
        """Route the study's model-based asks through this backend (idempotent).

        Called before each pass's asks: the engine swaps in a new sampler when an LR
        range test narrows the space, and that one is wrapped on the next pass.
        """
        if algorithm.name not in OFFLOADED or isinstance(study.sampler, OffloadedSampler):
            return
        factory = functools.partial(spec_sampler, algorithm, space)
        study.sampler = OffloadedSampler(study.sampler, factory, algorithm.seed, self)

    def shutdown(self) -> None:  # noqa: B027 - a no-op for backends that hold nothing
        """Stop asking (operator exit): an ask in flight or waiting falls back."""


class AskWorker(AskBackend):
    """A small process pool for asks, replaced when it hangs, dies or has aged.

    Thread-safe: any pass thread may ask. Nothing starts until the first ask.
    At most `workers` asks are in the pool at once; the others wait here for a
    free worker, so an ask's timeout counts only its own run: a queue behind a hung
    ask costs the queued asks time, never their model. Starting the workers has
    its own bound (`startup_timeout`): the first start imports torch.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        workers: int = ASK_WORKERS,
        timeout: float = ASK_TIMEOUT_SECONDS,
        startup_timeout: float = STARTUP_TIMEOUT_SECONDS,
        tasks_per_pool: int = TASKS_PER_POOL,
    ) -> None:
        self.workers = max(1, workers)
        self.timeout = timeout
        self.startup_timeout = startup_timeout
        self.tasks_per_pool = max(1, tasks_per_pool)
        super().__init__(registry)
        self._lock = threading.Lock()
        self._free_workers = threading.Semaphore(self.workers)
        self._pool: _Pool | None = None
        self._closed = False

    def ask(self, request: AskRequest) -> AskReply:
        """The worker's answer within the timeout, or AskError (the pool is replaced).

        The timeout starts when a worker is free and takes the ask. An ask that was
        in a pool killed for another ask's hang is submitted again to the new pool.
        """
        with self._free_workers:
            for _ in range(RESUBMITS + 1):
                pool = self._started_pool()
                try:
                    future = pool.executor.submit(remote_ask, request)
                except RuntimeError as error:  # broke, aged or replaced since: not this ask
                    if isinstance(error, BrokenProcessPool):
                        self._replace(pool)
                    continue
                try:
                    reply = future.result(timeout=self.timeout)
                except FutureTimeout:
                    pool.killed_for_a_hang = True
                    self._replace(pool)  # the worker may be stuck for good
                    raise AskError("timeout", f"no answer within {self.timeout:g} s") from None
                except (BrokenProcessPool, CancelledError) as error:
                    if pool.killed_for_a_hang:
                        continue  # killed for another ask's hang: ask again in the new pool
                    self._replace(pool)
                    detail = str(error) or "the worker process died"
                    raise AskError("worker_lost", detail) from None
                except Exception as error:  # the sampler raised in the worker
                    raise AskError("error", f"{type(error).__name__}: {error}") from None
                self.metrics.seconds.observe(reply.seconds)
                return reply
        raise AskError("worker_lost", f"its pool went away {RESUBMITS + 1} times")

    def start(self) -> None:
        """Start the workers now rather than at the first ask (the GP worker container
        imports torch before it reports ready); AskError if they do not start in time."""
        self._started_pool()

    def shutdown(self) -> None:
        """Stop the workers now (operator exit): an ask in flight or waiting falls back."""
        with self._lock:
            pool, self._pool, self._closed = self._pool, None, True
        if pool is not None:
            _terminate(pool.executor)

    def _started_pool(self) -> _Pool:
        """The current pool (a new one if none, or it has aged), once it has started."""
        with self._lock:
            if self._closed:
                raise AskError("error", "the ask worker is shut down")
            if self._pool is not None and self._pool.submitted >= self.tasks_per_pool:
                # Age out: asks in flight still finish there, the workers then exit.
                self._pool.executor.shutdown(wait=False)
                self._pool = None
            if self._pool is None:
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(_PRELOAD)
                executor = ProcessPoolExecutor(
                    self.workers,
                    mp_context=context,
                    initializer=_init_worker,
                    initargs=(os.getpid(),),
                )
                self._pool = _Pool(executor, self.startup_timeout)
            pool = self._pool
            pool.submitted += 1
        pool.wait_started()
        return pool

    def _replace(self, pool: _Pool) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        _terminate(pool.executor)


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Kill a pool's workers (a stuck GP fit ignores a polite shutdown)."""
    processes = list((pool._processes or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.kill()


class OffloadedSampler(BaseSampler):
    """A sampler whose relative asks run in an AskWorker; all else stays in-process.

    `inner` is the study's own sampler: it infers the relative search space, draws
    the independent (fallback) parameters and sees the trial lifecycle, as before.
    """

    def __init__(
        self,
        inner: BaseSampler,
        factory: SamplerFactory,
        seed: int | None,
        worker: AskBackend,
    ) -> None:
        self.inner = inner
        self.factory = factory
        self.seed = seed
        self.worker = worker

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        search_space: dict[str, BaseDistribution],
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        request = AskRequest(
            factory=self.factory,
            seed=None if self.seed is None else self.seed + trial.number,
            directions=study.directions,
            trials=study.get_trials(deepcopy=False),
            number=trial.number,
            search_space=search_space,
        )
        try:
            reply = self.worker.ask(request)
        except AskError as failure:
            self.worker.metrics.fallbacks.labels(failure.reason).inc()
            LOGGER.warning(
                "trial %d: the model-based ask failed (%s); sampling it independently",
                trial.number,
                failure,
            )
            return {}
        for key, value in reply.system_attrs.items():
            study._storage.set_trial_system_attr(trial._trial_id, key, value)
        return reply.params

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
