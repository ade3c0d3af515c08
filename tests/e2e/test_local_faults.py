"""`rheostat run` when things go wrong: repeated Ctrl-C, two runs on one folder, a hung
LR range test, a trainer command that cannot be started, a malformed LR curve.

Each test runs the real command as a subprocess against real trainer processes. The
trainers carry a marker argument (an unused ``--seed=…``), so that a test can find
them with ``pgrep`` and, should it fail, kill whatever it left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

from rheostat.backends.local.lock import WorkdirBusyError, WorkdirLock
from tests.studies import synthetic_study

# The conftest fixture: writes a study document, returns its path.
WriteStudy = Callable[[dict[str, Any]], Path]

# Generous: the machine running the suite may be loaded.
DEADLINE_SECONDS = 90.0


def _command(path: Path, workdir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rheostat.cli",
        "run",
        "--no-progress",
        str(path),
        "--workdir",
        str(workdir),
    ]


def _trainer_pids(marker: str) -> list[int]:
    # "--": the marker starts with dashes and must not be read as an option of pgrep.
    found = subprocess.run(
        ["pgrep", "-f", "--", marker], capture_output=True, text=True, check=False
    )
    assert found.returncode in (0, 1), found.stderr  # 1: no process matched
    return [int(pid) for pid in found.stdout.split()]


def _alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _kill_leftovers(marker: str, run: subprocess.Popen[str] | None = None) -> None:
    """After a failed test: leave no trainer or tuner behind."""
    if run is not None:
        if run.poll() is None:
            run.kill()
            run.wait()
        for stream in (run.stdout, run.stderr):
            if stream is not None:
                stream.close()
    for pid in _trainer_pids(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _wait_for_hung_trials(workdir: Path, marker: str, count: int) -> list[int]:
    """The pids of `count` trainers that have reported once and now hang (and so
    have installed their SIGTERM handler: the first SIGTERM will not end them)."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        logs = [p.read_text() for p in workdir.glob("trials/t*/log.txt")]
        pids = _trainer_pids(marker)
        if sum("step 0:" in log for log in logs) >= count and len(pids) >= count:
            return pids
        time.sleep(0.1)
    raise AssertionError(f"{count} trials did not start within {DEADLINE_SECONDS}s")


