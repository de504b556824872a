"""``exportkit reproduce`` (and its module form ``python -m exportkit.reproduce``): re-run an
export from its manifest and compare."""

import json
import os
import subprocess
import sys

import pytest

from exportkit.artifact import manifest
from tests.conftest import ROOT, run_cli


def reproduce(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "exportkit.reproduce", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_reproduce_matches_then_reports_a_tampered_weight_file(tmp_path):
    original = tmp_path / "original"
    run_cli(
        "model=keras",
        "model.build._target_=tests.models.sequential",
        "+model.build.compiled=true",
        "+model.build.units=5",
        "seed=3",
        "pipeline.stages.verify=null",
        f"export_dir={original}",
        f"hydra.run.dir={tmp_path / 'run'}",
        check=True,
    )
    recorded = manifest.read(original).to_dict()
    assert "+model.build.units=5" in recorded["overrides"] and "seed=3" in recorded["overrides"]

    done = reproduce(original, "--out", tmp_path / "again")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reproduced:" in done.stdout
    again = manifest.read(tmp_path / "again").to_dict()
    assert again["digest"] == recorded["digest"]
    assert again["overrides"] == recorded["overrides"]  # the reproduction is reproducible in turn
    assert again["config"]["model"]["build"]["units"] == 5 and again["config"]["seed"] == 3
    assert "warning" not in done.stderr  # same installed versions as recorded

    weights = original / "variables" / "variables.data-00000-of-00001"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    done = reproduce(original, "--out", tmp_path / "third")
    assert done.returncode == 1
    assert "NOT reproduced" in done.stdout
    report = done.stdout.split("NOT reproduced", 1)[1].splitlines()[1:]  # one line per difference
    assert len(report) == 1 and report[0].strip().startswith("variables/variables.data-00000-of-00001: differs")
    assert "modified after the export" in report[0]


@pytest.mark.slow
def test_reproduce_warns_about_other_package_versions(tmp_path):
    """A manifest recording another TensorFlow: the warning names it (the bytes still match
    here, where the same TensorFlow writes them)."""
    original = tmp_path / "original"
    run_cli(
        "model=keras",
        "model.build._target_=tests.models.sequential",
        "pipeline.stages.verify=null",
        f"export_dir={original}",
        f"hydra.run.dir={tmp_path / 'run'}",
        check=True,
    )
    path = original / manifest.MANIFEST
    recorded = json.loads(path.read_text())
    recorded["versions"]["tensorflow"] = "2.20.0"
    path.write_text(json.dumps(recorded, indent=2))
    done = reproduce(original, "--out", tmp_path / "again")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tensorflow 2.20.0 was recorded" in done.stderr


def test_reproduce_without_a_manifest_is_a_usage_error(tmp_path):
    done = reproduce(tmp_path, "--out", tmp_path / "x")
    assert done.returncode == 2 and "has no assets.extra/manifest.json" in done.stderr
    # the same through the subcommand, which names itself
    done = run_cli("reproduce", tmp_path, "--out", tmp_path / "x")
    assert done.returncode == 2 and "has no assets.extra/manifest.json" in done.stderr
    assert done.stderr.startswith("exportkit reproduce: error:"), done.stderr


def test_reproduce_names_a_model_file_changed_since_the_export(tmp_path):
    import keras

    from tests import models
    from tests.conftest import export

    path = tmp_path / "m.keras"
    models.custom_layer().save(path)
    original = tmp_path / "original"
    export(
        "model=keras_file",
        f"model.path={path}",
        "+custom_objects.Scale=tests.models.Scale",
        "pipeline.stages.verify=null",
        f"export_dir={original}",
    )
    assert manifest.read(original).to_dict()["inputs"]["model.path"]["sha256"] == manifest.sha256(path)

    keras.utils.set_random_seed(1)  # other initial weights, same architecture
    models.custom_layer().save(path)
    done = reproduce(original, "--out", tmp_path / "again")
    assert done.returncode == 1
    assert f"model.path={path}: the file changed since the export" in done.stderr
    report = done.stdout.split("NOT reproduced", 1)[1]
    assert "variables/variables.data-00000-of-00001: differs" in report
