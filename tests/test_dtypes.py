"""Every dtype through verify, the kept cases, ``exportkit verify``, the warmup records and
``inspect``: bfloat16 and float16 (mixed-precision policies and inputs of those dtypes), int8,
uint8 and bool inputs and outputs. Each export is read back by TensorFlow and compared with the
source model's own outputs, within the dtype's tolerance."""

import json

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf

from exportkit.artifact import manifest
from exportkit.verification.compare import dtype_tolerance
from tests.conftest import run_cli

NARROW = {"bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


def mixed(policy):
    import keras

    keras.mixed_precision.set_global_policy(policy)
    try:
        inputs = keras.Input((6,), name="x")
        hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
        out = keras.layers.Dense(4, name="out")(hidden)
        model = keras.Model(inputs, out)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model


def narrow_inputs(dtype):
    """A model whose input and output are ``dtype`` (float16 or bfloat16) end to end."""
    import keras

    inputs = keras.Input((6,), name="x", dtype=dtype)
    out = keras.layers.Dense(3, dtype=dtype, name="out")(inputs)
    return keras.Model(inputs, out)


def integers_and_bools():
    """uint8, int8 and bool inputs; a float, an int8 and a bool output."""
    import keras

    pixels = keras.Input((4,), name="pixels", dtype="uint8")
    offsets = keras.Input((4,), name="offsets", dtype="int8")
    mask = keras.Input((4,), name="mask", dtype="bool")
    values = keras.ops.cast(pixels, "float32") / 255.0 + keras.ops.cast(offsets, "float32")
    values = values * keras.ops.cast(mask, "float32")
    score = keras.layers.Dense(2, name="score")(values)
    code = keras.ops.cast(keras.ops.clip(keras.ops.round(score * 10.0), -100, 100), "int8")
    positive = keras.ops.greater(score, 0.0)
    return keras.Model([pixels, offsets, mask], {"score": score, "code": code, "positive": positive})


def inputs_for(model, batch=5):
    rng = np.random.default_rng(0)
    out = {}
    for tensor in model.inputs:
        name, dtype, shape = tensor.name, str(tensor.dtype), (batch, *tensor.shape[1:])
        if dtype == "bool":
            out[name] = rng.random(shape) > 0.3
        elif dtype in ("uint8", "int8"):
            info = np.iinfo(dtype)
            out[name] = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
        else:
            out[name] = rng.standard_normal(shape).astype(NARROW.get(dtype, dtype))
    return out


def assert_same(got, want):
    """Equal for integers, bools; within the dtype's tolerance, relative to the outputs' scale, for floats."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    if want.dtype.kind in "biu":
        np.testing.assert_array_equal(got, want)
        return
    tolerance = max(dtype_tolerance(want.dtype), 1e-5)
    scale = max(1.0, float(np.abs(want.astype(np.float64)).max()))
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), atol=tolerance * scale, rtol=tolerance)


def export_and_read_back(model, export_dir):
    import exportkit

    result = exportkit.export_saved_model(model, export_dir, verbose=False)
    record = manifest.read(export_dir)
    assert record.verify_status()["status"] == "ok", record.verification
    arrays = inputs_for(model)
    want = model(arrays if len(arrays) > 1 else next(iter(arrays.values())))
    want = {"out": want} if not isinstance(want, dict) else want
    loaded = tf.saved_model.load(str(export_dir))
    got = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in arrays.items()})
    assert set(got) == set(want)
    for name in want:
        assert_same(got[name].numpy(), np.asarray(want[name]))
    return result


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_a_mixed_precision_model_is_verified_and_reads_back(tmp_path, policy):
    model = mixed(policy)
    assert str(model.outputs[0].dtype) == policy.split("_")[1]
    export_and_read_back(model, tmp_path / "m")
    # the kept cases keep their dtype: `exportkit verify` passes on them, from the export alone
    done = run_cli("verify", tmp_path / "m", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["failures"] == [] and report["cases"] == 2


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_narrow_float_inputs_through_verify_warmup_and_inspect(tmp_path, dtype):
    model = narrow_inputs(dtype)
    export_and_read_back(model, tmp_path / "m")
    record = manifest.read(tmp_path / "m")
    assert record.serving["warmup"]["replayed"] == record.serving["warmup"]["records"] > 0
    shown = run_cli("inspect", tmp_path / "m", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert dtype in shown.stdout


def test_integer_and_bool_inputs_and_outputs(tmp_path):
    model = integers_and_bools()
    export_and_read_back(model, tmp_path / "m")
    record = manifest.read(tmp_path / "m")
    tolerances = json.loads((tmp_path / "m" / "assets.extra" / "verify.json").read_text())["tolerances"]
    assert tolerances["positive"] == {"atol": record.config["verify"]["atol"], "rtol": record.config["verify"]["rtol"]}
    done = run_cli("verify", tmp_path / "m", cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_a_bfloat16_output_beyond_its_tolerance_fails_with_one_line(tmp_path):
    """The tolerance scaled to bfloat16 still catches a wrong output: the kept outputs changed
    by 10% fail ``exportkit verify``."""
    from tests.test_verify_command import kept, reseal

    model = narrow_inputs("bfloat16")
    export_and_read_back(model, tmp_path / "m")
    from exportkit.verification.kept import OUTPUTS_FILE, save_npz

    path = tmp_path / "m" / "assets.extra" / OUTPUTS_FILE
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    changed = {
        k: (a.view(ml_dtypes.bfloat16) * 1.1 + 0.5).astype(ml_dtypes.bfloat16).view(a.dtype) for k, a in arrays.items()
    }
    save_npz(path, changed)
    reseal(tmp_path / "m")
    assert kept(tmp_path / "m", "outputs")
    done = run_cli("verify", tmp_path / "m", cwd=tmp_path)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "max abs error" in lines[0] and "Traceback" not in done.stderr
