"""Sweeps (``-m``): the summary callback, failure isolation, and the joblib launcher."""

import csv
from pathlib import Path

import numpy as np
import pytest

from exportkit.artifact import manifest
from tests.conftest import random_inputs, run_cli, serve

SEQUENTIAL = ("model=keras", "model.build._target_=tests.models.sequential")


def read_summary(sweep_dir):
    with open(sweep_dir / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def check_ok_row(row):
    """A successful row says what its export holds, checked against the files themselves."""
    import tensorflow as tf

    export_dir = Path(row["export_dir"])
    recorded = manifest.read(export_dir).to_dict()
    assert row["status"] == "ok" and row["reason"] == ""
    assert int(row["saved_model_bytes"]) == (export_dir / "saved_model.pb").stat().st_size
    assert int(row["checkpoint_bytes"]) == sum(p.stat().st_size for p in (export_dir / "variables").iterdir())
    for stage in recorded["stages"]:
        assert float(row[f"{stage['name']}_s"]) == pytest.approx(stage["seconds"])
    assert row["digest"] == recorded["digest"]
    assert int(row["fingerprint"]) == tf.saved_model.experimental.read_fingerprint(str(export_dir)).saved_model_checksum
    return recorded


def test_two_job_sweep_writes_a_correct_summary(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_cli("-m", *SEQUENTIAL, "+model.build.units=4,8", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr
    rows = read_summary(sweep)
    assert [r["job"] for r in rows] == ["0", "1"]
    assert ["+model.build.units=4" in r["overrides"].split() for r in rows] == [True, False]
    assert ["+model.build.units=8" in r["overrides"].split() for r in rows] == [False, True]
    sizes = []
    for row in rows:
        recorded = check_ok_row(row)
        errors = [
            o["max_abs_error"]
            for sizes_ in recorded["verify"].values()
            for case in sizes_.values()
            for o in case.values()
        ]
        assert row["verify"] == "ok" and float(row["verify_max_abs_error"]) == max(errors)
        sizes.append(int(row["checkpoint_bytes"]))
    assert sizes[0] < sizes[1]  # 8 hidden units hold more weights than 4
    table = (sweep / "summary.md").read_text()
    assert "2 ok, 0 failed" in table
    for row in rows:
        assert row["export_dir"] in table and row["digest"][:12] in table
    assert "exportkit sweep: 2 ok, 0 failed" in done.stdout  # the table in the terminal


def test_a_failing_job_is_reported_and_the_others_complete(tmp_path):
    """One job fails verification, one has a bad model factory; the good one is exported."""
    sweep = tmp_path / "sweep"
    done = run_cli(
        "-m",
        "model=keras",
        "model.build._target_=tests.models.graph_differs,tests.models.sequential,tests.models.not_a_model",
        f"hydra.sweep.dir={sweep}",
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr  # user errors stay one line, in a sweep too
    assert "exportkit: 2 of 3 jobs failed" in done.stderr
    rows = {r["job"]: r for r in read_summary(sweep)}
    assert rows["0"]["status"] == "failed"
    assert rows["0"]["reason"].startswith("verify: the reloaded SavedModel does not match the source model")
    assert rows["2"]["status"] == "failed"
    assert rows["2"]["reason"].startswith("build: model.build returned ndarray, not a keras.Model")
    assert "\n" not in rows["0"]["reason"] + rows["2"]["reason"]
    assert not (sweep / "0" / "saved_model").exists() and not (sweep / "2" / "saved_model").exists()
    recorded = check_ok_row(rows["1"])
    export_dir = sweep / "1" / "saved_model"
    assert manifest.file_hashes(export_dir) == recorded["files"]  # complete, every file as recorded
    inputs = random_inputs({"x": (6,)}, 2)
    assert np.isfinite(serve(export_dir, inputs)["out"]).all()
    table = (sweep / "summary.md").read_text()
    assert "1 ok, 2 failed" in table and "FAILED" in table and rows["0"]["reason"] in table


def test_single_run_failure_is_unchanged(tmp_path):
    done = run_cli(
        *SEQUENTIAL, "+model.build.units=-1", f"export_dir={tmp_path / 'm'}", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("exportkit: error: model.build._target_=")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "exportkit_job.json").exists() and not (tmp_path / "m").exists()


def test_joblib_launcher_runs_jobs_in_parallel_workers(tmp_path):
    """Two workers, three jobs, one failing: rows and failures travel back from the workers."""
    sweep = tmp_path / "sweep"
    done = run_cli(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "model=keras",
        "model.build._target_=tests.models.sequential,tests.models.functional_multi_io,tests.models.not_a_model",
        "pipeline.stages.verify=null",
        f"hydra.sweep.dir={sweep}",
    )
    assert done.returncode == 1
    assert "Joblib.Parallel(n_jobs=2" in done.stdout + done.stderr
    assert "exportkit: 1 of 3 jobs failed" in done.stderr
    rows = read_summary(sweep)
    assert [(r["job"], r["status"]) for r in rows] == [("0", "ok"), ("1", "ok"), ("2", "failed")]
    assert rows[2]["reason"].startswith("build: model.build returned ndarray")
    for row in rows[:2]:
        check_ok_row(row)
        assert row["verify"] == "off"
    assert serve(rows[0]["export_dir"], random_inputs({"x": (6,)}, 1))["out"].shape == (1, 2)
    outputs = serve(rows[1]["export_dir"], random_inputs({"image": (5,), "meta": (3,)}, 2))
    assert outputs["score"].shape == (2, 1) and outputs["label"].shape == (2, 4)


def launcher_config(*overrides):
    """``hydra.launcher`` as Hydra composes it for these overrides (nothing is launched)."""
    from exportkit.composition import compose

    return compose(overrides, return_hydra_config=True).hydra.launcher


def test_slurm_launcher_configs_compose_onto_the_submitit_plugin():
    from hydra.utils import instantiate

    cpu = launcher_config("hydra/launcher=slurm", "hydra.launcher.partition=cpu")
    gpu = launcher_config("hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu")
    for launcher in (cpu, gpu):
        assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
        assert launcher.cpus_per_task == 4 and launcher.mem_gb == 16 and launcher.timeout_min == 60
    assert (cpu.partition, cpu.gpus_per_node) == ("cpu", 0)
    assert (gpu.partition, gpu.gpus_per_node) == ("gpu", 1)
    assert type(instantiate(gpu)).__name__ == "SlurmLauncher"


@pytest.mark.slow
def test_submitit_local_launcher(tmp_path):
    """Hydra's Submitit launcher with its local executor: the SLURM code path without SLURM."""
    sweep = tmp_path / "sweep"
    done = run_cli(
        "-m",
        "hydra/launcher=submitit_local",
        *SEQUENTIAL,
        "+model.build.units=3,5",
        "pipeline.stages.verify=null",
        f"hydra.sweep.dir={sweep}",
    )
    assert done.returncode == 0, done.stderr
    rows = read_summary(sweep)
    assert [r["job"] for r in rows] == ["0", "1"]
    for row in rows:
        check_ok_row(row)


@pytest.mark.ray
def test_ray_launcher_on_a_local_ray_instance(tmp_path):
    """Hydra's Ray launcher starting a local Ray instance (``make test-ray``: hydra-ray-launcher
    pins cloudpickle<3, which joblib>=1.6 refuses, so it lives in its own environment)."""
    sweep = tmp_path / "sweep"
    done = run_cli(
        "-m",
        "hydra/launcher=ray",
        "+hydra.launcher.ray.init.num_cpus=2",
        "+hydra.launcher.ray.init.include_dashboard=false",
        *SEQUENTIAL,
        "+model.build.units=3,5",
        "pipeline.stages.verify=null",
        f"hydra.sweep.dir={sweep}",
    )
    assert done.returncode == 0, done.stderr
    assert "_run_job pid=" in done.stdout + done.stderr  # the jobs ran as Ray tasks
    cluster = launcher_config("hydra/launcher=ray_cluster")
    assert cluster._target_ == "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
    assert cluster.ray.init.address == "auto"
    rows = read_summary(sweep)
    assert [r["job"] for r in rows] == ["0", "1"]
    for row in rows:
        check_ok_row(row)


def test_summary_keeps_to_its_own_sweep_and_fail_on_error(tmp_path, capsys):
    """In-process, through the callback's hooks: rows of an older sweep in a reused sweep dir
    are left out, a job that raised is a failed row, and ``fail_on_error=false`` exits 0."""
    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import OmegaConf

    from exportkit.sweep_summary import JobFailed, SweepSummary

    sweep = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})

    def job(callback, num, value, status=JobStatus.COMPLETED, overrides=None):
        (tmp_path / str(num)).mkdir(exist_ok=True)
        config = OmegaConf.create({"hydra": {"job": {"num": num}, "runtime": {"output_dir": str(tmp_path / str(num))}}})
        callback.on_job_end(
            config, JobReturn(overrides=overrides or [f"seed={num}"], status=status, _return_value=value)
        )

    old = SweepSummary()
    old.on_multirun_start(sweep)
    job(old, 0, JobFailed("stale row of an older sweep", "build"))
    job(old, 1, JobFailed("stale row of an older sweep", "build"))

    new = SweepSummary(fail_on_error=True)
    new.on_multirun_start(sweep)
    job(
        new,
        0,
        JobFailed(
            "signatures.x is malformed", "build", stages=[{"name": "build", "status": "failed", "seconds": 0.25}]
        ),
    )
    with pytest.raises(SystemExit) as exit_:
        new.on_multirun_end(sweep)
    assert exit_.value.code == 1
    rows = read_summary(tmp_path)
    assert len(rows) == 1 and rows[0]["reason"] == "build: signatures.x is malformed"
    assert rows[0]["build_s"] == "0.25" and rows[0]["overrides"] == "seed=0"

    lenient = SweepSummary(fail_on_error=False)
    lenient.on_multirun_start(sweep)
    job(lenient, 0, RuntimeError("boom | in a stage"), status=JobStatus.FAILED, overrides=["+experiment=[text,gpu]"])
    capsys.readouterr()
    lenient.on_multirun_end(sweep)  # no SystemExit
    assert "+experiment=[text,gpu]" in capsys.readouterr().out  # not swallowed as rich markup
    rows = read_summary(tmp_path)
    assert [(r["status"], r["reason"]) for r in rows] == [("failed", "RuntimeError: boom | in a stage")]
    assert "RuntimeError: boom \\| in a stage" in (tmp_path / "summary.md").read_text()  # escaped cell
