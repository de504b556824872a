"""More sources through the same pipeline: JAX models and Flax modules through the Python API
(``model=jax_in_memory``), legacy Keras 2 models (``tf_keras``: in memory, ``.h5``, SavedModel
directory), and jax2tf's shape errors as one line. Every export is read back from the written
SavedModel and compared with the source model, tolerances relative to the outputs' scale."""

import numpy as np
import pytest

from exportkit.artifact.files import graph_dir
from tests import jax_models
from tests.conftest import export, random_inputs, run_cli, run_python, serve

BERT_SIG = (
    "+signatures.serving_default={inputs: {token_ids: {shape: [null, null], dtype: int32}, "
    "padding_mask: {shape: [null, null], dtype: int32}}}"
)


def assert_close(got, want, rtol=1e-5):
    """``got`` equals ``want`` within ``rtol`` of the outputs' own scale (random nets output tiny values)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    scale = max(float(np.abs(want).max()), 1e-30)
    assert float(np.abs(got - want).max()) <= rtol * scale, (np.abs(got - want).max(), scale)


def stage_status(result):
    return {r.name: r.status for r in result.records}


# --- JAX models through the Python API ------------------------------------------------------------


def bert_like_apply(params, token_ids, padding_mask):
    """Embeds tokens and masks them: token_ids and padding_mask must have one sequence length,
    which the default symbols (one per null) do not say."""
    import jax.numpy as jnp

    x = params["embedding"][token_ids]
    x = x * padding_mask[..., None].astype(x.dtype)
    return {"pooled": jnp.tanh(x.sum(axis=1) @ params["dense"])}


def bert_like(vocab: int = 11, width: int = 4):
    rng = np.random.default_rng(0)
    return bert_like_apply, {
        "embedding": rng.standard_normal((vocab, width)).astype("float32"),
        "dense": rng.standard_normal((width, 3)).astype("float32"),
    }


def bert_inputs(batch=3, length=5):
    rng = np.random.default_rng(1)
    return {
        "token_ids": rng.integers(0, 11, (batch, length)).astype("int32"),
        "padding_mask": (rng.random((batch, length)) < 0.7).astype("int32"),
    }


def flax_cnn():
    """A small flax.linen Conv + Dense model and its variables."""
    import flax.linen as nn
    import jax

    class CNN(nn.Module):
        @nn.compact
        def __call__(self, image):
            x = nn.relu(nn.Conv(4, (3, 3))(image))
            return nn.Dense(3)(x.mean(axis=(1, 2)))

    module = CNN()
    return module, module.init(jax.random.PRNGKey(0), np.zeros((1, 6, 6, 2), np.float32))


def test_api_exports_apply_fn_and_params_verified(tmp_path):
    import tensorflow as tf

    import exportkit

    apply_fn, params = jax_models.two_inputs()
    # unnamed specs take apply_fn's parameter names after params: image, meta
    result = exportkit.export_saved_model(
        (apply_fn, params),
        tmp_path / "two",
        verbose=False,
        input_signature=[tf.TensorSpec([None, 5]), tf.TensorSpec([None, 3])],
    )
    assert stage_status(result) == dict.fromkeys(
        ["build", "jax2tf", "trace", "write_checkpoint", "write_graphs", "verify"], "ok"
    )
    assert result.manifest["verify"]["serving_default"]["3"]["score"]["ok"]
    assert result.manifest["config"]["model"] == {
        "_target_": "exportkit.jax.source.JaxInMemory",
        "description": "(apply_fn, params): tests.jax_models.two_inputs_apply",
    }
    inputs = random_inputs({"image": (5,), "meta": (3,)}, 4, seed=7)
    got = serve(tmp_path / "two", inputs)
    want = apply_fn(params, inputs["image"], inputs["meta"])
    assert set(got) == {"score", "label"}
    for name in want:
        assert_close(got[name], want[name])


def test_api_exports_a_flax_module_with_its_variables_and_bound(tmp_path):
    import tensorflow as tf

    import exportkit

    module, variables = flax_cnn()
    spec = [tf.TensorSpec([None, 6, 6, 2], tf.float32, name="image")]
    pair = exportkit.export_saved_model((module, variables), tmp_path / "pair", input_signature=spec, verbose=False)
    assert stage_status(pair)["verify"] == "ok"
    assert pair.manifest["config"]["model"]["description"].startswith("flax.linen module ")
    bound = exportkit.export_saved_model(
        module.bind(variables),
        tmp_path / "bound",
        input_signature=spec,
        verbose=False,
        overrides=["pipeline.stages.verify=null"],
    )
    assert bound.manifest["config"]["model"]["description"].startswith("bound flax.linen module ")
    image = np.random.default_rng(3).standard_normal((5, 6, 6, 2)).astype("float32")
    want = np.asarray(module.apply(variables, image))
    for directory in ("pair", "bound"):
        assert_close(serve(tmp_path / directory, {"image": image})["output_0"], want)


def test_jax_model_through_the_api_needs_input_signature(tmp_path):
    import exportkit
    from exportkit.errors import SignatureError

    with pytest.raises(SignatureError, match=r"needs `input_signature`.*tf.TensorSpec"):
        exportkit.export_saved_model(jax_models.mlp(), tmp_path / "m", verbose=False)
    assert not (tmp_path / "m").exists()


def test_the_api_refuses_what_is_no_model(tmp_path):
    import exportkit
    from exportkit.errors import ModelSourceError

    with pytest.raises(ModelSourceError, match=r"given a builtins.str; it exports a keras.Model, a tf_keras"):
        exportkit.export_saved_model("model.keras", tmp_path / "m", verbose=False)


def test_a_keras_model_through_the_api_imports_no_jax_or_tf_keras_source(tmp_path):
    # TensorFlow itself imports jax when it is installed: what must stay out is exportkit's JAX and
    # tf_keras code, Flax, and tf_keras.
    code = (
        "import sys, keras, exportkit\n"
        "m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])\n"
        f"exportkit.export_saved_model(m, {str(tmp_path / 'k')!r}, verbose=False,"
        " overrides=['pipeline.stages.verify=null'])\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] in ('flax', 'tf_keras')"
        " or n.startswith(('exportkit.jax', 'exportkit.tf_keras'))))\n"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


# --- jax2tf shape errors ---------------------------------------------------------------------------


def test_a_shape_error_under_the_default_symbols_is_one_line_and_its_example_exports(tmp_path):
    import tensorflow as tf

    import exportkit
    from exportkit.errors import ConversionError

    apply_fn, params = bert_like()
    spec = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None], tf.int32)]
    with pytest.raises(ConversionError) as caught:
        exportkit.export_saved_model((apply_fn, params), tmp_path / "default", input_signature=spec, verbose=False)
    message = str(caught.value)
    assert "\n" not in message and "in user code" not in message
    assert (
        'default symbolic shapes {token_ids: "(batch, token_ids_1)", padding_mask: "(batch, padding_mask_1)"}'
    ) in message
    assert "incompatible shapes for broadcasting" in message
    example = (
        'pipeline.stages.jax2tf.polymorphic_shapes={token_ids: "(batch, token_ids_1)", '
        'padding_mask: "(batch, token_ids_1)"}'
    )
    assert f"e.g. '{example}'" in message
    assert not (tmp_path / "default").exists()
    # the example it gives is a working override: the export verifies and computes the function
    result = exportkit.export_saved_model(
        (apply_fn, params), tmp_path / "shared", input_signature=spec, verbose=False, overrides=[example]
    )
    assert stage_status(result)["verify"] == "ok"
    inputs = bert_inputs(batch=3, length=7)
    assert_close(
        serve(tmp_path / "shared", inputs)["pooled"],
        apply_fn(params, inputs["token_ids"], inputs["padding_mask"])["pooled"],
    )


def test_a_shape_error_from_the_cli_is_one_error_line_without_traceback(tmp_path):
    done = run_cli(
        "model=jax", "model.build._target_=tests.test_sources.bert_like", BERT_SIG, f"export_dir={tmp_path / 'm'}"
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("exportkit: error:")]
    assert len(errors) == 1
    assert errors[0].startswith(
        "exportkit: error: jax2tf cannot convert the JAX function under the default "
        'symbolic shapes {token_ids: "(batch, token_ids_1)"'
    )
    assert "pipeline.stages.jax2tf.polymorphic_shapes" in errors[0]
    assert not (tmp_path / "m").exists()


# --- legacy Keras 2 (tf_keras) ---------------------------------------------------------------------


def tf_keras_mlp(compiled=True):
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential(
        [
            tf_keras.Input((6,), name="features"),
            tf_keras.layers.Dense(8, activation="tanh"),
            tf_keras.layers.Dense(3, activation="softmax", name="probabilities"),
        ],
        name="mlp",
    )
    if compiled:
        model.compile(optimizer=tf_keras.optimizers.SGD(0.1), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def tf_keras_two_inputs():
    import tf_keras

    tf_keras.utils.set_random_seed(1)
    image = tf_keras.Input((5,), name="image")
    meta = tf_keras.Input((3,), name="meta")
    joined = tf_keras.layers.Concatenate()([image, tf_keras.layers.Dense(2, name="meta_proj")(meta)])
    score = tf_keras.layers.Dense(1, name="score")(joined)
    return tf_keras.Model([image, meta], score, name="two")


def test_tf_keras_is_keras_2_beside_keras_3():
    import keras
    import tf_keras

    assert keras.__version__.startswith("3.") and tf_keras.__version__.startswith("2.21")


def test_api_tf_keras_compiled_sequential_serves_trains_and_loads(tmp_path):
    import tensorflow as tf
    import tf_keras

    import exportkit

    model = tf_keras_mlp()
    result = exportkit.export_saved_model(model, tmp_path / "mlp", verbose=False)
    assert stage_status(result)["verify"] == "ok"
    assert result.manifest["config"]["model"] == {
        "_target_": "exportkit.tf_keras.source.TfKerasInMemory",
        "description": "tf_keras Sequential 'mlp'",
    }
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 6)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 4)]
    assert_close(serve(tmp_path / "mlp", {"features": x})["probabilities"], model.predict(x, verbose=0))
    # the TF1 train graph takes the steps tf_keras' train_on_batch takes on a copy of the model
    twin = tf_keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    twin.compile(optimizer=tf_keras.optimizers.SGD(0.1), loss="categorical_crossentropy", metrics=["accuracy"])
    want = [twin.train_on_batch(x, y)[0] for _ in range(3)]
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.load(sess, ["train"], str(graph_dir(tmp_path / "mlp", "train")))
        sig = meta.signature_def["train"]
        feed = {sig.inputs["features"].name: x, sig.inputs["probabilities_target"].name: y}
        got = [float(sess.run(sig.outputs["loss"].name, feed)) for _ in range(3)]
        assert "metrics/accuracy/value" in sig.outputs
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert got[2] < got[0]
    # load_from_saved_model rebuilds the tf_keras model, compiled, with the exported weights
    loaded = exportkit.load_from_saved_model(tmp_path / "mlp")
    assert isinstance(loaded, tf_keras.Model) and loaded.optimizer is not None
    assert_close(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_tf_keras_sparse_loss_takes_class_ids_in_train_and_eval(tmp_path):
    import tensorflow as tf
    import tf_keras

    import exportkit

    model = tf_keras_mlp(compiled=False)
    model.compile(optimizer=tf_keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    result = exportkit.export_saved_model(model, tmp_path / "mlp", verbose=False)
    assert stage_status(result)["verify"] == "ok"
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 6)).astype("float32")
    y = rng.integers(0, 3, 5).astype("int64")  # class ids, as fit takes them for this loss
    twin = tf_keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    twin.compile(optimizer=tf_keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    want = [twin.train_on_batch(x, y) for _ in range(3)]
    for tag in ("train", "eval"):
        with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
            meta = tf.compat.v1.saved_model.load(sess, [tag], str(graph_dir(tmp_path / "mlp", tag)))
            sig = meta.signature_def[tag]
            target = sig.inputs["probabilities_target"]
            assert tf.dtypes.as_dtype(target.dtype) == tf.int64
            assert [d.size for d in target.tensor_shape.dim] == [-1]
            feed = {sig.inputs["features"].name: x, target.name: y}
            fetch = [sig.outputs["loss"].name, sig.outputs["metrics/accuracy/value"].name]
            got = [sess.run(fetch, feed) for _ in range(3 if tag == "train" else 1)]
        if tag == "train":  # loss and accuracy of each of 3 steps, as train_on_batch reports them
            np.testing.assert_allclose(np.array(got, dtype=np.float64), np.array(want, dtype=np.float64), rtol=1e-5)
            assert got[2][0] < got[0][0]
        else:  # eval of the exported (untrained) weights: the model's own evaluate
            fresh = tf_keras.models.clone_model(model)
            fresh.set_weights(model.get_weights())
            fresh.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            np.testing.assert_allclose(got[0], fresh.evaluate(x, y, verbose=0), rtol=1e-5)


def test_tf_keras_h5_through_model_tf_keras(tmp_path):
    import exportkit

    model = tf_keras_mlp(compiled=False)
    model.save(tmp_path / "mlp.h5")
    export_dir = tmp_path / "from_h5"
    result = export("model=tf_keras", f"model.path={tmp_path / 'mlp.h5'}", f"export_dir={export_dir}")
    assert stage_status(result)["verify"] == "ok"
    assert result.manifest["inputs"]["model.path"]["path"] == str(tmp_path / "mlp.h5")
    x = np.random.default_rng(6).standard_normal((5, 6)).astype("float32")
    assert_close(serve(export_dir, {"features": x})["probabilities"], model.predict(x, verbose=0))
    assert_close(exportkit.load_from_saved_model(export_dir).predict(x, verbose=0), model.predict(x, verbose=0))


def test_tf_keras_saved_model_dir_through_the_cli(tmp_path):
    model = tf_keras_two_inputs()
    model.save(tmp_path / "tfk_saved_model")  # tf_keras' own SavedModel directory
    export_dir = tmp_path / "out"
    run_cli("model=tf_keras", f"model.path={tmp_path / 'tfk_saved_model'}", f"export_dir={export_dir}", check=True)
    inputs = random_inputs({"image": (5,), "meta": (3,)}, 4, seed=8)
    got = serve(export_dir, inputs)
    assert list(got) == ["score"]
    assert_close(got["score"], model.predict([inputs["image"], inputs["meta"]], verbose=0))


def test_model_tf_keras_without_a_model_is_one_line(tmp_path):
    from exportkit.errors import ModelSourceError

    with pytest.raises(ModelSourceError, match=r"model.path=.*no such file or directory; give a tf_keras"):
        export("model=tf_keras", f"model.path={tmp_path / 'nothing.h5'}", f"export_dir={tmp_path / 'm'}")
    with pytest.raises(ModelSourceError, match=r"without keras_metadata.pb"):
        export("model=tf_keras", f"model.path={tmp_path}", f"export_dir={tmp_path / 'm'}")
