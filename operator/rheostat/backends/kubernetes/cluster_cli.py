"""`rheostat get | describe | plot | export`: the command line's side of a cluster study.

cli.py parses; this module connects with the user's kubeconfig, reads through
:mod:`read` and hands the result to the same report, plot and storage writers a
local run uses. Errors a user can fix (no kubeconfig, no such study, no CRDs) are
one line and exit 2, like an invalid study file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from rich.console import Console

from rheostat.backends.kubernetes.read import ClusterReader, ReadError, connect, study_row
from rheostat.backends.local.report import results_document

EXIT_INVALID = 2


def run(args: argparse.Namespace) -> int:
    """Carry out one of the cluster commands; returns the exit code."""
    err = Console(stderr=True, soft_wrap=True)
    try:
        api, default_namespace = connect(args.kubeconfig, args.context)
        with api:
            reader = ClusterReader(api)
            namespace = args.namespace or default_namespace
            return _COMMANDS[args.command](reader, namespace, args)
    except ReadError as error:
        err.print(f"error: {error}", markup=False, highlight=False)
        return EXIT_INVALID


def _get(reader: ClusterReader, namespace: str, args: argparse.Namespace) -> int:
    from rheostat.backends.kubernetes.present import study_lines

    out = Console(soft_wrap=True)
    if args.study is None:
        every = args.all_namespaces
        bodies = reader.studies(None if every else namespace)
        if not bodies:
            where = "" if every else f" in {namespace} namespace"
            Console(stderr=True).print(f"No resources found{where}.", highlight=False)
            return 0
        rows = [study_row(b) for b in bodies]
        out.print(study_lines(rows, namespaces=every), markup=False, highlight=False)
        return 0
    study = reader.study(namespace, args.study)
    if args.output is not None:
        document = results_document(study.results())
        text = (
            json.dumps(document, indent=2)
            if args.output == "json"
            else yaml.safe_dump(document, sort_keys=False)
        )
        print(text)
        return 0
    out.print(study_lines([study_row(study.body)], namespaces=False), markup=False)
    return 0


def _describe(reader: ClusterReader, namespace: str, args: argparse.Namespace) -> int:
    from rheostat.backends.kubernetes.present import describe

    describe(reader.study(namespace, args.study, events=True), Console(soft_wrap=True))
    return 0


def _folder(args: argparse.Namespace) -> Path:
    folder = Path(args.output_dir or args.study)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _plot(reader: ClusterReader, namespace: str, args: argparse.Namespace) -> int:
    from rheostat.backends.local.plots import write_plots

    results = reader.study(namespace, args.study).results()
    paths = write_plots(results, _folder(args))
    print("Wrote " + ", ".join(str(p) for p in paths))
    return 0


def _export(reader: ClusterReader, namespace: str, args: argparse.Namespace) -> int:
    study = reader.study(namespace, args.study)
    if args.storage:
        from rheostat.backends.kubernetes.export import export_to_storage

        written = export_to_storage(study, args.storage, args.study_name)
        print(
            f"Wrote study {written.study_name!r} ({len(written.trials)} trials) to {args.storage}"
        )
        return 0
    from rheostat.backends.local.report import write_results

    paths = write_results(study.results(), _folder(args))
    print("Wrote " + ", ".join(str(p) for p in paths))
    return 0


_COMMANDS = {"get": _get, "describe": _describe, "plot": _plot, "export": _export}
