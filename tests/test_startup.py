"""Starting up: what ``python -m exportkit --help`` prints (every config group with every option on
disk), a CLI export of the example, and the verification process's answer to a request it cannot run."""

import numpy as np
import pytest

from exportkit.errors import VerificationError
from tests.conftest import ROOT, run_cli, serve


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


def test_a_keras_export_from_the_cli_serves_the_example_and_the_worker_tells_what_it_cannot_load(tmp_path):
    import keras

    from exportkit.example_model import build_example_model
    from exportkit.verification.process import Verifier
    from exportkit.verification.protocol import Request

    export_dir = tmp_path / "out"
    done = run_cli(f"export_dir={export_dir}")
    assert done.returncode == 0, done.stderr
    assert "verified: 2 cases on /CPU:0" in done.stdout
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)  # as the build stage does (seed=0)
    x = np.random.default_rng(0).standard_normal((3, 8)).astype("float32")
    want = np.asarray(build_example_model()(x))
    (got,) = serve(export_dir, {"features": x}).values()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()))

    # the verify worker: a request it cannot run is a VerificationError, and the worker lives on
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
        assert verifier.alive()  # and it stays ready for the next request
