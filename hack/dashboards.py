"""Generate the chart's Grafana dashboards from code, and lint the committed JSON.

The dashboards in charts/rheostat/dashboards/ are built here with grafana-foundation-sdk
(Grafana's own typed builders) instead of being edited by hand: a panel is a few lines
of Python, the SDK knows Grafana's schema, and a review sees the queries rather than
1,000 lines of JSON. The JSON stays committed because the Helm chart ships it as is.

    python hack/dashboards.py           # regenerate charts/rheostat/dashboards/*.json
    python hack/dashboards.py --check   # fail if the committed JSON is stale or off-convention

--check also runs hack/dashboard_lint.py: Grafana's dashboard schema (through the SDK's
typed models) and the conventions of the kube-prometheus dashboards.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from dashboard_lint import convention_errors, schema_errors
from grafana_foundation_sdk.builders import (
    barchart,
    common,
    heatmap,
    prometheus,
    stat,
    table,
    timeseries,
)
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.common import (
    BigValueColorMode,
    BigValueGraphMode,
    BigValueJustifyMode,
    BigValueTextMode,
    GraphDrawStyle,
    LegendDisplayMode,
    LegendPlacement,
    LineInterpolation,
    SortOrder,
    StackingMode,
    TooltipDisplayMode,
    VisibilityMode,
    VizOrientation,
)
from grafana_foundation_sdk.models.heatmap import HeatmapColorMode
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUT = Path(__file__).resolve().parents[1] / "charts" / "rheostat" / "dashboards"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
TAGS = ["rheostat", "hyperparameter-tuning"]
# The study dashboard's selector, shared by nearly every query on it.
SEL = 'namespace="$namespace", study="$study"'

Panel = stat.Panel | timeseries.Panel | heatmap.Panel | table.Panel | barchart.Panel
P = TypeVar("P", stat.Panel, timeseries.Panel, heatmap.Panel, table.Panel, barchart.Panel)


# ----- queries and panels ---------------------------------------------------------------


def _query(expr: str, legend: str, *, instant: bool = False) -> prometheus.Dataquery:
    """One PromQL target: instant for single-value panels, range for graphs."""
    query = prometheus.Dataquery().datasource(DATASOURCE).expr(expr).legend_format(legend)
    return query.instant() if instant else query.range()


def _panel(
    panel: P,
    pid: int,
    title: str,
    description: str,
    grid: tuple[int, int, int, int],
    *queries: prometheus.Dataquery,
) -> P:
    """The fields every panel has; refIds are A, B, ... in the order the queries come."""
    h, w, x, y = grid
    panel.id(pid).title(title).description(description).datasource(DATASOURCE)
    panel.grid_pos(model.GridPos(h=h, w=w, x=x, y=y))
    for ref, query in zip("ABCDEFGH", queries, strict=False):
        panel.with_target(query.ref_id(ref))
    return panel


def _stat(
    pid: int,
    title: str,
    description: str,
    grid: tuple[int, int, int, int],
    query: prometheus.Dataquery,
) -> stat.Panel:
    """A single number: the last non-null value of one instant query."""
    panel = stat.Panel().reduce_options(
        common.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)
    )
    panel.color_mode(BigValueColorMode.VALUE).graph_mode(BigValueGraphMode.AREA)
    panel.justify_mode(BigValueJustifyMode.AUTO).orientation(VizOrientation.AUTO)
    panel.text_mode(BigValueTextMode.AUTO)
    return _panel(panel, pid, title, description, grid, query)


def _graph(
    pid: int,
    title: str,
    description: str,
    grid: tuple[int, int, int, int],
    *queries: prometheus.Dataquery,
    unit: str | None = None,
) -> timeseries.Panel:
    """A time series with a bottom legend and a tooltip that lists every series."""
    panel = timeseries.Panel().legend(
        common.VizLegendOptions()
        .display_mode(LegendDisplayMode.LIST)
        .placement(LegendPlacement.BOTTOM)
        .show_legend(True)
    )
    panel.tooltip(
        common.VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING)
    )
    if unit:
        panel.unit(unit)
    return _panel(panel, pid, title, description, grid, *queries)


def _quantiles(metric: str) -> list[prometheus.Dataquery]:
    """p50 and p95 of a Prometheus histogram."""
    return [
        _query(
            f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket[$__rate_interval])))",
            f"p{round(q * 100)}",
        )
        for q in (0.5, 0.95)
    ]


def _dashboard(uid: str, title: str, description: str) -> dash.Dashboard:
    """The settings both dashboards share, and their datasource variable."""
    board = dash.Dashboard(title).uid(uid).description(description).tags(TAGS)
    board.editable().tooltip(model.DashboardCursorSync.CROSSHAIR).refresh("30s")
    board.time("now-6h", "now").timezone("browser").version(1)
    return board.with_variable(
        dash.DatasourceVariable("datasource").label("Data source").type("prometheus")
    )


def _variable(name: str, label: str, query: str) -> dash.QueryVariable:
    """A Prometheus label_values variable, refreshed when the time range changes."""
    variable = dash.QueryVariable(name).label(label).datasource(DATASOURCE)
    variable.query({"query": query, "refId": f"{name}-var"})
    variable.refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
    return variable.sort(model.VariableSort.ALPHABETICAL_ASC)


# ----- the dashboards -------------------------------------------------------------------


def overview() -> dash.Dashboard:
    """Rheostat / Overview: the operator as a whole."""
    board = _dashboard(
        "rheostat-overview",
        "Rheostat / Overview",
        "The Rheostat operator: studies by phase, finished trials by state, "
        "reconcile and sampler latency, trial durations.",
    )
    failed = 'rheostat_trials_total{state="failed"}'
    stacked = (
        _graph(
            4,
            "Trials finished per minute, by state",
            "rate(rheostat_trials_total) by state: complete, pruned, failed, retried.",
            (8, 12, 0, 6),
            _query(
                "sum by (state) (rate(rheostat_trials_total[$__rate_interval])) * 60", "{{state}}"
            ),
            unit="short",
        )
        .draw_style(GraphDrawStyle.LINE)
        .stacking(common.StackingConfig().mode(StackingMode.NORMAL).group("A"))
        .fill_opacity(20)
    )
    durations = heatmap.Panel().calculate(False).cell_gap(1)
    durations.y_axis(heatmap.YAxisConfig().unit("s"))
    durations.color(heatmap.HeatmapColorOptions().mode(HeatmapColorMode.SCHEME).scheme("Blues"))
    durations.mode(TooltipDisplayMode.SINGLE).show_y_histogram().show_legend()
    studies = table.Panel().show_header(True)
    studies.with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
    studies.with_transformation(
        model.DataTransformerConfig(
            id_val="organize",
            options={
                "excludeByName": dict.fromkeys(
                    ["Time", "__name__", "instance", "job", "pod"], True
                ),
                "renameByName": {"Value #A": "best value", "Value #B": "running trials"},
            },
        )
    )
    running = 'sum by (namespace, study) (rheostat_study_trials{state="running"})'
    panels: list[Panel] = [
        _stat(
            1,
            "Studies by phase",
            "rheostat_studies: studies this operator drives, by phase.",
            (6, 12, 0, 0),
            _query("sum by (phase) (rheostat_studies)", "{{phase}}", instant=True),
        ),
        _stat(
            2,
            "Failed trials",
            f"Trials that ended failed over the dashboard's time range ({failed}).",
            (6, 6, 12, 0),
            _query(f"sum(increase({failed}[$__range])) or vector(0)", "failed", instant=True),
        ),
        _stat(
            3,
            "Trials finished",
            "Trials that reached a final state over the dashboard's time range.",
            (6, 6, 18, 0),
            _query(
                "sum(increase(rheostat_trials_total[$__range])) or vector(0)",
                "finished",
                instant=True,
            ),
        ),
        stacked,
        _graph(
            5,
            "Reconcile latency",
            "p50 and p95 of one reconcile pass of one study (rheostat_reconcile_duration_seconds).",
            (8, 12, 12, 6),
            *_quantiles("rheostat_reconcile_duration_seconds"),
            unit="s",
        ),
        _graph(
            6,
            "Sampler latency",
            "p50 and p95 of asking the sampler for the next trials "
            "(rheostat_sampler_duration_seconds).",
            (8, 12, 0, 14),
            *_quantiles("rheostat_sampler_duration_seconds"),
            unit="s",
        ),
        _graph(
            7,
            "Reconciles per second",
            "How often the operator reconciles (all studies).",
            (8, 12, 12, 14),
            _query(
                "sum(rate(rheostat_reconcile_duration_seconds_count[$__rate_interval]))",
                "reconciles/s",
            ),
            unit="ops",
        ),
        _panel(
            durations,
            8,
            "Trial duration",
            "Wall time of finished trials (rheostat_trial_duration_seconds), per bucket.",
            (8, 12, 0, 22),
            *[
                _query(
                    "sum by (le) "
                    "(increase(rheostat_trial_duration_seconds_bucket[$__rate_interval]))",
                    "{{le}}",
                ).format(PromQueryFormat.HEATMAP)
            ],
        ),
        _graph(
            9,
            "Trial duration p50 / p95",
            "Quantiles of the wall time of finished trials.",
            (8, 12, 12, 22),
            *_quantiles("rheostat_trial_duration_seconds"),
            unit="s",
        ),
        _panel(
            studies,
            10,
            "Studies",
            "Every study's best objective value and running trials.",
            (8, 24, 0, 30),
            *[
                _query(expr, "__auto", instant=True).format(PromQueryFormat.TABLE)
                for expr in ("rheostat_study_best_value", running)
            ],
        ),
    ]
    for panel in panels:
        board.with_panel(panel)
    return board


def study() -> dash.Dashboard:
    """Rheostat / Study: one TuningStudy, chosen by the namespace and study variables."""
    board = _dashboard(
        "rheostat-study",
        "Rheostat / Study",
        "One TuningStudy: best value, trials by state, the objective of every trial, "
        "intermediate curves, the LR range test, failures, and for a study with several "
        "objectives its Pareto front.",
    )
    trials = "rheostat_study_trials"
    board.with_variable(_variable("namespace", "Namespace", f"label_values({trials}, namespace)"))
    board.with_variable(
        _variable("study", "Study", f'label_values({trials}{{namespace="$namespace"}}, study)')
    )
    board.with_variable(
        _variable("metric", "Metric", f"label_values(rheostat_trial_metric{{{SEL}}}, metric)")
    )
    best = f"rheostat_study_best_value{{{SEL}}}"
    curve = f'rheostat_trial_metric{{{SEL}, role="trial", metric="$metric"}}'
    lr_test = f'rheostat_trial_metric{{{SEL}, role="lr-range-test", metric="{{}}"}}'
    failed = f'{trials}{{{SEL}, state="failed"}}'
    per_trial = barchart.Panel().orientation(VizOrientation.AUTO).x_field("trial")
    per_trial.show_value(VisibilityMode.AUTO)
    per_trial.legend(common.VizLegendOptions().show_legend(False))
    lr_axis = (
        model.DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
        model.DynamicConfigValue(
            id_val="custom.scaleDistribution", value={"type": "log", "log": 10}
        ),
    )
    panels: list[Panel] = [
        _stat(
            1,
            "Best value",
            "The study's best objective value so far (rheostat_study_best_value).",
            (5, 6, 0, 0),
            _query(best, "best", instant=True),
        ),
        _stat(
            2,
            "Suggested learning rate",
            "What the LR range test suggested (rheostat_lr_range_test_suggestion).",
            (5, 6, 6, 0),
            _query(f"rheostat_lr_range_test_suggestion{{{SEL}}}", "lr", instant=True),
        ),
        _stat(
            3,
            "Failed trials",
            'Trials of this study counted as failed (rheostat_study_trials{state="failed"}).',
            (5, 6, 12, 0),
            _query(failed, "failed", instant=True),
        ),
        _stat(
            4,
            "Running trials",
            "Trials of this study running now.",
            (5, 6, 18, 0),
            _query(f'{trials}{{{SEL}, state="running"}}', "running", instant=True),
        ),
        _graph(
            5,
            "Best value over time",
            "rheostat_study_best_value: how the best trial improved.",
            (8, 12, 0, 5),
            _query(best, "best value"),
        ).line_interpolation(LineInterpolation.STEP_AFTER),
        _graph(
            6,
            "Trials by state",
            "rheostat_study_trials: running, complete, pruned and failed trials.",
            (8, 12, 12, 5),
            _query(f"sum by (state) ({trials}{{{SEL}}})", "{{state}}"),
            unit="short",
        ),
        _panel(
            per_trial,
            7,
            "Objective per trial ($metric)",
            "The last value of $metric each trial reported over the time range.",
            (8, 12, 0, 13),
            *[
                _query(
                    f"max by (trial) (last_over_time({curve}[$__range]))",
                    "trial {{trial}}",
                    instant=True,
                ).format(PromQueryFormat.TABLE)
            ],
        ),
        _graph(
            8,
            "Intermediate curves ($metric)",
            "rheostat_trial_metric from the trial pods, one line per trial.",
            (8, 12, 12, 13),
            _query(curve, "trial {{trial}}"),
        ),
        _graph(
            9,
            "Training progress (step)",
            "rheostat_trial_step: the step of each trial's latest report.",
            (8, 12, 0, 21),
            _query(
                f'max by (trial) (rheostat_trial_step{{{SEL}, role="trial"}})', "trial {{trial}}"
            ),
            unit="short",
        ),
        _graph(
            10,
            "LR range test",
            "The LR range test pod's loss (left) and learning rate (right, log scale) "
            "as the sweep runs.",
            (8, 12, 12, 21),
            _query(lr_test.replace("{}", "loss"), "loss"),
            _query(lr_test.replace("{}", "lr"), "lr"),
        ).override_by_name("lr", list(lr_axis)),
        _graph(
            11,
            "Failures",
            "Failed trials of this study, and the rate of failed trials across the operator "
            '(rheostat_trials_total{state="failed"}).',
            (8, 24, 0, 29),
            _query(failed, "failed in this study"),
            _query(
                'sum(rate(rheostat_trials_total{state="failed"}[$__rate_interval])) * 60 '
                "or vector(0)",
                "failed per minute, all studies",
            ),
            unit="short",
        ),
        *_multi_objective_panels(y=37),
    ]
    for panel in panels:
        board.with_panel(panel)
    return board


def _multi_objective_panels(y: int) -> list[Panel]:
    """A study with several objectives has no single best: its front, and each
    objective's best (the front's extreme along it), as they move over time.
    Empty for a study with one objective."""
    return [
        _graph(
            12,
            "Pareto front size (several objectives)",
            "rheostat_study_pareto_front_size: trials no other trial beats on every "
            "objective at once. It grows as trials find new trade-offs and shrinks when "
            "one trial dominates several.",
            (8, 12, 0, y),
            _query(f"rheostat_study_pareto_front_size{{{SEL}}}", "trials on the front"),
            unit="short",
        ).line_interpolation(LineInterpolation.STEP_AFTER),
        _graph(
            13,
            "Best of each objective (several objectives)",
            "rheostat_study_objective_best: the best value of each objective so far, "
            "in its own direction (the front's extreme along that objective).",
            (8, 12, 12, y),
            _query(f"rheostat_study_objective_best{{{SEL}}}", "{{objective}}"),
        ).line_interpolation(LineInterpolation.STEP_AFTER),
    ]


DASHBOARDS: dict[str, Callable[[], dash.Dashboard]] = {
    "overview.json": overview,
    "study.json": study,
}


# ----- rendering and checking -------------------------------------------------------------


def render(build: Callable[[], dash.Dashboard]) -> str:
    """The committed text of one dashboard: the SDK's JSON, indented, newline-terminated."""
    return json.dumps(build().build(), cls=JSONEncoder, indent=2, ensure_ascii=False) + "\n"


def check(out: Path = OUT) -> list[str]:
    """Every reason the dashboards in `out` are not what this file generates, or not lint."""
    errors: list[str] = []
    for name, build in DASHBOARDS.items():
        path = out / name
        text = render(build)
        if not path.exists() or path.read_text() != text:
            errors.append(f"{name} is stale: run `make dashboards`")
        errors += schema_errors(name, text)
        errors += convention_errors(name, json.loads(text))
    return errors


def write(out: Path = OUT) -> None:
    """Regenerate every dashboard into `out`."""
    for name, build in DASHBOARDS.items():
        (out / name).write_text(render(build))


def main(argv: Sequence[str] | None = None) -> int:
    """Write the dashboards, or with --check report what is stale or off-convention."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--check", action="store_true", help="verify instead of writing")
    args = parser.parse_args(argv)
    if args.check:
        errors = check()
        for error in errors:
            print(error, file=sys.stderr)
        return 1 if errors else 0
    write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
