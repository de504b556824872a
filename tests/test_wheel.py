"""A non-editable install (a built wheel) finds the configs shipped from the top-level conf/."""

import os
import subprocess
import sys

from tests.conftest import ROOT, random_inputs, serve


def test_built_wheel_finds_its_configs_and_exports(tmp_path):
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = wheels.glob("exportkit-*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    env = dict(os.environ, PYTHONPATH=str(site), TF_CPP_MIN_LOG_LEVEL="2")
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import exportkit.conf, exportkit; print(exportkit.__file__); print(exportkit.conf.__file__)",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert all(line.startswith(str(site)) for line in where.stdout.split())
    export_dir = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "exportkit", f"export_dir={export_dir}", f"hydra.run.dir={tmp_path}/run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert serve(export_dir, random_inputs({"features": (8,)}, 2))["probabilities"].shape == (2, 3)
