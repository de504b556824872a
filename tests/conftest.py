import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def compose(*overrides):
    """The config the CLI would build for these overrides (export_dir must be among them)."""
    from exportkit.composition import compose as compose_config

    return compose_config(overrides)


def export(*overrides, model=None):
    """Run the pipeline in-process, as the CLI does, and return its ExportResult."""
    from exportkit import pipeline

    return pipeline.run(pipeline.resolved(compose(*overrides)), model=model)


def run_cli(*args, cwd=None, env=None, check=False):
    """``python -m exportkit ARGS`` in a fresh process, as a user runs it."""
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "examples")]), **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None) if not (env and "HYDRA_FULL_ERROR" in env) else None
    done = subprocess.run(
        [sys.executable, "-m", "exportkit", *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"exportkit failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def run_python(code, *args, timeout=600):
    """``python -c CODE ARGS`` in a fresh process, exportkit importable, from the repository root."""
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=timeout,
    )


def serve(export_dir, inputs, key="serving_default", tag="serve"):
    """Run a signature of the written SavedModel (TF2 loader) -> dict of numpy outputs."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(export_dir), tags=[tag])
    outputs = loaded.signatures[key](**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in outputs.items()}


def random_inputs(specs, batch, seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal((batch, *shape)).astype("float32") for name, shape in specs.items()}


def leftovers(export_dir):
    """Anything this run left at export_dir or beside it (staging directories)."""
    export_dir = Path(export_dir)
    found = [p for p in export_dir.parent.glob(f".{export_dir.name}.*")] if export_dir.parent.exists() else []
    if export_dir.exists():
        found.append(export_dir)
    return found


@pytest.fixture(scope="session")
def _session_verifier():
    """One verification process for this test process's in-process exports (one per xdist
    worker), as ``exportkit.shared_verifier()`` gives a notebook; each export is still loaded
    afresh from disk by it. CLI tests start their own, as a user's command does."""
    from exportkit.verification.process import Verifier

    with Verifier() as verifier:
        yield verifier


@pytest.fixture(autouse=True)
def _shared_verifier(request, _session_verifier):
    """In-process exports verify with the session's process, unless the test is marked
    ``own_verifier`` (it looks at the verifier an export starts and ends itself)."""
    from exportkit.verification.process import using

    own = request.node.get_closest_marker("own_verifier") is not None
    with using(None if own else _session_verifier):
        yield


@pytest.fixture
def export_dir(tmp_path):
    return tmp_path / "exports" / "model"
