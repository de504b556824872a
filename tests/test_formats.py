"""Deployment formats (``formats``: LiteRT, ONNX, OpenVINO) converted from the export, verified in
the fresh process with each runtime, published with the SavedModel, re-verified by ``exportkit
verify``; read back here by each runtime and compared with the source model."""

import json
import shutil

import numpy as np
import pytest

from exportkit.artifact import manifest
from exportkit.formats.base import Format
from tests.conftest import run_cli

ALL = "+formats=[litert,onnx,openvino]"
FORMATS = ["litert", "onnx", "openvino"]


def classifier():
    """Two inputs, a softmax over 5 classes and a score: what a deployed model looks like."""
    import keras

    keras.utils.set_random_seed(0)
    a, b = keras.Input((12,), name="a"), keras.Input((4,), name="b")
    h = keras.layers.Dense(32, activation="relu", name="hidden")(keras.layers.Concatenate()([a, b]))
    probs = keras.layers.Dense(5, activation="softmax", name="probs")(h)
    return keras.Model({"a": a, "b": b}, {"probs": probs, "score": keras.layers.Dense(1, name="score")(h)})


def inputs(batch=4, seed=3):
    rng = np.random.default_rng(seed)
    return {
        "a": rng.standard_normal((batch, 12)).astype("float32"),
        "b": rng.standard_normal((batch, 4)).astype("float32"),
    }


