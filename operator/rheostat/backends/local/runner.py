"""Run a whole study on this machine: the engine's actions as local processes.

The loop is the local twin of the operator's reconcile: read what the processes did
(exits, termination messages, metrics scraped from their endpoints), hand it to the
engine, carry out the engine's answer (start, stop), repeat. The Optuna study lives
in SQLite in the work folder, so running the same command again resumes it; a lock
on the folder keeps a second run from resuming it while the first still runs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType

import optuna

from rheostat import lr_phase, objectives
from rheostat.backends.local.guard import GroupGuard
from rheostat.backends.local.lock import WorkdirBusyError, WorkdirLock
from rheostat.backends.local.process import (
    PortAllocator,
    TrialProcess,
    TrialStartError,
    command_problem,
    read_termination_message,
    stop_all,
)
from rheostat.backends.local.progress import ProgressDisplay
from rheostat.backends.local.seeds import SeedError, load_seeds, report_skipped
from rheostat.backends.local.storage import StudyFileError, is_disk_full, open_storage
from rheostat.contract import (
    LR_RANGE_TEST_NUMBER,
    MODE_LR_RANGE_TEST,
    last_step,
    lr_curve,
    trial_env,
)
from rheostat.engine import (
    ATTR_SPEC,
    Action,
    Engine,
    Finished,
    LrRangeFinished,
    Progress,
    Started,
    StartLrRangeTest,
    StartTrial,
    StopTrial,
)
from rheostat.ledger import ATTR_GOALS
from rheostat.metrics.scrape import scrape
from rheostat.spec import SpecProblem, TuningStudy
from rheostat.warm_start import needs_seeds

POLL_SECONDS = 0.1

# Each stops every trial and leaves the study resumable (exit 130).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class LocalRunError(Exception):
    """A study that cannot run locally; the message says what to do."""


class WorkdirError(LocalRunError):
    """The work folder cannot hold the study: a file, read-only, or its disk is full.

    Raised before anything ran, or once every trial has been stopped: what the study
    stored so far stays in study.db, and the same command resumes it.
    """


def workdir_error(workdir: Path, error: BaseException) -> WorkdirError:
    """The message for a work folder that failed with `error` (an OSError, or
    Optuna's StorageInternalError from its SQLite file)."""
    if is_disk_full(error):
        return WorkdirError(
            f"the disk holding {workdir} is full (no space left); what the study finished "
            "is kept in study.db. Free some space and run the same command again to resume."
        )
    if workdir.exists() and not workdir.is_dir():
        why = "it is a file, not a folder"
    elif isinstance(error, OSError):
        why = error.strerror or str(error)
        if error.filename and Path(error.filename) != workdir:
            why += f" ({error.filename})"
    else:
        cause = error.__cause__ or error
        why = f"its study database failed: {getattr(cause, 'orig', None) or cause}"
    return WorkdirError(f"the work folder {workdir} cannot be used: {why}")


@dataclass(frozen=True)
class RunOptions:
    """How a local run behaves."""

    workdir: Path
    fresh: bool = False
    show_progress: bool = True


def local_problems(study: TuningStudy) -> list[SpecProblem]:
    """What a valid study still lacks to run as local processes.

    Checked before the work folder is touched: a trainer that cannot be started at
    all must not leave a study with one failed trial per attempt behind.
    """
    replicas = study.spec.trial_template.replicas
    if replicas > 1:
        # N local processes would all share one host and one GPU set: a rehearsal of
        # nothing a cluster does, so refuse rather than pretend.
        return [
            SpecProblem(
                "spec.trialTemplate.replicas",
                f"a local run starts one process per trial; replicas {replicas} needs a "
                "cluster (set it to 1 to run here, or launch several ranks with torchrun "
                "inside the one trial's command)",
            )
        ]
    container = study.spec.trial_template.spec.containers[0]
    path = "spec.trialTemplate.spec.containers[0].command"
    if not container.command:
        return [
            SpecProblem(
                path,
                "a local run needs the trainer's command "
                "(the image's entrypoint is not known here)",
            )
        ]
    problem = command_problem(container)
    return [SpecProblem(path, problem)] if problem else []


def spec_fingerprint(study: TuningStudy) -> str:
    """Identity of what a study *means*: everything but the budget, which may change.

    `trialTemplate.replicas` is left out: it is always 1 here (larger is refused), and
    a study.db written before the field existed must still resume. So are `queue` and
    `priorityClass` (Kueue's; a local run has no queue).
    """
    document = study.spec.model_dump(
        mode="json",
        by_alias=True,
        exclude={
            "budget": True,
            "queue": True,
            "priority_class": True,
            "trial_template": {"replicas"},
        },
    )
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]


