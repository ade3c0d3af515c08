"""How cluster studies look on a terminal: `rheostat get` lines, `describe` sections.

The results table itself is the local run's (`report.print_summary`); this module
adds what only a cluster has: many studies side by side, conditions and Events.
Columns follow kubectl's habits (upper-case headers, AGE, `-A` adds NAMESPACE), so
`kubectl rheostat get` reads like `kubectl get`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes import client
from rich.console import Console

from rheostat.backends.kubernetes.read import ClusterStudy, StudyRow, age
from rheostat.backends.local.report import print_summary
from rheostat.eta import duration_text
from rheostat.waiting import WaitFacts, split_stuck, why_waiting


def best_text(value: float | None) -> str:
    """A best value as a person compares them: 4 significant digits."""
    return "<none>" if value is None else f"{value:.4g}"


def study_lines(rows: Sequence[StudyRow], *, namespaces: bool, now: float | None = None) -> str:
    """The `get` listing, aligned like kubectl's."""
    header = ["NAME", "PHASE", "DONE", "TOTAL", "BEST", "LR", "ETA", "AGE"]
    table = [
        [
            row.name,
            row.phase,
            "" if row.finished is None else str(row.finished),
            "" if row.target is None else str(row.target),
            f"front of {row.front}" if row.front is not None else best_text(row.best),
            "<none>" if row.lr is None else f"{row.lr:.3g}",
            "<none>" if row.eta is None else duration_text(row.eta),
            age(row.created, now),
        ]
        for row in rows
    ]
    if namespaces:
        header.insert(0, "NAMESPACE")
        for line, row in zip(table, rows, strict=True):
            line.insert(0, row.namespace)
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [header, *table]
    )


def describe(study: ClusterStudy, console: Console) -> None:
    """What `rheostat describe` prints: the study, its conditions, results and Events."""
    spec = study.spec
    metadata = study.body["metadata"]
    status = study.body.get("status") or {}
    seed = f" (seed {spec.algorithm.seed})" if spec.algorithm.seed is not None else ""
    budget = spec.budget
    for label, value in (
        ("Name", metadata["name"]),
        ("Namespace", metadata.get("namespace", "")),
        (
            "Objectives" if spec.multi_objective else "Objective",
            ", ".join(f"{g.direction} {g.metric}" for g in spec.goals),
        ),
        ("Algorithm", f"{spec.algorithm.name}{seed}"),
        ("Budget", f"{budget.max_trials} trials, {budget.parallelism} at a time"),
        ("Phase", status.get("phase", "Pending")),
    ):
        console.print(f"{label + ':':<12}{value}", markup=False, highlight=False)
    for number, reason in enumerate(why_waiting(wait_facts(study))):
        label = "Waiting:" if number == 0 else ""
        console.print(f"{label:<12}{reason.name}: {reason.message}", markup=False, highlight=False)
    conditions = status.get("conditions") or []
    if conditions:
        console.print("Conditions:")
        for c in conditions:
            line = f"  {c.get('type')}={c.get('status')} {c.get('reason')}: {c.get('message')}"
            console.print(line, markup=False, highlight=False)
    print_summary(study.results(), console)
    console.print("Events:" if study.events else "Events:  <none>")
    for event in sorted(study.events, key=_event_time):
        line = f"  {event.type:<8}{event.reason:<22}{event.message}"
        console.print(line, markup=False, highlight=False)


def wait_facts(study: ClusterStudy) -> WaitFacts:
    """What the study's status and its trial pods say about why it waits."""
    status = study.body.get("status") or {}
    counts = status.get("trials") or {}
    budget = study.spec.budget
    stuck = _stuck(status.get("conditions") or [])
    running = {
        int(t["spec"]["number"])
        for t in study.trials
        if (t.get("status") or {}).get("state", "Running") == "Running"
    }
    starting = [
        n
        for n, phase in study.pod_phases.items()
        if phase == "Pending" and n in running and n not in stuck
    ]
    return WaitFacts(
        phase=str(status.get("phase", "Pending")),
        running=int(counts.get("running", 0)),
        finished=int(counts.get("finished", 0)),
        target=int(counts.get("target", budget.max_trials)),
        parallelism=budget.parallelism,
        starting=len(starting),
        stuck=tuple(stuck.values()),
    )


def _stuck(conditions: Sequence[Mapping[str, Any]]) -> dict[int, str]:
    """Trial number -> why its pod cannot start, from the TrialsStuck condition."""
    condition = next((c for c in conditions if c.get("type") == "TrialsStuck"), None)
    if condition is None or condition.get("status") != "True":
        return {}
    return split_stuck(str(condition.get("message", "")))


def _event_time(event: client.CoreV1Event) -> str:
    return str(event.last_timestamp or event.event_time or event.metadata.creation_timestamp)
