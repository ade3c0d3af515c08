"""What a local run prints and reads back from a trial: trainer text shown verbatim,
and a failed trial's log read from its end only.

Everything a trainer writes (its log, hence a failed trial's reason and the LR range
test's error) and every parameter value reaches the terminal through rich, whose
markup would read ``[/data/...]`` as a closing tag (and crash the run) and
``[rank0]:`` as a style (and drop it).
"""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

from rich.console import Console

from rheostat.backends.local.process import log_tail
from rheostat.backends.local.progress import ProgressDisplay
from rheostat.backends.local.report import StudyResults, print_summary
from rheostat.engine import Engine, TrialRecord
from rheostat.spec import study_from_mapping
from tests.bad_specs import good_study

# Lines a trainer really printed before exiting 1 (issue 22).
SHARDS = "error: no shards found in [/data/shards/train-*.tfrecord]"
RANK = "[rank0]: RuntimeError: CUDA out of memory"
# Categorical values are the user's own strings: markup-like ones too.
CHOICES = ["[bold]sgd", "adam[/]"]


def _engine() -> Engine:
    document = good_study()
    document["spec"]["parameters"][3]["values"] = CHOICES
    spec = study_from_mapping(document).spec
    params = {"lr": 0.01, "momentum": 0.5, "layers": 2}
    records = [
        TrialRecord(0, {**params, "optimizer": CHOICES[0]}, "complete", value=0.9),
        TrialRecord(1, {**params, "optimizer": CHOICES[1]}, "failed", reason=f"{SHARDS}\n{RANK}"),
    ]
    lr_error = {"error": f"the LR range test exited with code 1: {SHARDS}"}
    return Engine.rebuild(spec, records, lr_error)


def _console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=400, force_terminal=False, color_system=None), buffer


def test_progress_lines_show_trainer_text_and_parameters_verbatim() -> None:
    console, buffer = _console()
    display = ProgressDisplay(_engine(), console=console)
    display.lr_test_started(10)
    display.lr_test_done()
    display.refresh()  # announces both finished trials
    printed = buffer.getvalue()
    assert f"LR range test gave no suggestion: the LR range test exited with code 1: {SHARDS}" in (
        printed
    )
    assert SHARDS in printed
    assert RANK in printed
    assert f"optimizer={CHOICES[0]}" in printed
    assert f"optimizer={CHOICES[1]}" in printed


def test_the_results_table_and_summary_show_trainer_text_verbatim() -> None:
    console, buffer = _console()
    print_summary(StudyResults.from_engine(_engine()), console)
    printed = buffer.getvalue()
    assert f"LR range test: no suggestion (the LR range test exited with code 1: {SHARDS})" in (
        printed
    )
    assert f"optimizer={CHOICES[0]}" in printed
    assert f"optimizer={CHOICES[1]}" in printed
    assert f"Best parameters: lr=0.01, momentum=0.5, layers=2, optimizer={CHOICES[0]}" in printed


def test_a_logs_tail_is_read_from_its_end_only(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    size = 256 * 1024 * 1024
    with log.open("wb") as handle:
        handle.write(b"first line, long gone\n")
        handle.seek(size)  # a sparse file: 256 MiB on paper, nothing on disk
        handle.write(b"\nepoch 3\nloading shards\n" + SHARDS.encode() + b"\n" + RANK.encode())
    tracemalloc.start()
    try:
        tail = log_tail(log, 3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tail == f"loading shards\n{SHARDS}\n{RANK}"
    assert peak < 1024 * 1024, f"reading the tail took {peak} bytes"


def test_a_short_or_missing_log_gives_what_there_is(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    assert log_tail(log, 5) == ""
    log.write_bytes(b"only\n\xffline\n\n")
    assert log_tail(log, 5) == "only\n\ufffdline"
    # A last line longer than what is read is cut, not read whole.
    log.write_bytes(b"x" * 1_000_000 + b"\n" + b"y" * 1_000_000)
    tail = log_tail(log, 2)
    assert set(tail) == {"y"}
    assert len(tail) < 100_000
