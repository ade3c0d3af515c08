"""Progress bars for a local run: the LR range test's sweep, then the trial budget.

Each finished trial also gets one line above the bars (state, value, parameters),
the way Optuna and Ray Tune users are used to reading a study as it runs.
Rich reads brackets as markup: whatever comes from a trainer (a failed trial's log
lines, the LR range test's error) or from the user's parameter values is escaped,
so that ``[/data/train-*]`` cannot end the run and ``[rank0]:`` is not swallowed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from rheostat.engine import Engine, TrialView


def format_params(params: Mapping[str, object]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def describe(trial: TrialView, metric: str, metrics: Sequence[str] = ()) -> str:
    """One line of rich markup for a finished trial; `metrics` names each value of
    several objectives. Only the state's colour is markup: the rest is escaped."""
    colour = {"complete": "green", "pruned": "yellow", "failed": "red"}.get(trial.state, "white")
    value = f" {metric}={trial.value:.5g}" if trial.value is not None else ""
    if trial.values is not None and metrics:
        value = "".join(f" {m}={v:.5g}" for m, v in zip(metrics, trial.values, strict=False))
    duration = f" in {trial.duration:.1f}s" if trial.duration is not None else ""
    reason = f" — {trial.reason}" if trial.reason and trial.state != "complete" else ""
    return (
        f"trial {trial.number:>3} [{colour}]{trial.state:<8}[/]{escape(value)}{duration}"
        f"  [dim]{escape(format_params(trial.params))}[/]{escape(reason)}"
    )


class ProgressDisplay:
    """Rich progress bars over an engine; a no-op when disabled (e.g. in tests)."""

    def __init__(
        self, engine: Engine, *, enabled: bool = True, console: Console | None = None
    ) -> None:
        self.engine = engine
        self.enabled = enabled
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[detail]}"),
            console=self.console,
            disable=not enabled,
        )
        self._trials: TaskID | None = None
        self._lr: TaskID | None = None
        self._announced: set[int] = set()

    def __enter__(self) -> ProgressDisplay:
        self.progress.start()
        # A resumed study shows what it already has, once.
        for trial in self.engine.trials():
            if trial.state != "running":
                self._announced.add(trial.number)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # A closed terminal (SIGHUP) fails every write with EIO: nothing left to show.
        with contextlib.suppress(OSError):
            self.progress.stop()

    def lr_test_started(self, steps: int) -> None:
        self._lr = self.progress.add_task("LR range test", total=steps, detail="")

    def lr_test_step(self, step: int) -> None:
        if self._lr is not None:
            self.progress.update(self._lr, completed=step + 1)

    def lr_test_done(self) -> None:
        if self._lr is None:
            return
        self.progress.update(self._lr, completed=self.progress.tasks[self._lr].total)
        result = self.engine.lr_result
        if result is not None:
            status = self.engine.status()["lrRangeTest"]
            narrowed = status.get("narrowedTo")
            extra = f"; searching {narrowed[0]:.3g} … {narrowed[1]:.3g}" if narrowed else ""
            self._print(
                f"LR range test: {result.rule} suggests lr={result.suggested_lr:.3g} "
                f"({status['policy']}){extra}"
            )
        elif self.engine.lr_error:
            error = escape(self.engine.lr_error)
            self._print(f"[yellow]LR range test gave no suggestion: {error}[/]")

    def refresh(self) -> None:
        if self.engine.phase == "LrRangeTest":
            return
        counts = self.engine.counts()
        if self._trials is None:
            self._trials = self.progress.add_task(
                "trials", total=self.engine.target_trials, detail=""
            )
        spec = self.engine.spec
        metrics = [g.metric for g in spec.goals] if spec.multi_objective else []
        if counts.finished != len(self._announced):
            for trial in self.engine.trials():
                if trial.state != "running" and trial.number not in self._announced:
                    self._announced.add(trial.number)
                    self._print(describe(trial, spec.primary.metric, metrics))
        best = self.engine.best()
        detail = f"running {counts.running}"
        if best is not None and best.value is not None:
            detail += f" · best {escape(spec.primary.metric)}={best.value:.5g} (#{best.number})"
        elif spec.multi_objective and (front := self.engine.front()):
            detail += f" · Pareto front of {len(front)}"
        self.progress.update(
            self._trials, completed=counts.finished, total=self.engine.target_trials, detail=detail
        )

    def _print(self, text: str) -> None:
        """Print rich markup above the bars; anything untrusted in it must be escaped."""
        if self.enabled:
            with contextlib.suppress(OSError):  # the terminal is gone (SIGHUP)
                self.progress.console.print(text)
