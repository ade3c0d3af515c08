"""The `rheostat` command: run | validate | crd | status | operator, and for a
cluster study get | describe | plot | export | dashboard (also `kubectl rheostat ...`).

Exit codes: 0 success, 1 a study that ran and failed, 2 invalid input or a work
folder that cannot hold the study (unreadable file, read-only folder, full disk;
what ran is kept), 130 interrupted (the study can be resumed with the same command).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from rheostat.crd import all_crds
from rheostat.spec import InvalidStudyError, TuningStudy
from rheostat.validation import load_study

EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_INTERRUPTED = 130


def _read_study(path: str, err: Console) -> TuningStudy | None:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        err.print(f"{path}: cannot read: {error.strerror}", markup=False, highlight=False)
        return None
    except UnicodeDecodeError as error:
        byte = error.object[error.start]
        err.print(
            f"{path}: not UTF-8 text (byte 0x{byte:02x} at offset {error.start}); save it as UTF-8",
            markup=False,
            highlight=False,
        )
        return None
    try:
        return load_study(text)
    except InvalidStudyError as error:
        for problem in error.problems:
            err.print(f"{path}: {problem}", markup=False, highlight=False)
        return None


def cmd_validate(args: argparse.Namespace) -> int:
    err = Console(stderr=True, soft_wrap=True)
    failed = False
    for path in args.files:
        study = _read_study(path, err)
        if study is None:
            failed = True
        else:
            print(f"{path}: valid ({study.metadata.name}, {len(study.spec.parameters)} parameters)")
    return EXIT_INVALID if failed else 0


def cmd_crd(args: argparse.Namespace) -> int:
    sys.stdout.write(yaml.safe_dump_all(all_crds(), sort_keys=False, width=100))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from rheostat.backends.local.plots import write_plots
    from rheostat.backends.local.report import StudyResults, print_summary, write_results
    from rheostat.backends.local.runner import (
        LocalRunError,
        LocalRunner,
        RunOptions,
        WorkdirError,
        workdir_error,
    )

    err = Console(stderr=True, soft_wrap=True)
    study = _read_study(args.file, err)
    if study is None:
        return EXIT_INVALID
    workdir = Path(args.workdir or f"runs/{study.metadata.name}")
    options = RunOptions(workdir=workdir, fresh=args.fresh, show_progress=not args.no_progress)
    try:
        runner = LocalRunner(study, options)
    except LocalRunError as error:
        err.print(f"{args.file}: {error}", markup=False, highlight=False)
        return EXIT_INVALID
    # The runner holds the work folder until the results are written.
    with runner:
        try:
            engine = runner.run()
        except KeyboardInterrupt:
            counts = runner.engine.counts()
            by = runner.stopped_by
            cause = "Interrupted" if by in (None, "SIGINT") else f"Stopped by {by}"
            # After SIGHUP the terminal may be gone: writing to it then fails (EIO).
            with contextlib.suppress(OSError):
                err.print(
                    f"{cause}: every trial was stopped; {counts.finished} finished trials "
                    f"are kept in {workdir}. Run the same command again to resume.",
                    markup=False,
                    highlight=False,
                )
            return EXIT_INTERRUPTED
        except LocalRunError as error:
            err.print(f"{args.file}: {error}", markup=False, highlight=False)
            return EXIT_INVALID if isinstance(error, WorkdirError) else EXIT_FAILED
        out = Console()
        results = StudyResults.from_engine(engine)
        print_summary(results, out)
        try:
            paths = [*write_results(results, workdir), *write_plots(results, workdir)]
        except OSError as error:
            problem = workdir_error(workdir, error)
            err.print(f"{args.file}: {problem}", markup=False, highlight=False)
            return EXIT_INVALID
        out.print("Wrote " + ", ".join(str(p) for p in paths), markup=False, highlight=False)
    return 0 if engine.phase == "Succeeded" else EXIT_FAILED


def cmd_status(args: argparse.Namespace) -> int:
    import optuna

    from rheostat import ledger
    from rheostat.backends.local.storage import StudyFileError, open_storage

    err = Console(stderr=True, soft_wrap=True)
    database = Path(args.workdir) / "study.db"
    if not database.exists():
        err.print(f"{args.workdir}: no study here (no study.db)", markup=False, highlight=False)
        return EXIT_INVALID
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = open_storage(database)
        summaries = optuna.get_all_study_summaries(storage)
    except StudyFileError as error:
        err.print(f"{database} {error}", markup=False, highlight=False)
        return EXIT_INVALID
    except optuna.exceptions.StorageInternalError as error:
        cause = error.__cause__ or error
        message = f"{database} cannot be read as a study database: {cause}"
        err.print(message, markup=False, highlight=False)
        return EXIT_INVALID
    for summary in summaries:
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        states: dict[str, int] = {}
        for trial in study.get_trials(deepcopy=False):
            if trial.user_attrs.get("rheostat:kind", "counted") == "counted":
                states[trial.state.name.lower()] = states.get(trial.state.name.lower(), 0) + 1
        counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
        print(f"{summary.study_name}: {counts or 'no trials yet'}")
        if (best := ledger.best_counted(study)) is not None:  # as results.json: no seed
            print(f"  best #{best.number}: {best.value:.6g} {best.params}")
        elif len(study.directions) > 1 and (front := study.best_trials):
            numbers = ", ".join(f"#{t.number}" for t in front)
            print(f"  Pareto front of {len(front)}: {numbers}")
    return 0


def cmd_cluster(args: argparse.Namespace) -> int:
    """get | describe | plot | export: a cluster study, shown as a local run is."""
    from rheostat.backends.kubernetes import cluster_cli

    return cluster_cli.run(args)


def cmd_dashboard(args: argparse.Namespace) -> int:
    """optuna-dashboard over the cluster's studies (read-only, live)."""
    from rheostat.backends.kubernetes.dashboard import serve

    return serve(args)