def _counted_trials(workdir: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{workdir / 'study.db'}")
    return [
        t for t in study.get_trials() if t.user_attrs.get("rheostat:kind", "counted") == "counted"
    ]


def _results(workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = json.loads((workdir / "results.json").read_text())
    return results


def test_a_second_ctrl_c_still_stops_and_reaps_every_trial(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    marker = "--seed=736251"
    document = synthetic_study(
        "twice", args=["--fault", "hang", marker], budget={"maxTrials": 3, "parallelism": 3}
    )
    workdir = tmp_path / "work"
    run = subprocess.Popen(
        _command(write_study(document), workdir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        pids = _wait_for_hung_trials(workdir, marker, 3)
        run.send_signal(signal.SIGINT)
        # The hung trials absorb the first SIGTERM, so the runner is still stopping
        # them a second later: the second Ctrl-C lands in the middle of the cleanup.
        time.sleep(1.0)
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=DEADLINE_SECONDS)
        assert run.returncode == 130, stderr
        assert "every trial was stopped" in stderr
        assert "Traceback" not in stderr
        assert [pid for pid in pids if _alive(pid)] == [], "a trial outlived a double Ctrl-C"
        assert _trainer_pids(marker) == []
    finally:
        _kill_leftovers(marker, run)


def test_a_second_run_on_the_same_workdir_is_refused(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    marker = "--seed=551234"
    document = synthetic_study(
        "locked", args=["--fault", "hang", marker], budget={"maxTrials": 2, "parallelism": 2}
    )
    workdir = tmp_path / "work"
    command = _command(write_study(document), workdir)
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pids = _wait_for_hung_trials(workdir, marker, 2)
        second = subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=DEADLINE_SECONDS
        )
        assert second.returncode == 2, second.stderr
        assert f"{workdir} is in use by another `rheostat run` (pid {first.pid})" in second.stderr
        assert "Traceback" not in second.stderr
        # The first run and its trials were left alone.
        assert first.poll() is None
        assert all(_alive(pid) for pid in pids)
        assert sorted(_trainer_pids(marker)) == sorted(pids)
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=DEADLINE_SECONDS)
        assert first.returncode == 130, stderr
        assert "Traceback" not in stderr
    finally:
        _kill_leftovers(marker, first)
    # No trial was closed as interrupted and started again by the second run.
    trials = _counted_trials(workdir, "locked")
    assert [t.number for t in trials] == [0, 1]
    assert all(t.state == optuna.trial.TrialState.RUNNING for t in trials)


def test_the_work_folder_lock_names_its_holder_and_is_released(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    with WorkdirLock(workdir) as holder:
        assert holder.held
        second = WorkdirLock(workdir)
        with pytest.raises(WorkdirBusyError, match=rf"\(pid {os.getpid()}\)") as refused:
            second.acquire()
        assert str(workdir) in str(refused.value)
    second.acquire()  # free again once the holder let go
    second.release()


def test_a_hung_lr_range_test_is_timed_out_and_the_study_goes_on(
    tmp_path: Path,
    write_study: WriteStudy,
) -> None:
    marker = "--seed=662910"
    document = synthetic_study(
        "lrhang",
        lr_test=True,
        # Only the LR range test (RHEOSTAT_TRIAL=-1) hangs; the trials run normally.
        args=["--fault", "hang", "--fault-on-trial", "-1", marker],
        budget={"maxTrials": 2, "parallelism": 2, "trialTimeout": 3},
    )
    workdir = tmp_path / "work"
    try:
        run = subprocess.run(
            _command(write_study(document), workdir),
            capture_output=True,
            text=True,
            check=False,
            timeout=DEADLINE_SECONDS,
        )
    finally:
        _kill_leftovers(marker)
    assert run.returncode == 0, run.stderr
    status = _results(workdir)["status"]
    assert status["lrRangeTest"] == {"error": "the LR range test timed out after 3s"}
    assert status["phase"] == "Succeeded"
    assert status["trials"]["finished"] == 2
    assert _trainer_pids(marker) == []


def test_a_command_not_on_path_is_one_clear_message(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    document = synthetic_study("typo")
    container = document["spec"]["trialTemplate"]["spec"]["containers"][0]
    container["command"] = ["pythn", *container["command"][1:]]
    workdir = tmp_path / "work"
    run = subprocess.run(
        _command(write_study(document), workdir),
        capture_output=True,
        text=True,
        check=False,
        timeout=DEADLINE_SECONDS,
    )
    assert run.returncode == 2
    assert (
        "spec.trialTemplate.spec.containers[0].command: 'pythn' was not found (is it on PATH?)"
        in run.stderr
    )
    assert "Traceback" not in run.stderr
    assert not workdir.exists(), "nothing may be started for a trainer that cannot start"


def test_a_command_that_cannot_be_executed_stops_the_run_cleanly(
    tmp_path: Path,
    write_study: WriteStudy,
) -> None:
    # Found and executable, so the check before the study passes, but exec fails:
    # its interpreter does not exist.
    script = tmp_path / "train.sh"
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    document = synthetic_study("noexec", budget={"maxTrials": 3, "parallelism": 2})
    document["spec"]["trialTemplate"]["spec"]["containers"][0]["command"] = [str(script)]
    workdir = tmp_path / "work"
    run = subprocess.run(
        _command(write_study(document), workdir),
        capture_output=True,
        text=True,
        check=False,
        timeout=DEADLINE_SECONDS,
    )
    assert run.returncode == 1, run.stderr
    assert f"could not start the trainer's command '{script}'" in run.stderr
    assert "Traceback" not in run.stderr
    # Not one failed trial per attempt: the run stopped at the first.
    assert all(t.state != optuna.trial.TrialState.FAIL for t in _counted_trials(workdir, "noexec"))


MALFORMED_LR_TRAINER = """
import json, os, sys
if os.environ.get("RHEOSTAT_MODE") == "lr-range-test":
    curve = {"lrs": [0.001, 0.01, "not a number"], "losses": [2.3, 1.0, 0.5]}
    with open(os.environ["RHEOSTAT_TERMINATION_MESSAGE_PATH"], "w") as f:
        json.dump({"lrRangeTest": curve}, f)
else:
    from rheostat_trainer.examples.synthetic import main
    sys.exit(main(["--steps", "1"]))
"""


def test_a_malformed_lr_curve_is_the_lr_range_tests_error(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    document = synthetic_study("badcurve", lr_test=True, budget={"maxTrials": 2, "parallelism": 2})
    container = document["spec"]["trialTemplate"]["spec"]["containers"][0]
    container["command"] = ["python", "-c", MALFORMED_LR_TRAINER]
    workdir = tmp_path / "work"
    run = subprocess.run(
        _command(write_study(document), workdir),
        capture_output=True,
        text=True,
        check=False,
        timeout=DEADLINE_SECONDS,
    )
    assert run.returncode == 0, run.stderr
    status = _results(workdir)["status"]
    assert status["lrRangeTest"]["error"].startswith("the LR range test's curve is malformed: ")
    assert status["phase"] == "Succeeded"
    assert status["trials"]["finished"] == 2


# A trainer that starts two children (a data loader, a helper script) which would
# run on for 777 s, then trains with the synthetic example's arguments. The marker
# (argv[1]) is on every one of these processes' command lines.
TRAINER_WITH_CHILDREN = """
import subprocess, sys
for _ in range(2):
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(777)", sys.argv[1]])
from rheostat_trainer.examples.synthetic import main
sys.exit(main(sys.argv[2:]))
"""


def _with_children(name: str, marker: str, args: list[str], budget: dict[str, Any]) -> Any:
    document = synthetic_study(name, budget=budget)
    container = document["spec"]["trialTemplate"]["spec"]["containers"][0]
    container["command"] = ["python", "-c", TRAINER_WITH_CHILDREN, marker, *args]
    return document


def _wait_until_gone(marker: str, seconds: float = 10.0) -> list[int]:
    """The processes carrying `marker` that are still alive after `seconds` (polled)."""
    deadline = time.monotonic() + seconds
    while (alive := [p for p in _trainer_pids(marker) if _alive(p)]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    return alive


def test_a_trials_children_end_with_the_trial(tmp_path: Path, write_study: WriteStudy) -> None:
    marker = "--seed=914411"
    document = _with_children(
        "children", marker, ["--steps", "1"], {"maxTrials": 2, "parallelism": 2}
    )
    workdir = tmp_path / "work"
    try:
        run = subprocess.run(
            _command(write_study(document), workdir),
            capture_output=True,
            text=True,
            check=False,
            timeout=DEADLINE_SECONDS,
        )
        assert run.returncode == 0, run.stderr
        assert _results(workdir)["status"]["trials"]["complete"] == 2
        # Killed with the trial's process group when the trainer exited, as a pod's
        # container would be; a short poll only lets the kernel finish the kill.
        assert _wait_until_gone(marker, 5.0) == [], "a trial's child outlived the run"
    finally:
        _kill_leftovers(marker)


def _start_hung_run(
    name: str, marker: str, tmp_path: Path, write_study: WriteStudy
) -> tuple[subprocess.Popen[str], Path]:
    """`rheostat run` of two trials that hang, each with two children; and its work folder."""
    document = _with_children(name, marker, ["--fault", "hang"], {"maxTrials": 2, "parallelism": 2})
    workdir = tmp_path / "work"
    run = subprocess.Popen(
        _command(write_study(document), workdir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return run, workdir


def test_trainers_and_their_children_die_with_a_killed_tuner(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    marker = "--seed=330517"
    run, workdir = _start_hung_run("killed", marker, tmp_path, write_study)
    try:
        pids = _wait_for_hung_trials(workdir, marker, 2)
        assert len(pids) == 6, "two trainers, two children each"
        run.kill()  # SIGKILL: the tuner can do nothing about it
        run.communicate(timeout=DEADLINE_SECONDS)
        assert _wait_until_gone(marker) == [], "a trainer outlived `rheostat run`"
    finally:
        _kill_leftovers(marker, run)


def test_a_closed_terminal_stops_every_trial_and_keeps_the_study(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    marker = "--seed=129129"
    run, workdir = _start_hung_run("hangup", marker, tmp_path, write_study)
    try:
        pids = _wait_for_hung_trials(workdir, marker, 2)
        run.send_signal(signal.SIGHUP)
        _, stderr = run.communicate(timeout=DEADLINE_SECONDS)
        assert run.returncode == 130, stderr
        assert "Stopped by SIGHUP: every trial was stopped" in stderr
        assert "Traceback" not in stderr
        assert [pid for pid in pids if _alive(pid)] == []
        assert _wait_until_gone(marker) == []
    finally:
        _kill_leftovers(marker, run)
    # Resumable: both trials are still the study's (running), to be run again.
    trials = _counted_trials(workdir, "hangup")
    assert [t.number for t in trials] == [0, 1]


def _mount_namespace() -> list[str]:
    """A command prefix that runs in a private mount namespace (root in it), or skip."""
    prefix = ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "-rm"]
    if (
        shutil.which("unshare") is None
        or subprocess.run([*prefix, "true"], check=False).returncode != 0
    ):
        pytest.skip("needs unshare and a mount namespace (to mount a read-only or full disk)")
    return prefix


def test_a_read_only_work_folder_is_one_clear_message(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    path = write_study(synthetic_study("readonly", budget={"maxTrials": 1, "parallelism": 1}))
    # A read-only bind mount: real EROFS, which even root cannot write through.
    script = f'mount --bind "{workdir}" "{workdir}" && mount -o remount,bind,ro "{workdir}"'
    run = subprocess.run(
        [*_mount_namespace(), "sh", "-c", f'{script} && exec "$@"', "sh", *_command(path, workdir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=DEADLINE_SECONDS,
    )
    assert run.returncode == 2, run.stderr
    assert f"the work folder {workdir} cannot be used: Read-only file system" in run.stderr
    assert "Traceback" not in run.stderr


# Trial 1 fills the work folder's disk (a tiny tmpfs) before it trains: the tuner's
# next write to study.db then fails with SQLITE_FULL.
FILL_DISK_TRAINER = """
import os, sys
if os.environ.get("RHEOSTAT_TRIAL") == "1":
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError:
        pass
from rheostat_trainer.examples.synthetic import main
sys.exit(main(["--steps", "3"]))
"""


def test_a_full_disk_is_one_message_and_the_study_resumes(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    workdir, filler = tmp_path / "work", tmp_path / "work" / "filler"
    workdir.mkdir()
    document = synthetic_study("full", budget={"maxTrials": 3, "parallelism": 1})
    container = document["spec"]["trialTemplate"]["spec"]["containers"][0]
    container["command"] = ["python", "-c", FILL_DISK_TRAINER, str(filler)]
    command = " ".join(f"'{part}'" for part in _command(write_study(document), workdir))
    # Both runs in one namespace: the tmpfs goes with it. Output lands outside it.
    out = tmp_path / "out"
    script = (
        f'mount -t tmpfs -o size=4m tmpfs "{workdir}"; '
        f'{command} >"{out}1" 2>"{out}1.err"; echo $? >"{out}1.rc"; '
        f'rm -f "{filler}"; '
        f'{command} >"{out}2" 2>"{out}2.err"; echo $? >"{out}2.rc"; '
        f'cp "{workdir}/results.json" "{tmp_path}/"'
    )
    subprocess.run(
        [*_mount_namespace(), "sh", "-c", script], check=False, timeout=2 * DEADLINE_SECONDS
    )
    first = Path(f"{out}1.err").read_text()
    assert Path(f"{out}1.rc").read_text().strip() == "2", first
    assert f"the disk holding {workdir} is full (no space left)" in first
    assert "run the same command again to resume" in first
    assert "Traceback" not in first
    second = Path(f"{out}2.err").read_text()
    assert Path(f"{out}2.rc").read_text().strip() == "0", second
    status = _results(tmp_path)["status"]
    assert status["phase"] == "Succeeded"
    assert status["trials"]["complete"] == 3


# Trial 0 fails the way a real input pipeline does; the others train.
BRACKETS_TRAINER = """
import os, sys
if os.environ.get("RHEOSTAT_TRIAL") == "0":
    print("[rank0]: loading shards")
    print("error: no shards found in [/data/shards/train-*.tfrecord]")
    sys.exit(1)
from rheostat_trainer.examples.synthetic import main
sys.exit(main(["--steps", "1"]))
"""


def test_a_failure_reason_with_brackets_is_shown_as_written_with_progress_on(
    tmp_path: Path, write_study: WriteStudy
) -> None:
    document = synthetic_study("brackets", budget={"maxTrials": 3, "parallelism": 1})
    container = document["spec"]["trialTemplate"]["spec"]["containers"][0]
    container["command"] = ["python", "-c", BRACKETS_TRAINER]
    workdir = tmp_path / "work"
    command = [part for part in _command(write_study(document), workdir) if part != "--no-progress"]
    run = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=DEADLINE_SECONDS
    )
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert "[rank0]: loading shards" in run.stderr
    assert "error: no shards found in [/data/shards/train-*.tfrecord]" in run.stderr
    status = _results(workdir)["status"]
    assert status["trials"]["failed"] == 1
    assert status["trials"]["complete"] == 2


def test_closing_the_terminal_stops_every_trial(tmp_path: Path, write_study: WriteStudy) -> None:
    """The real thing behind SIGHUP: the run's terminal (a pty) goes away under its
    progress bars; the kernel sends SIGHUP, and every write to the terminal fails."""
    if shutil.which("setsid") is None:
        pytest.skip("needs setsid (util-linux) to give the run a controlling terminal")
    marker = "--seed=129130"
    document = _with_children(
        "closed", marker, ["--fault", "hang"], {"maxTrials": 2, "parallelism": 2}
    )
    workdir = tmp_path / "work"
    command = [part for part in _command(write_study(document), workdir) if part != "--no-progress"]
    master, slave = os.openpty()
    os.set_blocking(master, False)
    # setsid -c: a new session whose controlling terminal is the pty on stdin.
    run = subprocess.Popen(
        ["setsid", "-c", *command], stdin=slave, stdout=slave, stderr=slave, close_fds=True
    )
    os.close(slave)
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while sum("step 0:" in p.read_text() for p in workdir.glob("trials/t*/log.txt")) < 2:
            assert time.monotonic() < deadline, "the trials did not start"
            with contextlib.suppress(OSError):  # keep the pty from filling up
                while os.read(master, 65536):
                    pass
            time.sleep(0.1)
        pids = _trainer_pids(marker)
        assert len(pids) == 6
        os.close(master)
        master = -1
        assert run.wait(DEADLINE_SECONDS) == 130
        assert _wait_until_gone(marker) == []
    finally:
        if master >= 0:
            os.close(master)
        _kill_leftovers(marker, run)
    assert [t.number for t in _counted_trials(workdir, "closed")] == [0, 1]
