"""Run a whole study on this machine: the engine's actions as local processes.

The loop is the local twin of the operator's reconcile: read what the processes did
(exits, termination messages, metrics scraped from their endpoints), hand it to the
engine, carry out the engine's answer (start, stop), repeat. The Optuna study lives
in SQLite in the work folder, so running the same command again resumes it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import optuna

from rheostat.backends.local.process import TrialProcess, read_termination_message
from rheostat.backends.local.progress import ProgressDisplay
from rheostat.contract import LR_RANGE_TEST_NUMBER, MODE_LR_RANGE_TEST, lr_curve, trial_env
from rheostat.engine import (
    ATTR_SPEC,
    Action,
    Engine,
    Finished,
    LrRangeFinished,
    Progress,
    StartLrRangeTest,
    StartTrial,
    StopTrial,
)
from rheostat.metrics.scrape import scrape
from rheostat.spec import SpecProblem, TuningStudy

POLL_SECONDS = 0.1


class LocalRunError(Exception):
    """A study that cannot run locally; the message says what to do."""


@dataclass(frozen=True)
class RunOptions:
    """How a local run behaves."""

    workdir: Path
    fresh: bool = False
    show_progress: bool = True


def local_problems(study: TuningStudy) -> list[SpecProblem]:
    """What a valid study still lacks to run as local processes."""
    container = study.spec.trial_template.spec.containers[0]
    if not container.command:
        return [
            SpecProblem(
                "spec.trialTemplate.spec.containers[0].command",
                "a local run needs the trainer's command "
                "(the image's entrypoint is not known here)",
            )
        ]
    return []


def spec_fingerprint(study: TuningStudy) -> str:
    """Identity of what a study *means*: everything but the budget, which may change."""
    document = study.spec.model_dump(mode="json", by_alias=True, exclude={"budget"})
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]


def open_study(study: TuningStudy, workdir: Path, *, fresh: bool = False) -> optuna.Study:
    """The study's Optuna storage in the work folder, created or resumed."""
    workdir.mkdir(parents=True, exist_ok=True)
    database = workdir / "study.db"
    if fresh:
        database.unlink(missing_ok=True)
        shutil.rmtree(workdir / "trials", ignore_errors=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{database}")
    optuna_study = optuna.create_study(
        storage=storage,
        study_name=study.metadata.name,
        direction=study.spec.objective.direction,
        load_if_exists=True,
    )
    fingerprint = spec_fingerprint(study)
    stored = optuna_study.user_attrs.get(ATTR_SPEC)
    if stored is None:
        optuna_study.set_user_attr(ATTR_SPEC, fingerprint)
    elif stored != fingerprint:
        raise LocalRunError(
            f"{workdir} holds study {study.metadata.name!r} with a different spec; only the "
            "budget may change between runs. Use --fresh to start over, or another --workdir."
        )
    return optuna_study


class LocalRunner:
    """Drives one study to its end with local processes."""

    def __init__(self, study: TuningStudy, options: RunOptions) -> None:
        problems = local_problems(study)
        if problems:
            raise LocalRunError("\n".join(str(p) for p in problems))
        self.study = study
        self.options = options
        self.workdir = options.workdir
        self.engine = Engine.open(study.spec, open_study(study, self.workdir, fresh=options.fresh))
        self.container = study.spec.trial_template.spec.containers[0]
        self.processes: dict[int, TrialProcess] = {}
        self.stopping: list[TrialProcess] = []
        self.display = ProgressDisplay(self.engine, enabled=options.show_progress)

    def run(self) -> Engine:
        """Run until the study ends; Ctrl-C stops every trial and keeps the study resumable."""
        # Both signals stop the study cleanly, even where the shell started us with
        # SIGINT ignored (a background job), which would leave Ctrl-C without effect.
        previous = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            with self.display:
                self._loop()
        except KeyboardInterrupt:
            self._stop_everything()
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self.engine

    def _loop(self) -> None:
        next_scrape = 0.0
        interval = self.study.spec.metrics.scrape_interval
        while not self.engine.done or self.processes or self.stopping:
            now = time.monotonic()
            actions: list[Action] = []
            self._collect_exits(now)
            if now >= next_scrape:
                actions += self._scrape_running(now)
                next_scrape = now + interval
            actions += self.engine.next_actions(now)
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
            self.engine.observe(Finished(number, code, metrics, tail), now)

    def _scrape_running(self, now: float) -> list[Action]:
        actions: list[Action] = []
        metric = self.study.spec.objective.metric
        for number, process in list(self.processes.items()):
            sample = scrape(process.metrics_url, timeout=0.5)
            if sample is None or sample.step is None:
                continue
            if number == LR_RANGE_TEST_NUMBER:
                self.display.lr_test_step(sample.step)
            elif metric in sample.metrics:
                event = Progress(number, sample.step, sample.metrics[metric])
                actions += self.engine.observe(event, now)
        return actions

    def _carry_out(self, action: Action) -> None:
        name = self.study.metadata.name
        port = self.study.spec.metrics.port
        if isinstance(action, StartTrial):
            env = trial_env(name, action.number, action.params, port)
            self._spawn(action.number, env, f"t{action.number:04d}")
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
        self.processes[number] = TrialProcess.start(number, self.container, env, directory)

    def _stop_everything(self) -> None:
        for process in [*self.processes.values(), *self.stopping]:
            process.kill_now()
        self.processes.clear()
        self.stopping.clear()


def _lr_event(
    code: int, message: dict[str, object] | None, process: TrialProcess
) -> LrRangeFinished:
    curve = lr_curve(message)
    if code == 0 and curve is not None:
        return LrRangeFinished(lrs=curve[0], losses=curve[1])
    if code != 0:
        return LrRangeFinished(
            error=f"the LR range test exited with code {code}: {process.tail(3)}"
        )
    return LrRangeFinished(error="the LR range test wrote no curve to its termination message")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
