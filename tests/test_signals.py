"""Signals and closed pipes: SIGINT (Ctrl-C, sent to the process group), SIGTERM (``docker stop``,
Kubernetes, SLURM) and SIGHUP stop an export mid-way cleanly: one line, exit 128 + the signal, the
staging directory and the lock gone, no verification process left, nothing published. A closed
stdout is one line too."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT


def cli_env():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "examples")]))
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def wait_for(path: Path, process, seconds=300.0):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def verifiers_of(parent: int):
    found = []
    for entry in Path("/proc").iterdir():
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"exportkit.verification.worker" in words and str(parent).encode() in words:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("name, to_group", [("SIGTERM", False), ("SIGINT", True), ("SIGHUP", False)])
def test_a_signal_mid_export_stops_it_cleanly(tmp_path, name, to_group):
    out, held = tmp_path / "out", tmp_path / "held"
    out.mkdir()
    export = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exportkit",
            f"export_dir={out / 'model'}",
            f"hydra.run.dir={tmp_path / 'run'}",
            f"+pipeline.stages.hold={{_target_: tests.stages.Hold, path: '{held}', after: write_graphs}}",
        ],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a command
    )
    wait_for(held, export)  # the graphs are written; the verification process is up
    signum = getattr(signal, name)
    if to_group:
        os.killpg(export.pid, signum)
    else:
        export.send_signal(signum)
    stdout, stderr = export.communicate(timeout=120)
    assert export.returncode == 128 + signum, stderr
    assert stderr.strip().splitlines()[-1] == f"exportkit: interrupted ({name}); nothing was published"
    assert "Traceback" not in stderr, stderr
    assert os.listdir(out) == []  # no export, no staging directory, no lock
    assert verifiers_of(export.pid) == []


def test_a_signal_stopping_a_sweep_leaves_the_summary_of_the_finished_jobs(tmp_path):
    sweep, held = tmp_path / "sweep", tmp_path / "held"
    hold = f"+pipeline.stages.hold={{_target_: tests.stages.Hold, path: '{held}', after: write_graphs, only_seed: 1}}"
    export = subprocess.Popen(
        [sys.executable, "-m", "exportkit", "-m", "seed=0,1,2", f"hydra.sweep.dir={sweep}", hold],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_for(held, export)  # job 0 is done, job 1 is mid-way
    export.send_signal(signal.SIGTERM)
    stdout, stderr = export.communicate(timeout=120)
    assert export.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.strip().splitlines()[-1] == (
        f"exportkit: interrupted (SIGTERM); the running job published nothing; the 1 finished job(s) are "
        f"summarized in {sweep / 'summary.md'}"
    )
    assert "Traceback" not in stderr, stderr
    summary = (sweep / "summary.md").read_text()
    assert "seed=0" in summary and "seed=1" not in summary and "seed=2" not in summary
    assert (sweep / "0" / "saved_model" / "saved_model.pb").exists()
    assert not (sweep / "1" / "saved_model").exists() and not (sweep / "2").exists()
    assert verifiers_of(export.pid) == []


def test_a_closed_stdout_is_one_line_and_publishes_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    export = subprocess.Popen(
        [sys.executable, "-m", "exportkit", f"export_dir={out / 'model'}", f"hydra.run.dir={tmp_path / 'run'}"],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert export.stdout.read(1)  # as `| head -c 1` reads, then goes
    export.stdout.close()
    stderr = export.stderr.read().decode()
    assert export.wait(120) == 1, stderr
    assert stderr.strip().splitlines() == [
        "exportkit: error: the output was closed (a broken pipe); nothing was published"
    ], stderr
    assert os.listdir(out) == []


def test_after_the_first_signal_a_second_ends_the_process_at_once():
    """The first signal is told as ``Interrupted`` and puts the default actions back: a second one
    (a user pressing Ctrl-C again during the clean-up) ends the process by the signal itself."""
    code = (
        "import os, signal, sys\n"
        "from exportkit.cli import stop_on_signals\n"
        "from exportkit.errors import Interrupted\n"
        "stop_on_signals()\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "except Interrupted as first:\n"
        "    print(first.signal_name, signal.getsignal(signal.SIGINT) is signal.SIG_DFL, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "print('still running')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["SIGTERM", "True"], done.stdout + done.stderr
    assert done.returncode == -signal.SIGINT
