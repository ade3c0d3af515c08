"""What a finished local study leaves behind: a table, results.json, results.csv.

results.json is the machine-readable record (status, every trial, the LR range
test's curve); results.csv is for a spreadsheet; the table is for the terminal.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from rheostat.backends.local.progress import format_params
from rheostat.engine import Engine, TrialView

# Beyond this many trials the table shows the best ones only; the files hold all.
TABLE_ROWS = 25


def results_document(engine: Engine) -> dict[str, Any]:
    """Everything a user may want to read back, as JSON-friendly data."""
    document: dict[str, Any] = {
        "study": engine.study.study_name,
        "objective": engine.spec.objective.model_dump(by_alias=True),
        "algorithm": engine.spec.algorithm.name,
        "status": engine.status(),
        "trials": [
            {
                "number": t.number,
                "state": t.state,
                "value": t.value,
                "params": t.params,
                "durationSeconds": t.duration,
                "reason": t.reason,
                "intermediate": {str(k): v for k, v in sorted(t.intermediate.items())},
            }
            for t in engine.trials()
        ],
    }
    if engine.lr_result is not None:
        document["lrRangeTest"] = engine.lr_result.to_dict()
    return document


def write_results(engine: Engine, workdir: Path) -> tuple[Path, Path]:
    """Write results.json and results.csv into the work folder."""
    json_path = workdir / "results.json"
    json_path.write_text(json.dumps(results_document(engine), indent=2) + "\n", encoding="utf-8")
    csv_path = workdir / "results.csv"
    names = [p.name for p in engine.spec.parameters]
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["number", "state", engine.spec.objective.metric, *names, "seconds", "reason"]
        )
        for trial in engine.trials():
            writer.writerow(
                [
                    trial.number,
                    trial.state,
                    "" if trial.value is None else trial.value,
                    *(trial.params.get(n, "") for n in names),
                    "" if trial.duration is None else round(trial.duration, 3),
                    trial.reason or "",
                ]
            )
    return json_path, csv_path


def _rows(engine: Engine) -> list[TrialView]:
    trials = [t for t in engine.trials() if t.state != "running"]
    if len(trials) <= TABLE_ROWS:
        return trials
    scored = [t for t in trials if t.state == "complete" and t.value is not None]
    reverse = engine.spec.objective.direction == "maximize"
    scored.sort(key=lambda t: t.value if t.value is not None else 0.0, reverse=reverse)
    return sorted(scored[:TABLE_ROWS], key=lambda t: t.number)


def print_summary(engine: Engine, console: Console) -> None:
    """The results table, the best parameters and the LR range test's verdict."""
    metric = engine.spec.objective.metric
    best = engine.best()
    rows = _rows(engine)
    title = f"{engine.study.study_name}: {engine.spec.algorithm.name}"
    if len(rows) < len(engine.trials()):
        title += f" (best {len(rows)} of {len(engine.trials())})"
    table = Table(title=title)
    for column in ("#", "state", metric, "parameters", "seconds"):
        table.add_column(column, justify="right" if column in {"#", metric, "seconds"} else "left")
    for trial in rows:
        style = "bold green" if best is not None and trial.number == best.number else None
        table.add_row(
            str(trial.number),
            trial.state,
            "" if trial.value is None else f"{trial.value:.5g}",
            format_params(trial.params),
            "" if trial.duration is None else f"{trial.duration:.1f}",
            style=style,
        )
    console.print(table)
    counts = engine.counts()
    console.print(
        f"{engine.phase}: {counts.complete} complete, {counts.pruned} pruned, "
        f"{counts.failed} failed" + (f" — {engine.failure_reason}" if engine.failure_reason else "")
    )
    status = engine.status()
    if "lrRangeTest" in status:
        lr = status["lrRangeTest"]
        if "error" in lr:
            console.print(f"LR range test: no suggestion ({lr['error']})")
        else:
            narrowed = lr.get("narrowedTo")
            where = f", searched {narrowed[0]:.3g} … {narrowed[1]:.3g}" if narrowed else ""
            console.print(
                f"LR range test: {lr['rule']} suggestion lr={lr['suggestedLr']:.3g}{where}"
            )
    if best is not None and best.value is not None:
        console.print(f"Best trial #{best.number}: {metric}={best.value:.5g}")
        console.print(f"Best parameters: {format_params(best.params)}")