def open_study(study: TuningStudy, workdir: Path, *, fresh: bool = False) -> optuna.Study:
    """The study's Optuna storage in the work folder, created or resumed."""
    workdir.mkdir(parents=True, exist_ok=True)
    database = workdir / "study.db"
    if fresh:
        database.unlink(missing_ok=True)
        shutil.rmtree(workdir / "trials", ignore_errors=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = open_storage(database)
    except StudyFileError as error:
        raise LocalRunError(
            f"{database} {error}; use --fresh to start over, or another --workdir."
        ) from None
    name = study.metadata.name
    if others := [n for n in optuna.get_all_study_names(storage) if n != name]:
        # The fingerprint is kept per study name: a renamed study would find none and
        # write its results over the first one's. The name is part of what a study means.
        raise LocalRunError(
            f"{workdir} holds study {others[0]!r}, not {name!r}; a work folder holds one "
            f"study. Use another --workdir (the default is runs/{name}), or --fresh to "
            "start over here."
        )
    optuna_study = optuna.create_study(
        storage=storage,
        study_name=name,
        directions=objectives.directions(study.spec),
        load_if_exists=True,
    )
    fingerprint = spec_fingerprint(study)
    stored = optuna_study.user_attrs.get(ATTR_SPEC)
    if stored is None:
        optuna_study.set_user_attr(ATTR_SPEC, fingerprint)
        goals = [g.model_dump(by_alias=True) for g in study.spec.goals]
        optuna_study.set_user_attr(ATTR_GOALS, goals)  # for a study warm-started from this
    elif stored != fingerprint:
        raise LocalRunError(
            f"{workdir} holds study {study.metadata.name!r} with a different spec; only the "
            "budget may change between runs. Use --fresh to start over, or another --workdir."
        )
    return optuna_study


class LocalRunner:
    """Drives one study to its end with local processes.

    The runner holds its work folder's lock from construction until :meth:`close`
    (use it as a context manager), so that writing the results after :meth:`run`
    is still covered.
    """

    def __init__(self, study: TuningStudy, options: RunOptions) -> None:
        problems = local_problems(study)
        if problems:
            raise LocalRunError("\n".join(str(p) for p in problems))
        self.study = study
        self.options = options
        self.workdir = options.workdir
        # Before the study is opened: --fresh deletes it, and opening resumes it.
        self.lock = WorkdirLock(self.workdir)
        try:
            self.lock.acquire()
        except WorkdirBusyError as error:
            raise LocalRunError(str(error)) from None
        except OSError as error:
            raise workdir_error(self.workdir, error) from None
        try:
            optuna_study = open_study(study, self.workdir, fresh=options.fresh)
            # Seeds are read until all are told; a resumed study keeps them in SQLite.
            seeds = load_seeds(study.spec) if needs_seeds(optuna_study) else []
            self.engine = Engine.open(study.spec, optuna_study, seeds=seeds)
            report_skipped(self.engine.drain_warnings())
        except SeedError as error:
            self.lock.release()
            raise LocalRunError(str(error)) from None
        except (OSError, optuna.exceptions.StorageInternalError) as error:
            self.lock.release()
            raise workdir_error(self.workdir, error) from None
        except BaseException:
            self.lock.release()
            raise
        self.container = study.spec.trial_template.spec.containers[0]
        self.ports = PortAllocator()
        self.guard: GroupGuard | None = None
        self.processes: dict[int, TrialProcess] = {}
        self.stopping: list[TrialProcess] = []
        self.display = ProgressDisplay(self.engine, enabled=options.show_progress)
        self._interrupts = 0
        self.stopped_by: str | None = None
        self._cleaning_up = False

    def close(self) -> None:
        """Release the work folder for the next run."""
        self.lock.release()

    def __enter__(self) -> LocalRunner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def run(self) -> Engine:
        """Run until the study ends; Ctrl-C stops every trial and keeps the study resumable.

        Raises KeyboardInterrupt after an interrupt (:attr:`stopped_by` names the
        signal), :class:`LocalRunError` when the trainer's command cannot be started,
        and :class:`WorkdirError` when the work folder fails (a full disk); each only
        once every trial process has been stopped and reaped.
        Should this process be killed outright, its guard kills the trials.
        """
        # These signals stop the study cleanly, even where the shell started us with
        # SIGINT ignored (a background job), which would leave Ctrl-C without effect;
        # SIGHUP is a closed terminal or SSH session, which left trainers running.
        previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        try:
            with GroupGuard() as self.guard:
                try:
                    with self.display:
                        self._loop()
                except BaseException:
                    # Whatever ended the loop (Ctrl-C, an unstartable command, a bug), no
                    # trial may outlive it: they run in their own sessions, so nothing
                    # else would stop them.
                    self._stop_everything()
                    raise
        except optuna.exceptions.StorageInternalError as error:
            raise workdir_error(self.workdir, error) from error
        except OSError as error:
            if not is_disk_full(error):
                raise
            raise workdir_error(self.workdir, error) from error
        finally:
            self.guard = None
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self.engine

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """SIGINT/SIGTERM/SIGHUP: the first one asks the loop to stop; it is not raised
        here, so it cannot land between starting a process and recording it. A second
        one while the trials are being stopped cuts their grace period short (SIGKILL),
        and the cleanup still waits for every one of them."""
        if self.stopped_by is None:
            self.stopped_by = signal.Signals(signum).name
        self._interrupts += 1
        if self._cleaning_up and self._interrupts > 1:
            self._kill_everything()

    def _loop(self) -> None:
        next_scrape = 0.0
        interval = self.study.spec.metrics.scrape_interval
        while not self.engine.done or self.processes or self.stopping:
            if self._interrupts:
                raise KeyboardInterrupt
            now = time.monotonic()
            actions: list[Action] = []
            self._collect_exits(now)
            self._time_out_lr_test(now)
            if now >= next_scrape:
                actions += self._scrape_running(now)
                next_scrape = now + interval
            actions += self.engine.next_actions(now)
            report_skipped(self.engine.drain_warnings())  # seeds told after an LR test
            for action in actions:
                self._carry_out(action)
            self.stopping = [p for p in self.stopping if not p.reap()]
            self.display.refresh()
            time.sleep(POLL_SECONDS)
        self.display.refresh()

    def _collect_exits(self, now: float) -> None:
        for number, process in list(self.processes.items()):
            code = process.poll()
            if code is None:
                continue
            del self.processes[number]
            process.reap()
            message = read_termination_message(process.termination_path)
            if number == LR_RANGE_TEST_NUMBER:
                self.engine.observe(_lr_event(code, message, process), now)
                self.display.lr_test_done()
                continue
            metrics = message.get("metrics") if message else None
            tail = process.tail() if code != 0 else ""
            self.engine.observe(Finished(number, code, metrics, tail, last_step(message)), now)

    def _time_out_lr_test(self, now: float) -> None:
        """Bind the LR range test by ``budget.trialTimeout`` like any trial.

        The engine times out the trials it tracks; the sweep is not one of them (it
        has no Optuna trial), so a hung sweep would hold the study forever. A sweep
        that runs too long is stopped and reported as the LR range test's error, and
        the study goes on over the user's own range.
        """
        timeout = self.engine.spec.budget.trial_timeout
        process = self.processes.get(LR_RANGE_TEST_NUMBER)
        if timeout is None or process is None or now - process.started_at <= timeout:
            return
        del self.processes[LR_RANGE_TEST_NUMBER]
        process.stop()
        self.stopping.append(process)
        error = f"the LR range test timed out after {timeout}s"
        self.engine.observe(LrRangeFinished(error=error), now)
        self.display.lr_test_done()

    def _scrape_running(self, now: float) -> list[Action]:
        actions: list[Action] = []
        goals = [g.metric for g in self.study.spec.goals]
        for number, process in list(self.processes.items()):
            sample = scrape(process.metrics_url, timeout=0.5)
            if sample is None or sample.step is None:
                continue
            if number == LR_RANGE_TEST_NUMBER:
                self.display.lr_test_step(sample.step)
            elif goals[0] in sample.metrics:
                seen = {m: sample.metrics[m] for m in goals if m in sample.metrics}
                event = Progress(number, sample.step, sample.metrics[goals[0]], seen)
                actions += self.engine.observe(event, now)
        return actions

    def _carry_out(self, action: Action) -> None:
        name = self.study.metadata.name
        port = self.study.spec.metrics.port
        if isinstance(action, StartTrial):
            goals = [goal.metric for goal in self.study.spec.goals]
            schedule = lr_phase.trial_schedule(
                self.study.spec, self.engine.lr_result, action.params
            )
            env = trial_env(
                name, action.number, action.params, port, objectives=goals, lr_schedule=schedule
            )
            self._spawn(action.number, env, f"t{action.number:04d}")
            # A local trial runs the moment it is spawned: its timeout starts now.
            self.engine.observe(Started(action.number, time.monotonic()), time.monotonic())
        elif isinstance(action, StartLrRangeTest):
            env = trial_env(
                name,
                LR_RANGE_TEST_NUMBER,
                action.params,
                port,
                mode=MODE_LR_RANGE_TEST,
                lr_sweep=(action.parameter, action.min_lr, action.max_lr, action.steps),
            )
            self._spawn(LR_RANGE_TEST_NUMBER, env, "lr-range-test")
            self.display.lr_test_started(action.steps)
        elif isinstance(action, StopTrial):
            process = self.processes.pop(action.number, None)
            if process is not None:
                process.stop()
                self.stopping.append(process)

    def _spawn(self, number: int, env: dict[str, str], folder: str) -> None:
        directory = self.workdir / "trials" / folder
        try:
            process = TrialProcess.start(
                number, self.container, env, directory, self.ports, guard=self.guard
            )
        except TrialStartError as error:
            # The command was checked before the study started, so this is rarer (a
            # script whose interpreter is missing, a permission): every trial would
            # fail the same way, so stop the run rather than fail trial after trial.
            raise LocalRunError(str(error)) from None
        self.processes[number] = process

    def _stop_everything(self) -> None:
        """Stop and reap every trial process, however many more signals arrive."""
        self._cleaning_up = True
        everything = [*self.processes.values(), *self.stopping]
        if self._interrupts > 1:
            self._kill_everything()
        stop_all(everything)
        self.processes.clear()
        self.stopping.clear()

    def _kill_everything(self) -> None:
        """SIGKILL every trial now (a second Ctrl-C); reaping stays with the cleanup."""
        for process in [*self.processes.values(), *self.stopping]:
            process.kill()


def _lr_event(
    code: int, message: dict[str, object] | None, process: TrialProcess
) -> LrRangeFinished:
    """The engine's event for an LR range test that exited with `code`.

    A curve the trainer wrote but that cannot be read (unequal lengths, a
    non-number) is the LR range test's error, like a missing one: the study then
    runs over the user's own range instead of `rheostat run` crashing.
    """
    if code != 0:
        return LrRangeFinished(
            error=f"the LR range test exited with code {code}: {process.tail(3)}"
        )
    try:
        curve = lr_curve(message)
    except (TypeError, ValueError) as error:
        # ValueError: contract.ContractError names what is wrong; TypeError: a value
        # float() cannot take at all (null, a nested list) where lr_curve lets it through.
        return LrRangeFinished(error=f"the LR range test's curve is malformed: {error}")
    if curve is None:
        return LrRangeFinished(error="the LR range test wrote no curve to its termination message")
    return LrRangeFinished(lrs=curve[0], losses=curve[1])