def cmd_operator(args: argparse.Namespace) -> int:
    from rheostat.backends.kubernetes.main import run_operator

    return run_operator(
        namespaces=args.namespace or [],
        metrics_port=args.metrics_port,
        liveness=args.liveness or None,
        verbose=args.verbose,
    )


def cmd_gp_worker(args: argparse.Namespace) -> int:
    """The operator's GP ask worker (a sidecar from an image with torch)."""
    from rheostat.backends.kubernetes.gp_worker import serve

    return serve(args.socket)


def _cluster_commands(commands: Any) -> None:
    """The commands that read a study from the cluster the kubeconfig points at."""
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    where.add_argument("--context", help="kubeconfig context (default: the current one)")
    where.add_argument("--namespace", "-n", help="namespace (default: the context's)")

    get = commands.add_parser(
        "get", parents=[where], help="list cluster studies, or show one's results table"
    )
    get.add_argument("study", nargs="?", help="a study's name; without it, list them all")
    get.add_argument("--all-namespaces", "-A", action="store_true", help="list every namespace")
    get.add_argument("--output", "-o", choices=["json", "yaml"], help="one study as results.json")
    describe = commands.add_parser(
        "describe", parents=[where], help="a cluster study: conditions, results, Events"
    )
    plot = commands.add_parser(
        "plot", parents=[where], help="a cluster study's PNG plots (LR curve, history, curves)"
    )
    export = commands.add_parser(
        "export",
        parents=[where],
        help="a cluster study's results.json/csv, or into an Optuna storage (--storage)",
    )
    export.add_argument(
        "--storage", help="Optuna storage URL (e.g. sqlite:///study.db) for optuna-dashboard"
    )
    export.add_argument("--study-name", help="name of the study in --storage (default: its own)")
    for command, writes in ((describe, False), (plot, True), (export, True)):
        command.add_argument("study", help="the TuningStudy's name")
        if writes:
            command.add_argument(
                "--output-dir", "-d", help="folder for the files (default: ./STUDY)"
            )
    for command in (get, describe, plot, export):
        command.set_defaults(handler=cmd_cluster)
    dashboard = commands.add_parser(
        "dashboard",
        parents=[where],
        help="serve optuna-dashboard over the cluster's studies (live, read-only)",
    )
    dashboard.add_argument(
        "--all-namespaces", "-A", action="store_true", help="show every namespace's studies"
    )
    dashboard.add_argument("--port", type=int, default=8080, help="port (0: any free one)")
    dashboard.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a pod)"
    )
    dashboard.set_defaults(handler=cmd_dashboard)


def build_parser(prog: str = "rheostat") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a study on this machine, trials as processes")
    run.add_argument("file", help="study YAML (the same file kubectl applies)")
    run.add_argument("--workdir", help="where the study, logs and results go (runs/<name>)")
    run.add_argument("--fresh", action="store_true", help="discard a previous run in workdir")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.set_defaults(handler=cmd_run)

    validate = commands.add_parser("validate", help="check study files; exit 2 on any problem")
    validate.add_argument("files", nargs="+")
    validate.set_defaults(handler=cmd_validate)

    crd = commands.add_parser("crd", help="print the CustomResourceDefinitions")
    crd.set_defaults(handler=cmd_crd)

    status = commands.add_parser("status", help="summarise a local study's work folder")
    status.add_argument("workdir")
    status.set_defaults(handler=cmd_status)

    operator = commands.add_parser("operator", help="run the Kubernetes operator")
    operator.add_argument(
        "--namespace", "-n", action="append", help="watch this namespace (repeatable); default all"
    )
    operator.add_argument("--metrics-port", type=int, default=8080, help="0 to serve no metrics")
    operator.add_argument("--liveness", default="http://0.0.0.0:8081/healthz", help="'' for none")
    operator.add_argument("--verbose", action="store_true")
    operator.set_defaults(handler=cmd_operator)
    gp_worker = commands.add_parser(
        "gp-worker", help="serve the operator's bayesian (GP) asks on a Unix socket (needs torch)"
    )
    gp_worker.add_argument(
        "--socket",
        default=os.environ.get("RHEOSTAT_GP_WORKER_SOCKET") or "/run/rheostat-gp/ask.sock",
        help="the socket's path, in a volume shared with the operator container",
    )
    gp_worker.set_defaults(handler=cmd_gp_worker)
    _cluster_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "rheostat") -> int:
    args = build_parser(prog).parse_args(argv)
    return int(args.handler(args))


def kubectl_main() -> int:
    """`kubectl rheostat ...`: kubectl runs the `kubectl-rheostat` executable on PATH."""
    return main(prog="kubectl rheostat")


if __name__ == "__main__":
    sys.exit(main())
