"""The CLI as a user runs it: a fresh process, exit codes, what it prints and writes."""

import json
import subprocess

import numpy as np

from tests.conftest import ROOT, leftovers, random_inputs, run_cli, run_python, serve


def test_default_run_exports_and_verifies_the_example(tmp_path):
    done = run_cli(f"hydra.run.dir={tmp_path}/run", check=True)
    export_dir = tmp_path / "run" / "saved_model"
    for stage in ("build", "trace", "write_checkpoint", "write_graphs", "verify"):
        assert stage in done.stdout
    assert str(export_dir) in done.stdout
    manifest = json.loads((export_dir / "assets.extra" / "manifest.json").read_text())
    assert [s["status"] for s in manifest["stages"]] == ["ok"] * 5
    assert manifest["verify"]["serving_default"]["3"]["probabilities"]["ok"] is True
    probs = serve(export_dir, random_inputs({"features": (8,)}, 3))["probabilities"]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_help_and_cfg_do_not_import_tensorflow():
    # told at exit, by an atexit handler
    probe = (
        "import atexit, sys, runpy; sys.argv = ['exportkit'] + sys.argv[1:]\n"
        "atexit.register(lambda: print('TF_IMPORTED' if 'tensorflow' in sys.modules else 'TF_NOT_IMPORTED'))\n"
        "runpy.run_module('exportkit', run_name='__main__')\n"
    )
    for flag in (["--help"], ["--cfg", "job"]):
        done = run_python(probe, *flag, timeout=120)
        assert "TF_NOT_IMPORTED" in done.stdout, done.stdout + done.stderr
    assert "export_dir" in done.stdout


def test_console_script_is_the_same_app():
    exe = ROOT / ".venv" / "bin" / "exportkit"
    done = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "keras_file" in done.stdout and "target: cpu, gpu" in done.stdout


def test_multirun_exports_each_variant_into_its_own_job_dir(tmp_path):
    sweep = tmp_path / "sweep"
    run_cli(
        "-m",
        "model=keras",
        "model.build._target_=my_models.classifier",
        "+model.build.units=4,8",
        "verify.batch_sizes=[2]",
        f"hydra.sweep.dir={sweep}",
        check=True,
    )
    for job, units in (("0", 4), ("1", 8)):
        export_dir = sweep / job / "saved_model"
        config = json.loads((export_dir / "assets.extra" / "manifest.json").read_text())["config"]
        assert config["model"]["build"]["units"] == units
        assert serve(export_dir, random_inputs({"features": (10,)}, 2))["probabilities"].shape == (2, 4)


def test_users_experiment_file_via_config_dir(tmp_path):
    export_dir = tmp_path / "exp"
    run_cli(
        "--config-dir",
        ROOT / "examples" / "conf",
        "+experiment=my_classifier",
        f"export_dir={export_dir}",
        f"hydra.run.dir={tmp_path}/run",
        check=True,
    )
    manifest = json.loads((export_dir / "assets.extra" / "manifest.json").read_text())
    assert set(manifest["verify"]["serving_default"]) == {"1", "2", "16"}
    assert serve(export_dir, random_inputs({"features": (12,)}, 5))["probabilities"].shape == (5, 4)


def test_user_error_is_one_line_without_traceback_unless_full_error(tmp_path):
    export_dir = tmp_path / "x"
    args = (
        "model=keras",
        "model.build._target_=no_such_module.factory",
        f"export_dir={export_dir}",
        f"hydra.run.dir={tmp_path}/run",
    )
    done = run_cli(*args)
    assert done.returncode == 1
    assert "model.build._target_='no_such_module.factory'" in done.stderr
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    assert leftovers(export_dir) == []
    full = run_cli(*args, env={"HYDRA_FULL_ERROR": "1"})
    assert full.returncode == 1 and "Traceback" in full.stderr


def test_misspelt_key_is_rejected_with_the_key_named(tmp_path):
    done = run_cli("verify.atoll=1", f"hydra.run.dir={tmp_path}/run")
    assert done.returncode == 1
    assert "atoll" in done.stderr and "Traceback" not in done.stderr
    bad_type = run_cli("overwrite=maybe", f"hydra.run.dir={tmp_path}/run")
    assert bad_type.returncode == 1 and "overwrite" in bad_type.stderr
