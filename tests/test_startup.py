"""What ``python -m exportkit --help`` prints: every config group with every option on disk (the
CLI answers Hydra's repeated group listings from one copy of its repository, see
``exportkit.cli.list_groups_once``)."""

import json

import numpy as np
import pytest

from exportkit.errors import VerificationError
from tests.conftest import ROOT, run_cli, run_python, serve


def test_help_lists_every_config_group_with_its_options():
    done = run_cli("--help", check=True)
    groups = done.stdout.split("== Configuration groups ==", 1)[1].split("== Config ==", 1)[0]
    lines = {
        line.split(":", 1)[0]: line.split(":", 1)[1]
        for line in groups.splitlines()
        if line.split(":", 1)[0] in ("experiment", "model", "pipeline", "target")
    }
    assert set(lines) == {"experiment", "model", "pipeline", "target"}, done.stdout
    for group, listed in lines.items():
        options = {o.strip() for o in listed.split(",")}
        on_disk = {p.stem for p in (ROOT / "conf" / group).glob("*.yaml")}
        assert on_disk and on_disk <= options, (group, on_disk, options)
    assert "== Config ==" in done.stdout and "export_dir:" in done.stdout


def test_a_keras_export_from_the_cli_imports_no_jax_and_its_verify_worker_neither(tmp_path):
    """TensorFlow's import would import JAX (for TFLite's JAX converter); a Keras export needs
    none of it, in the exporting process or in the verify worker (``exportkit.frameworks``)."""
    import keras

    from exportkit.example_model import build_example_model
    from exportkit.verification.process import Verifier
    from exportkit.verification.protocol import Request

    export_dir = tmp_path / "out"
    probe = (
        "import atexit, json, runpy, sys; sys.argv = ['exportkit'] + sys.argv[1:]\n"
        "atexit.register(lambda: print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'jax', 'flax', 'orbax', 'tensorflow'}))))\n"
        "runpy.run_module('exportkit', run_name='__main__')\n"
    )
    done = run_python(probe, f"export_dir={export_dir}")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["tensorflow"]
    assert "verified: 2 cases on /CPU:0" in done.stdout
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)  # as the build stage does (seed=0)
    x = np.random.default_rng(0).standard_normal((3, 8)).astype("float32")
    want = np.asarray(build_example_model()(x))
    (got,) = serve(export_dir, {"features": x}).values()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()))

    # the verify worker: once it has answered a request its imports are done; no JAX library is mapped
    with Verifier() as verifier:
        with pytest.raises(VerificationError, match="could not be reloaded"):
            verifier.run(
                Request(
                    saved_model=str(tmp_path / "absent"),
                    inputs=str(tmp_path / "absent.npz"),
                    outputs=str(tmp_path / "o.npz"),
                ),
                timeout=300,
            )
        maps = open(f"/proc/{verifier.pid}/maps").read()
    assert "_pywrap_tensorflow" in maps and "jaxlib" not in maps


def test_jax_is_importable_after_tensorflow_was_imported_without_it():
    code = (
        "import sys\nfrom exportkit.frameworks import import_tensorflow\nimport_tensorflow()\n"
        "held = 'jax' in sys.modules\nimport jax, jax.numpy as jnp\n"
        "print(held, float(jnp.ones(3).sum()))\n"
    )
    done = run_python(code, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False 3.0"


def test_jax_is_held_off_only_under_a_tensorflow_keras_backend(tmp_path, monkeypatch):
    from exportkit.frameworks import keras_backend

    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert keras_backend() == "tensorflow"  # no keras.json
    (tmp_path / "keras.json").write_text('{"backend": "jax"}')
    assert keras_backend() == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    assert keras_backend() == "tensorflow"


def test_no_shipped_config_sets_hydra_mode():
    """What lets the CLI answer Hydra's run-or-multirun question without composing the config
    (``exportkit.cli.mode_without_composing``)."""
    import yaml

    files = sorted((ROOT / "conf").rglob("*.yaml"))
    assert len(files) > 20
    for path in files:
        node = yaml.safe_load(path.read_text()) or {}
        package_hydra = "@package hydra" in path.read_text() or path.parts[-3:-1] == ("hydra", "launcher")
        assert "mode" not in (node.get("hydra") or {}), path
        assert not (package_hydra and "mode" in node), path


@pytest.mark.parametrize(
    "argv, known",
    [
        ([], True),
        (["export_dir=/x", "seed=3"], True),
        (["-m", "seed=0,1", "model=keras,jax"], True),
        (["+experiment=text", "target=gpu"], True),
        (["model.path=m.keras"], True),
        (["hydra.mode=MULTIRUN"], False),
        (["hydra/launcher=joblib"], False),
        (["+hydra.job.chdir=true"], False),
        (["--config-dir", "/mine"], False),
        (["-cn", "other"], False),
        (["+experiment=mine"], False),
        (["model=keras,mine"], False),
        (["experiment=sub/x"], False),
    ],
)
def test_hydra_composes_only_to_learn_the_mode_when_the_command_line_may_set_it(argv, known, monkeypatch):
    from hydra._internal.hydra import Hydra

    from exportkit import cli

    assert cli.mode_without_composing(argv) is known
    real = Hydra.get_mode
    monkeypatch.setattr(Hydra, "get_mode", real)  # restored after the test
    monkeypatch.setattr("sys.argv", ["exportkit", *argv])
    cli.skip_mode_composition()
    assert (Hydra.get_mode is real) is not known