def runtimes(export_dir):
    """Each artifact loaded by its own runtime, as a user deploying it would: name -> fn(inputs) -> outputs."""
    import onnxruntime
    import openvino
    from ai_edge_litert.interpreter import Interpreter

    litert = Interpreter(model_path=str(export_dir / "formats" / "litert" / "model.tflite"))
    signature = litert.get_signature_runner("serving_default")
    session = onnxruntime.InferenceSession(str(export_dir / "formats" / "onnx" / "model.onnx"))
    compiled = openvino.Core().compile_model(
        str(export_dir / "formats" / "openvino" / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )

    def run_onnx(x):
        return dict(zip([o.name for o in session.get_outputs()], session.run(None, x)))

    def run_openvino(x):
        result = compiled(x)
        return {port.get_any_name(): result[port] for port in compiled.outputs}

    return {"litert": lambda x: signature(**x), "onnx": run_onnx, "openvino": run_openvino}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import exportkit

    root = tmp_path_factory.mktemp("formats")
    model = classifier()
    exportkit.export_saved_model(model, root / "m", serving_only=True, verbose=False, formats=FORMATS)
    return root, model


def test_every_format_is_verified_published_and_read_back_by_its_runtime(exported):
    root, model = exported
    record = manifest.read(root / "m")
    assert set(record.formats) == {"litert", "onnx", "openvino"}
    for name, fmt in record.formats.items():
        assert fmt["status"] == "ok" and fmt["max_scaled_error"] <= fmt["tolerance"] == 1e-4, (name, fmt)
        assert fmt["top1_agreement"] == 1.0 and fmt["load_s"] > 0 and fmt["size_bytes"] > 0
        assert set(fmt["latency"]["serving_default"]) == {"1", "3"}  # the batch sizes verify ran
        for file in fmt["files"]:  # published with the export, each digest in the manifest
            assert file.startswith(f"formats/{name}/") and file in record.files
    x = inputs()
    want = {k: np.asarray(v) for k, v in model(x).items()}
    for name, run in runtimes(root / "m").items():
        got = run(x)
        for output, w in want.items():
            error = float(np.abs(np.asarray(got[output]) - w).max())
            assert error <= 1e-4 * float(np.abs(w).max()), (name, output, error)
    # the SavedModel is still what the TF loaders read, the formats beside it
    import tensorflow as tf

    served = tf.saved_model.load(str(root / "m")).signatures["serving_default"](
        **{k: tf.constant(v) for k, v in x.items()}
    )
    np.testing.assert_allclose(served["probs"].numpy(), want["probs"], atol=1e-6)


def test_inspect_and_verify_report_every_format(exported, tmp_path):
    root, _ = exported
    shown = run_cli("inspect", root / "m", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    for name in ("litert", "onnx", "openvino"):
        line = next(line for line in shown.stdout.splitlines() if line.startswith(f"format {name} "))
        assert ": ok, " in line and "top-1 agreement 100%" in line and "b1 p50" in line, line
    done = run_cli("verify", root / "m", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report["formats"]) == {"litert", "onnx", "openvino"}
    assert all(f["ok"] and f["max_scaled_error"] <= 1e-4 for f in report["formats"].values())


def test_a_flipped_byte_in_an_artifact_is_caught_by_verify(exported, tmp_path):
    root, _ = exported
    copy = tmp_path / "m"
    shutil.copytree(root / "m", copy, symlinks=True)
    path = copy / "formats" / "onnx" / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    done = run_cli("verify", copy, cwd=tmp_path)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "formats/onnx/model.onnx" in lines[0] and "Traceback" not in done.stderr


def test_formats_are_byte_identical_on_re_export(exported, tmp_path):
    import exportkit

    root, model = exported
    exportkit.export_saved_model(model, tmp_path / "again", serving_only=True, verbose=False, overrides=[ALL])
    first, again = manifest.read(root / "m"), manifest.read(tmp_path / "again")
    files = [f for f in first.files if f.startswith("formats/")]
    assert len(files) == 4 and {f: first.files[f] for f in files} == {f: again.files[f] for f in files}


def test_quantized_litert_is_judged_by_tolerance_and_top1(tmp_path):
    """float16 and dynamic-range int8 pass with their precision's defaults; a too-tight tolerance
    fails the export in one line naming the format, and `optional` publishes without it."""
    import exportkit
    from exportkit.errors import VerificationError

    model = classifier()
    for quantize in ("float16", "dynamic_int8", "int8"):
        result = exportkit.export_saved_model(
            model,
            tmp_path / quantize,
            serving_only=True,
            verbose=False,
            overrides=["+formats=[litert]", f"formats.litert.quantize={quantize}", "formats.litert.optional=true"],
        )
        fmt = result.manifest["formats"]["litert"]
        assert fmt["options"]["quantize"] == quantize and fmt["max_scaled_error"] is not None
        if fmt["status"] == "ok":
            assert fmt["max_scaled_error"] <= fmt["tolerance"] and fmt["top1_agreement"] >= fmt["min_top1"]
        else:  # optional: left out, recorded with its numbers and why
            assert fmt["reason"].startswith("formats.litert does not match") and not fmt["files"]
            assert not (tmp_path / quantize / "formats" / "litert").exists()
    assert manifest.read(tmp_path / "float16").formats["litert"]["status"] == "ok"
    with pytest.raises(
        VerificationError,
        match=r"^formats\.litert does not match the source model: serving_default/\w+ at batch \d: max error .* "
        r"of the outputs' scale \(tolerance 1e-12\)",
    ):
        exportkit.export_saved_model(
            model,
            tmp_path / "tight",
            serving_only=True,
            verbose=False,
            overrides=["+formats=[litert]", "formats.litert.quantize=float16", "formats.litert.tolerance=1e-12"],
        )
    assert not (tmp_path / "tight").exists()


def test_int8_is_calibrated_on_real_examples_when_given(tmp_path):
    """formats.litert.representative_inputs: the int8 model calibrated on a verify.inputs file,
    verified on the same examples, judged by its tolerance and top-1 agreement."""
    import exportkit

    examples = tmp_path / "examples.npz"
    np.savez(examples, **inputs(batch=16, seed=7))
    result = exportkit.export_saved_model(
        classifier(),
        tmp_path / "m",
        serving_only=True,
        verbose=False,
        formats=["litert"],
        overrides=[
            "formats.litert.quantize=int8",
            f"formats.litert.representative_inputs={examples}",
            f"verify.inputs={examples}",
        ],
    )
    fmt = result.manifest["formats"]["litert"]
    assert fmt["status"] == "ok" and fmt["options"]["representative_inputs"] == str(examples)
    assert fmt["max_scaled_error"] <= fmt["tolerance"] == 0.25 and fmt["top1_agreement"] >= fmt["min_top1"] == 0.8


def test_a_jax_export_names_what_the_formats_cannot_convert(tmp_path):
    """A jax2tf export (XlaCallModule): LiteRT converts it (through StableHLO) and verifies; ONNX and
    OpenVINO cannot (the installed JAX has no conversion without XlaCallModule): one line naming
    the format and the way around it; optional formats are left out and the SavedModel published."""
    done = run_cli(
        "model=jax",
        "model.build._target_=tests.jax_models.mlp",
        "+signatures.serving_default={inputs: {x: {shape: [null, 6], dtype: float32}}}",
        "+formats=[onnx]",
        f"export_dir={tmp_path / 'j'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert done.returncode == 1
    (line,) = [line for line in done.stderr.splitlines() if line.strip()]
    assert line.startswith("exportkit: error: formats.onnx: the model is a jax2tf export (its serve graph"), line
    assert "use litert for this model, or leave onnx out" in line
    done = run_cli(
        "model=jax",
        "model.build._target_=tests.jax_models.mlp",
        "+signatures.serving_default={inputs: {x: {shape: [null, 6], dtype: float32}}}",
        "+formats=[litert,onnx,openvino]",
        "formats.onnx.optional=true",
        "formats.openvino.optional=true",
        f"export_dir={tmp_path / 'k'}",
        f"hydra.run.dir={tmp_path / 'run2'}",
    )
    assert done.returncode == 0, done.stderr
    formats = manifest.read(tmp_path / "k").formats
    assert formats["litert"]["status"] == "ok" and formats["litert"]["max_scaled_error"] <= 1e-4
    for name in ("onnx", "openvino"):
        assert formats[name]["status"] == "failed" and "XlaCallModule" in formats[name]["reason"]
        assert not (tmp_path / "k" / "formats" / name).exists()
    assert "left out (optional)" in done.stdout


def test_a_format_whose_converter_is_missing_is_one_line(tmp_path):
    done = run_cli(
        "+formats.mine._target_=tests.test_formats.NeedsAbsentPackage",
        f"export_dir={tmp_path / 'x'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert done.returncode == 1
    (line,) = [line for line in done.stderr.splitlines() if line.strip()]
    assert line == (
        "exportkit: error: formats.mine needs packages that are not installed: pip install 'exportkit[absent]'"
    )
    assert not (tmp_path / "x").exists()


def test_an_unknown_format_is_one_line_naming_the_choices(tmp_path):
    import exportkit
    from exportkit.errors import ConfigError

    with pytest.raises(ConfigError) as raised:
        exportkit.export_saved_model(classifier(), tmp_path / "x", verbose=False, formats=["tflite"])
    assert str(raised.value) == (
        "formats=tflite is not an option of formats (did you mean formats=litert?); choose one of litert, onnx, openvino"
    )
    with pytest.raises(ConfigError, match="give a list of format names"):
        exportkit.export_saved_model(classifier(), tmp_path / "x", verbose=False, formats="onnx")
    assert not (tmp_path / "x").exists()


class NeedsAbsentPackage(Format):
    """A user's format plugin whose converter is not installed."""

    extra = "absent"
    requires = ("exportkit_absent_converter",)

    def convert(self, saved_model, out, signatures):
        raise AssertionError("not reached: its converter is missing")

    def runner(self, directory):
        raise AssertionError("not reached: its converter is missing")


class SavedModelCopy(Format):
    """A user's own format: the serve graph as a SavedModel of its own, run by TensorFlow."""

    def convert(self, saved_model, out, signatures):
        import tensorflow as tf

        loaded = tf.saved_model.load(str(saved_model))
        tf.saved_model.save(loaded, str(out / "copy"), signatures=dict(loaded.signatures))

    def runner(self, directory):
        import tensorflow as tf

        loaded = tf.saved_model.load(str(directory / "copy"))

        def run(key, inputs):
            outputs = loaded.signatures[key](**{k: tf.constant(v) for k, v in inputs.items()})
            return {name: value.numpy() for name, value in outputs.items()}

        return run


def test_a_users_own_format_is_converted_verified_published_and_re_verified(tmp_path):
    """A format plugin from outside exportkit (this module, by its _target_): converted in the
    exporting process, run by the verification process that imports it, published and recorded."""
    done = run_cli(
        "+formats.copy._target_=tests.test_formats.SavedModelCopy",
        f"export_dir={tmp_path / 'm'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert done.returncode == 0, done.stderr
    record = manifest.read(tmp_path / "m").formats["copy"]
    assert record["status"] == "ok" and record["target"] == "tests.test_formats.SavedModelCopy"
    assert record["max_scaled_error"] <= 1e-4 and any(f.startswith("formats/copy/copy/") for f in record["files"])
    again = run_cli("verify", tmp_path / "m", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "OK formats.copy: max error" in again.stdout
