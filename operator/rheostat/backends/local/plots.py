"""PNG plots of a study: the pictures people look at before they read a table.

- lr_range_test.png: loss against learning rate (log scale), raw and smoothed, every
  rule's suggestion marked, the chosen one highlighted, the narrowed range shaded
  and a cyclical schedule's base and peak (apply: schedule) dashed.
- history.png: each trial's objective by trial number, coloured by state, with the
  best-so-far line.
- intermediate.png: every trial's intermediate objective by step; pruned trials stop
  early, which is the point of pruning.
- pareto.png (several objectives): every complete trial by its first two
  objectives, the Pareto front highlighted and joined in order; with more than two
  objectives the title says that only the first two are drawn.

They read :class:`StudyResults`, so a cluster study read back by `rheostat plot`
gets the same pictures as a local run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from rheostat import objectives
from rheostat.backends.local.report import StudyResults
from rheostat.events import TrialView
from rheostat.lr_range import LrRangeResult

STATE_COLOURS = {"complete": "tab:blue", "pruned": "tab:orange", "failed": "tab:red"}
# Room around the LR curve's descent, as fractions of its height: a little below the
# lowest point, more above the start so the turn into divergence shows.
MARGIN_BELOW = 0.08
MARGIN_ABOVE = 0.15


def lr_axis_limits(
    losses: Sequence[float], smoothed: Sequence[float]
) -> tuple[float, float] | None:
    """The loss axis of the LR plot: the whole descent, the divergence cut off.

    The part that matters is the low end, where the suggestions sit: the axis
    reaches below the lowest point of either curve (raw losses dip under the
    smoothed one). The top is the highest smoothed loss before the minimum, i.e.
    where training started; the blow-up after the minimum runs off the top instead
    of squashing the interesting part into a line. None when nothing is finite.
    """
    finite = [v for v in (*losses, *smoothed) if math.isfinite(v)]
    descent = [v for v in smoothed if math.isfinite(v)]
    if not finite:
        return None
    low = min(finite)
    if descent:
        turn = descent.index(min(descent))
        high = max(descent[: turn + 1])
    else:
        high = max(finite)
    span = high - low
    if span <= 0:
        span = abs(high) or 1.0
    return low - MARGIN_BELOW * span, high + MARGIN_ABOVE * span


def plot_lr_range(result: LrRangeResult, path: Path, narrowed: tuple[float, float] | None) -> Path:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.plot(result.lrs, result.losses, color="0.75", linewidth=1, label="loss (raw)")
    axes.plot(result.lrs, result.smoothed, color="tab:blue", linewidth=2, label="loss (smoothed)")
    for name, lr in sorted(result.suggestions.items()):
        chosen = name == result.rule
        axes.axvline(
            lr,
            color="tab:red" if chosen else "0.5",
            linestyle="-" if chosen else ":",
            linewidth=2 if chosen else 1,
            label=f"{name}: {lr:.3g}" + (" (used)" if chosen else ""),
        )
    if narrowed is not None:
        axes.axvspan(
            narrowed[0], narrowed[1], color="tab:green", alpha=0.12, label="narrowed range"
        )
    if result.schedule is not None:  # a cyclical schedule's bounds (apply: schedule)
        for end, lr in zip(("base", "peak"), result.schedule, strict=True):
            axes.axvline(
                lr, color="tab:purple", linestyle="--", linewidth=1.5, label=f"{end}: {lr:.3g}"
            )
    axes.set_xscale("log")
    limits = lr_axis_limits(result.losses, result.smoothed)
    if limits is not None:
        axes.set_ylim(*limits)
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss")
    axes.set_title("LR range test")
    _legend(axes)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_history(results: StudyResults, path: Path) -> Path:
    metric = results.spec.primary.metric
    maximize = results.spec.primary.direction == "maximize"
    several = results.spec.multi_objective
    trials = [t for t in results.trials if t.state != "running"]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for state, colour in STATE_COLOURS.items():
        points = [
            (t.number, t.value if t.value is not None else _last(t.intermediate))
            for t in trials
            if t.state == state
        ]
        kept = [(n, v) for n, v in points if v is not None]
        if kept:
            xs = [n for n, _ in kept]
            ys = [v for _, v in kept]
            axes.scatter(xs, ys, color=colour, label=state, s=28, zorder=3)
    best_x, best_y, best = [], [], None
    for trial in sorted(trials, key=lambda t: t.number):
        # With several objectives there is no best so far; pareto.png shows the result.
        if several or trial.state != "complete" or trial.value is None:
            continue
        if best is None or (trial.value > best if maximize else trial.value < best):
            best = trial.value
        best_x.append(trial.number)
        best_y.append(best)
    if best_x and trials:
        # Carry the best value to the last trial so the line spans the whole study.
        best_x.append(max(t.number for t in trials))
        best_y.append(best_y[-1])
        axes.step(best_x, best_y, where="post", color="tab:green", linewidth=2, label="best so far")
    axes.set_xlabel("trial")
    axes.set_ylabel(metric)
    axes.set_title(f"Optimisation history ({results.spec.algorithm.name})")
    _legend(axes)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_intermediate(results: StudyResults, path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for trial in results.trials:
        if not trial.intermediate:
            continue
        steps = sorted(trial.intermediate)
        axes.plot(
            steps,
            [trial.intermediate[s] for s in steps],
            color=STATE_COLOURS.get(trial.state, "0.5"),
            alpha=0.8 if trial.state == "complete" else 0.5,
            marker="o",
            markersize=3,
        )
    axes.set_xlabel("step")
    axes.set_ylabel(results.spec.primary.metric)
    axes.set_title("Intermediate values (orange: pruned)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_pareto(results: StudyResults, path: Path) -> Path:
    """All complete trials on the first two objectives; the front highlighted and joined."""
    goals = results.spec.goals
    x_goal, y_goal = goals[0], goals[1]
    scored = [t for t in results.trials if t.state == "complete" and t.values is not None]
    front = objectives.pareto_front(results.trials, goals)
    on_front = {t.number for t in front}
    figure, axes = plt.subplots(figsize=(7, 4.5))
    others = [t for t in scored if t.number not in on_front]
    if others:
        axes.scatter(
            [_value(t, 0) for t in others],
            [_value(t, 1) for t in others],
            color="0.6",
            s=24,
            label="trial",
            zorder=2,
        )
    if front:
        ordered = sorted(front, key=lambda t: (_value(t, 0), _value(t, 1)))
        xs, ys = [_value(t, 0) for t in ordered], [_value(t, 1) for t in ordered]
        axes.plot(xs, ys, color="tab:red", linewidth=1.5, zorder=3)
        axes.scatter(xs, ys, color="tab:red", s=40, label="Pareto front", zorder=4)
        for trial, x, y in zip(ordered, xs, ys, strict=True):
            axes.annotate(
                f"#{trial.number}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
    axes.set_xlabel(f"{x_goal.metric} ({x_goal.direction})")
    axes.set_ylabel(f"{y_goal.metric} ({y_goal.direction})")
    title = f"Pareto front ({len(front)} of {len(scored)} complete trials)"
    if len(goals) > 2:
        title += f"\nfirst two of {len(goals)} objectives; the front is over all of them"
    axes.set_title(title)
    _legend(axes)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _legend(axes: Axes) -> None:
    """A legend when something is labelled: with no finished trial there is nothing to
    explain, and matplotlib warns about an empty legend."""
    handles, _ = axes.get_legend_handles_labels()
    if handles:
        axes.legend(fontsize=8)


def _value(trial: TrialView, index: int) -> float:
    return (trial.values or ())[index]


def _last(values: dict[int, float]) -> float | None:
    return values[max(values)] if values else None


def write_plots(results: StudyResults, workdir: Path) -> list[Path]:
    """Every plot that has data to show."""
    written = [plot_history(results, workdir / "history.png")]
    if results.spec.multi_objective:
        written.append(plot_pareto(results, workdir / "pareto.png"))
    if any(t.intermediate for t in results.trials):
        written.append(plot_intermediate(results, workdir / "intermediate.png"))
    if results.lr_result is not None:
        written.append(
            plot_lr_range(results.lr_result, workdir / "lr_range_test.png", results.narrowed())
        )
    return written
