"""What a finished study leaves behind: a table, results.json, results.csv.

results.json is the machine-readable record (status, every trial, the LR range
test's curve); results.csv is for a spreadsheet; the table is for the terminal.
A study with several objectives carries every objective's value per trial and
whether the trial is on the Pareto front, in both files and the table.
Everything here reads :class:`StudyResults`, not the engine, so a study read back
from a cluster (`rheostat get|describe|export`) is shown and written exactly as a
local run is: one rendering, two sources.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rheostat import ledger, objectives
from rheostat.backends.local.progress import format_params
from rheostat.engine import Engine, TrialView
from rheostat.lr_range import LrRangeResult
from rheostat.spec import StudySpec

# Beyond this many trials the table shows the best ones only; the files hold all.
TABLE_ROWS = 25


@dataclass(frozen=True)
class StudyResults:
    """A study's outcome as every report reads it, whichever backend ran the study.

    `status` has the shape of :meth:`Engine.status` (phase, trial counts, best
    trial, the LR range test's summary, a failure reason); `trials` are the trials
    a user counts; `lr_result` is the analysed LR curve, if the test produced one.
    """

    name: str
    spec: StudySpec
    status: dict[str, Any]
    trials: list[TrialView]
    lr_result: LrRangeResult | None = None

    @classmethod
    def from_engine(cls, engine: Engine) -> StudyResults:
        """A local run's results, straight from the engine that ran it."""
        return cls(
            name=engine.study.study_name,
            spec=engine.spec,
            status=engine.status(),
            trials=engine.trials(),
            lr_result=engine.lr_result,
        )

    @property
    def phase(self) -> str:
        return str(self.status["phase"])

    @property
    def failure_reason(self) -> str | None:
        reason = self.status.get("reason")
        return None if reason is None else str(reason)

    def best(self) -> TrialView | None:
        """The best trial of a single-objective study; None with several objectives."""
        if self.spec.multi_objective:
            return None
        return ledger.best(self.trials, self.spec.primary.direction)

    def front(self) -> list[TrialView]:
        """The Pareto front of a study with several objectives (empty with one)."""
        if not self.spec.multi_objective:
            return []
        return objectives.pareto_front(self.trials, self.spec.goals)

    def narrowed(self) -> tuple[float, float] | None:
        """The LR range the study searched after the test narrowed it, if it did."""
        bounds = (self.status.get("lrRangeTest") or {}).get("narrowedTo")
        return (float(bounds[0]), float(bounds[1])) if bounds else None


def results_document(results: StudyResults) -> dict[str, Any]:
    """Everything a user may want to read back, as JSON-friendly data."""
    spec = results.spec
    trials = [
        {
            "number": t.number,
            "state": t.state,
            "value": t.value,
            "params": t.params,
            "durationSeconds": t.duration,
            "reason": t.reason,
            "intermediate": {str(k): v for k, v in sorted(t.intermediate.items())},
        }
        for t in results.trials
    ]
    document: dict[str, Any] = {"study": results.name}
    if spec.multi_objective:
        document["objectives"] = [g.model_dump(by_alias=True) for g in spec.goals]
        on_front = {t.number for t in results.front()}
        for row, trial in zip(trials, results.trials, strict=True):
            row["values"] = objectives.named_values(trial, spec.goals) or None
            row["pareto"] = trial.number in on_front
    else:
        document["objective"] = spec.primary.model_dump(by_alias=True)
    document.update(algorithm=spec.algorithm.name, status=results.status, trials=trials)
    if results.lr_result is not None:
        document["lrRangeTest"] = results.lr_result.to_dict()
    return document


def write_results(results: StudyResults, workdir: Path) -> tuple[Path, Path]:
    """Write results.json and results.csv into the work folder."""
    json_path = workdir / "results.json"
    json_path.write_text(json.dumps(results_document(results), indent=2) + "\n", encoding="utf-8")
    csv_path = workdir / "results.csv"
    names = [p.name for p in results.spec.parameters]
    metrics = [g.metric for g in results.spec.goals]
    several = results.spec.multi_objective
    on_front = {t.number for t in results.front()}
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        pareto = ["pareto"] if several else []
        writer.writerow(["number", "state", *metrics, *pareto, *names, "seconds", "reason"])
        for trial in results.trials:
            values: list[float | str] = list(trial.values) if several and trial.values else []
            if not several:
                values = [] if trial.value is None else [trial.value]
            writer.writerow(
                [
                    trial.number,
                    trial.state,
                    *(values or [""] * len(metrics)),  # an unfinished trial: blank cells
                    *([trial.number in on_front] if several else []),
                    *(trial.params.get(n, "") for n in names),
                    "" if trial.duration is None else round(trial.duration, 3),
                    trial.reason or "",
                ]
            )
    return json_path, csv_path


def _rows(results: StudyResults) -> list[TrialView]:
    trials = [t for t in results.trials if t.state != "running"]
    if len(trials) <= TABLE_ROWS:
        return trials
    if results.spec.multi_objective:
        return objectives.thin(results.front(), TABLE_ROWS)
    scored = [t for t in trials if t.state == "complete" and t.value is not None]
    reverse = results.spec.primary.direction == "maximize"
    scored.sort(key=lambda t: t.value if t.value is not None else 0.0, reverse=reverse)
    return sorted(scored[:TABLE_ROWS], key=lambda t: t.number)


def print_summary(results: StudyResults, console: Console) -> None:
    """The results table, the best parameters and the LR range test's verdict.

    Rich reads its strings as markup: names, parameter values and anything a trainer
    wrote (the LR range test's error, a failure reason) are escaped, so that
    ``[/data/...]`` prints as itself instead of raising MarkupError.
    """
    metric = results.spec.primary.metric
    metrics = [g.metric for g in results.spec.goals]
    best = results.best()
    front = results.front()
    highlighted = {t.number for t in front} | ({best.number} if best is not None else set())
    rows = _rows(results)
    title = f"{escape(results.name)}: {results.spec.algorithm.name}"
    if len(rows) < len(results.trials):
        kept = "Pareto front" if front else "best"
        title += f" ({kept}: {len(rows)} of {len(results.trials)})"
    table = Table(title=title)
    for column in ("#", "state", *metrics, "parameters", "seconds"):
        table.add_column(
            escape(column), justify="left" if column in {"state", "parameters"} else "right"
        )
    for trial in rows:
        style = "bold green" if trial.number in highlighted else None
        shown = trial.values if trial.values is not None else (trial.value,)
        cells = ["" if v is None else f"{v:.5g}" for v in shown]
        table.add_row(
            str(trial.number),
            trial.state,
            *(cells + [""] * (len(metrics) - len(cells))),
            escape(format_params(trial.params)),
            "" if trial.duration is None else f"{trial.duration:.1f}",
            style=style,
        )
    console.print(table)
    counts = results.status["trials"]
    reason = results.failure_reason
    console.print(
        f"{results.phase}: {counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['failed']} failed" + (f" — {escape(reason)}" if reason else "")
    )
    status = results.status
    if "lrRangeTest" in status:
        lr = status["lrRangeTest"]
        if "error" in lr:
            console.print(f"LR range test: no suggestion ({escape(str(lr['error']))})")
        else:
            narrowed = lr.get("narrowedTo")
            where = f", searched {narrowed[0]:.3g} … {narrowed[1]:.3g}" if narrowed else ""
            console.print(
                f"LR range test: {lr['rule']} suggestion lr={lr['suggestedLr']:.3g}{where}"
            )
    if best is not None and best.value is not None:
        console.print(f"Best trial #{best.number}: {escape(metric)}={best.value:.5g}")
        console.print(f"Best parameters: {escape(format_params(best.params))}")
    if front:
        console.print(f"Pareto front: {len(front)} trials (in green)")
        for trial in objectives.thin(front, TABLE_ROWS):
            values = objectives.named_values(trial, results.spec.goals)
            line = f"  #{trial.number}: {format_params(values)} — {format_params(trial.params)}"
            console.print(escape(line))
