"""Round trips: export tiny models, reload the SavedModel, compare with the source model."""

import numpy as np
import pytest

from tests import models
from tests.conftest import export, random_inputs, serve


def _expected(model, inputs):
    import keras

    from exportkit.keras.calls import model_inputs, name_outputs

    out = name_outputs(model, model(model_inputs(inputs), training=False))
    return {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}


@pytest.mark.parametrize("batch", [1, 5])
def test_sequential_dynamic_batch(export_dir, batch):
    result = export(
        "model=keras",
        "model.build._target_=tests.models.sequential",
        f"export_dir={export_dir}",
        "pipeline.stages.verify=null",
    )
    model = result.context.model.instance
    inputs = random_inputs({"x": (6,)}, batch)
    got = serve(export_dir, inputs)
    want = _expected(model, inputs)
    assert set(got) == {"out"}
    np.testing.assert_allclose(got["out"], want["out"], atol=1e-6)


def test_functional_several_named_inputs_and_outputs(export_dir):
    result = export("model=keras", "model.build._target_=tests.models.functional_multi_io", f"export_dir={export_dir}")
    inputs = random_inputs({"image": (5,), "meta": (3,)}, 4)
    got = serve(export_dir, inputs)
    want = _expected(result.context.model.instance, inputs)
    assert set(got) == {"score", "label"}
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-6)
    assert set(result.manifest["verify"]["serving_default"]) == {"1", "3"}


def test_subclassed_with_explicit_signature(export_dir):
    result = export(
        "model=keras",
        "model.build._target_=tests.models.subclassed",
        f"export_dir={export_dir}",
        "+signatures.serving_default={inputs: {x: {shape: [null, 7], dtype: float32}}}",
    )
    inputs = random_inputs({"x": (7,)}, 2)
    got = serve(export_dir, inputs)
    np.testing.assert_allclose(got["y"], _expected(result.context.model.instance, inputs)["y"], atol=1e-6)


def test_custom_layer_through_custom_objects(export_dir):
    result = export(
        "model=keras",
        "model.build._target_=tests.models.custom_layer",
        "+custom_objects.Scale=tests.models.Scale",
        f"export_dir={export_dir}",
    )
    assert result.context.model.custom_objects == {"Scale": models.Scale}
    inputs = random_inputs({"x": (4,)}, 3)
    got = serve(export_dir, inputs)
    np.testing.assert_allclose(got["out"], _expected(result.context.model.instance, inputs)["out"], atol=1e-6)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras_file_source(tmp_path, export_dir, suffix):
    source = models.custom_layer()
    path = tmp_path / f"m{suffix}"
    source.save(path)
    export(
        "model=keras_file", f"model.path={path}", "+custom_objects.Scale=tests.models.Scale", f"export_dir={export_dir}"
    )
    inputs = random_inputs({"x": (4,)}, 2)
    np.testing.assert_allclose(serve(export_dir, inputs)["out"], _expected(source, inputs)["out"], atol=1e-6)


def test_tf1_loader_restores_the_checkpoint(export_dir):
    """The checkpoint keys match the graph's saver, as TensorFlow Serving's C++ loader needs."""
    import tensorflow as tf

    result = export(
        "model=keras",
        "model.build._target_=tests.models.sequential",
        f"export_dir={export_dir}",
        "pipeline.stages.verify=null",
    )
    inputs = random_inputs({"x": (6,)}, 3)
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.load(sess, ["serve"], str(export_dir))
        sig = meta.signature_def["serving_default"]
        got = sess.run(sig.outputs["out"].name, {sig.inputs["x"].name: inputs["x"]})
    np.testing.assert_allclose(got, _expected(result.context.model.instance, inputs)["out"], atol=1e-6)


def test_several_signatures_dynamic_and_fixed_batch(export_dir):
    result = export(
        "model=keras",
        "model.build._target_=tests.models.sequential",
        f"export_dir={export_dir}",
        "+signatures.serving_default={inputs: {x: {shape: [null, 6]}}}",
        "+signatures.fixed_batch={inputs: {x: {shape: [4, 6], dtype: float32}}}",
    )
    assert set(result.manifest["verify"]) == {"serving_default", "fixed_batch"}
    assert set(result.manifest["verify"]["fixed_batch"]) == {"4"}  # a fixed batch is verified as given
    inputs = random_inputs({"x": (6,)}, 4)
    want = _expected(result.context.model.instance, inputs)["out"]
    for key in ("serving_default", "fixed_batch"):
        np.testing.assert_allclose(serve(export_dir, inputs, key=key)["out"], want, atol=1e-6)


def test_jit_compile_target_flag(export_dir):
    result = export(
        "model=keras",
        "model.build._target_=tests.models.sequential",
        f"export_dir={export_dir}",
        "target.jit_compile=true",
    )
    assert result.context.graphs["serve"].functions["serving_default"].function_def.attr["_XlaMustCompile"].b
    inputs = random_inputs({"x": (6,)}, 3)
    np.testing.assert_allclose(
        serve(export_dir, inputs)["out"], _expected(result.context.model.instance, inputs)["out"], atol=1e-5
    )
