"""Filesystems that say no, through the CLI as a user meets them: a path longer than the system
allows, a read-only working directory (where Hydra writes its run directory), a read-only
export_dir. Each is one ``exportkit: error:`` line naming the path and the fix, exit status 1,
no traceback, nothing created.

The tests run as root, which writes anywhere: a user who may not write is ``nobody`` under
``setpriv`` (skipped, with the reason, where that user cannot run this environment's
interpreter), and a read-only filesystem (a tmpfs mounted ``ro``) gives EROFS, which takes the same
path as EACCES (``exportkit.artifact.filesystem.filesystem_error``)."""

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

KERAS = ("model=keras", "model.build._target_=tests.models.sequential", "pipeline.stages.verify=null")


@pytest.fixture
def read_only(tmp_path):
    """A read-only filesystem (a tmpfs mounted ``ro``): EROFS, what a permission error is to root."""
    mount = tmp_path / "ro"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def one_line(done):
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.strip()]
    assert line.startswith("exportkit: error: ")
    return line


def test_an_export_dir_longer_than_the_system_allows_is_one_line_and_creates_nothing(tmp_path):
    export_dir = tmp_path / "/".join(["d" * 200] * 25) / "model"
    line = one_line(run_cli(*KERAS, f"export_dir={export_dir}", f"hydra.run.dir={tmp_path / 'run'}"))
    assert "over the system's limit of" in line and "choose a shorter export_dir" in line
    assert not (tmp_path / ("d" * 200)).exists()


def test_a_read_only_working_directory_says_how_to_set_hydras_run_dir(tmp_path, read_only):
    line = one_line(run_cli(*KERAS, f"export_dir={tmp_path / 'model'}", cwd=read_only))
    assert "cannot write Hydra's run directory" in line and "hydra.run.dir=PATH" in line
    assert not (tmp_path / "model").exists()


def test_a_read_only_export_dir_is_one_line_naming_the_filesystem(tmp_path, read_only):
    line = one_line(run_cli(*KERAS, f"export_dir={read_only / 'model'}", f"hydra.run.dir={tmp_path / 'run'}"))
    assert f"the filesystem at {read_only} is read-only" in line
    assert os.listdir(read_only) == []


@pytest.fixture
def shared_dir():
    """A directory every user can reach (pytest's own tmp_path sits under a root-only directory)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="exportkit-nobody-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_an_export_dir_a_user_may_not_write_is_one_line(shared_dir):
    """As ``nobody`` (``setpriv``), where that user can run this environment's interpreter."""
    import sys

    tmp_path = shared_dir
    as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    probe = subprocess.run([*as_nobody, sys.executable, "-c", "import exportkit"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(
            f"an unprivileged user cannot run this environment's interpreter here ({probe.stderr.strip()[:120]}); "
            f"the read-only filesystem cases above take the same path (filesystem_error)"
        )
    home = tmp_path / "home"
    home.mkdir()
    os.chmod(home, 0o777)  # the user's own place (mkdir's mode goes through the umask)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o755)  # root's: nobody may not write here
    env = dict(os.environ, HOME=str(home), KERAS_HOME=str(home / ".keras"), PYTHONPATH=str(ROOT))
    env.pop("HYDRA_FULL_ERROR", None)
    done = subprocess.run(
        [
            *as_nobody,
            sys.executable,
            "-m",
            "exportkit",
            *KERAS,
            f"export_dir={locked / 'model'}",
            f"hydra.run.dir={home / 'run'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=home,
        timeout=600,
    )
    line = one_line(done)
    assert str(locked) in line and "ermission denied" in line
    assert os.listdir(locked) == []
