"""The train/eval graphs of compiled models with any Keras loss, against Keras itself.

Each model is built twice from the same seed: one is exported, its twin is trained by Keras.
The TF1 session loader runs the exported ``train`` graph three times; its losses equal the twin's
``train_on_batch`` over the same batches, and the ``eval`` graph's loss and metrics equal
``model.evaluate`` on the same batch. The models have no dropout, so the steps are deterministic.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import exportkit
from exportkit.artifact.files import graph_dir
from exportkit.errors import LoadError
from tests import models
from tests.conftest import export

NO_VERIFY = ["pipeline.stages.verify=null"]
RTOL = 1e-5
RNG = np.random.default_rng(0)
X = [RNG.standard_normal((8, 6)).astype("float32") for _ in range(3)]


def twins(factory, **kwargs):
    """The same model twice (same seed, same weights): one to export, one for Keras to train."""
    keras.utils.set_random_seed(7)
    exported = factory(**kwargs)
    keras.utils.set_random_seed(7)
    twin = factory(**kwargs)
    for a, b in zip(exported.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(a, b)
    return exported, twin


def run_tf1(export_dir, tag, feeds):
    """Load ``tag`` in a TF1 session and run its signature once per feed (one session, so state
    carries over as in a training loop) -> the signature, and the outputs of each call."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.load(sess, [tag], str(graph_dir(export_dir, tag)))
        sig = meta.signature_def[tag]
        fetches = {k: v.name for k, v in sig.outputs.items()}
        results = [sess.run(fetches, {sig.inputs[k].name: v for k, v in feed.items()}) for feed in feeds]
    return sig, results


def close(got, want, what):
    """Equal relative to the value's own scale (losses and metrics are O(0.1..1) here)."""
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * max(1e-3, abs(float(want))), err_msg=what)


def feeds_for(xs, targets):
    return [{"x": x, **{f"{k}_target": v for k, v in t.items()}} for x, t in zip(xs, targets)]


def check_against_keras(export_dir, twin, xs, targets, keras_y):
    """eval == evaluate on the first batch; train x3 == train_on_batch x3 (losses, and the first
    step's metrics: Keras resets them per train_on_batch, the graph starts from reset state)."""
    _, (evaluated,) = run_tf1(export_dir, "eval", feeds_for(xs[:1], targets[:1]))
    want = twin.evaluate(xs[0], keras_y(targets[0]), batch_size=len(xs[0]), verbose=0, return_dict=True)
    close(evaluated["loss"], want["loss"], "eval loss")
    got_metrics = {k[len("metrics/") : -len("/value")]: v for k, v in evaluated.items() if k.startswith("metrics/")}
    assert set(got_metrics) == set(want) - {"loss"}
    for name, value in got_metrics.items():
        close(value, want[name], f"eval metric {name}")
    _, trained = run_tf1(export_dir, "train", feeds_for(xs, targets))
    for step, (x, t, got) in enumerate(zip(xs, targets, trained)):
        want = twin.train_on_batch(x, keras_y(t), return_dict=True)
        close(got["loss"], want["loss"], f"train loss at step {step}")
        if step == 0:
            for name in set(want) - {"loss"}:
                close(got[f"metrics/{name}/value"], want[name], f"train metric {name}")
    return trained


def target_spec(sig, name):
    info = sig.inputs[name]
    return [d.size for d in info.tensor_shape.dim], tf.as_dtype(info.dtype)


@pytest.mark.parametrize(
    "loss,activation",
    [
        ("sparse_categorical_crossentropy", "softmax"),
        (keras.losses.SparseCategoricalCrossentropy(from_logits=True), None),
        (keras.losses.sparse_categorical_crossentropy, "softmax"),
    ],
    ids=["name", "object-from-logits", "function"],
)
def test_sparse_classifier_trains_and_evaluates_as_keras(tmp_path, loss, activation):
    """Before: a raw ValueError at export (the target had the output's one-hot shape)."""
    source, twin = twins(models.sparse_classifier, loss=loss, activation=activation)
    export_dir = tmp_path / "m"
    exportkit.export_saved_model(source, export_dir, overrides=NO_VERIFY, verbose=False)
    labels = [{"out": RNG.integers(0, 4, 8)} for _ in X]
    sig, _ = run_tf1(export_dir, "eval", [])
    assert set(sig.inputs) == {"x", "out_target"}
    assert target_spec(sig, "out_target") == ([-1], tf.int64)
    check_against_keras(export_dir, twin, X, labels, lambda t: t["out"])


def test_dict_outputs_with_weighted_losses_metrics_dict_and_an_output_without_loss(tmp_path):
    source, twin = twins(models.dict_heads)
    export_dir = tmp_path / "m"
    exportkit.export_saved_model(source, export_dir, overrides=NO_VERIFY, verbose=False)
    targets = [{"score": RNG.standard_normal((8, 1)).astype("float32"), "label": RNG.integers(0, 3, 8)} for _ in X]
    sig, _ = run_tf1(export_dir, "train", [])
    assert set(sig.inputs) == {"x", "score_target", "label_target"}  # aux has no loss: no target
    assert target_spec(sig, "label_target") == ([-1], tf.int64)
    assert target_spec(sig, "score_target") == ([-1, 1], tf.float32)
    assert {"predictions/aux", "metrics/label_accuracy/value", "metrics/score_mae/value"} <= set(sig.outputs)
    # Keras' own fit needs a y for every output once metrics are per output; no loss reads aux's
    check_against_keras(export_dir, twin, X, targets, lambda t: {**t, "aux": np.zeros((8, 2), "float32")})


def test_list_outputs_with_list_losses_and_metrics(tmp_path):
    source, twin = twins(models.list_heads)
    export_dir = tmp_path / "m"
    exportkit.export_saved_model(source, export_dir, overrides=NO_VERIFY, verbose=False)
    targets = [{"score": RNG.standard_normal((8, 1)).astype("float32"), "label": RNG.integers(0, 3, 8)} for _ in X]
    sig, _ = run_tf1(export_dir, "eval", [])
    assert set(sig.inputs) == {"x", "score_target", "label_target"}
    assert target_spec(sig, "label_target") == ([-1], tf.int64)
    check_against_keras(export_dir, twin, X, targets, lambda t: [t["score"], t["label"]])


def test_compile_node_takes_dicts_and_targets_override_the_dtype(tmp_path):
    compile_node = (
        "compile={optimizer: {_target_: keras.optimizers.Adam, learning_rate: 0.01}, "
        "loss: {score: mse, label: sparse_categorical_crossentropy}, "
        "loss_weights: {score: 0.5, label: 2.0}, metrics: {label: [accuracy], score: [mae]}}"
    )
    export_dir = tmp_path / "m"
    export(
        "model=keras",
        "model.build._target_=tests.models.dict_heads",
        "+model.build.compiled=false",
        compile_node,
        "+compile.targets.label={shape: [null], dtype: int32}",
        f"export_dir={export_dir}",
        *NO_VERIFY,
    )
    keras.backend.clear_session()  # the export cleared it before building, as the twin's build does
    keras.utils.set_random_seed(0)  # the export's seed
    twin = models.dict_heads(compiled=False)
    twin.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss={"score": "mse", "label": "sparse_categorical_crossentropy"},
        loss_weights={"score": 0.5, "label": 2.0},
        metrics={"label": ["accuracy"], "score": ["mae"]},
    )
    targets = [
        {"score": RNG.standard_normal((8, 1)).astype("float32"), "label": RNG.integers(0, 3, 8).astype("int32")}
        for _ in X
    ]
    sig, _ = run_tf1(export_dir, "train", [])
    assert target_spec(sig, "label_target") == ([-1], tf.int32)
    check_against_keras(export_dir, twin, X, targets, lambda t: {**t, "aux": np.zeros((8, 2), "float32")})


def test_eval_metrics_start_from_zero_after_loading_and_accumulate_per_session(tmp_path):
    """The source model's metric state is non-zero after fit; the export holds it reset, so the
    first eval call reports that batch's metrics, and the next accumulates over both batches."""
    source, twin = twins(models.sparse_classifier)
    xs = [RNG.standard_normal((8, 6)).astype("float32") for _ in range(2)]
    labels = [RNG.integers(0, 4, 8) for _ in range(2)]
    source.fit(np.concatenate(xs), np.concatenate(labels), batch_size=4, epochs=2, verbose=0)
    assert float(source.metrics[0].result()) != 0.0  # running state, left by fit
    export_dir = tmp_path / "m"
    exportkit.export_saved_model(source, export_dir, overrides=NO_VERIFY, verbose=False)
    twin.set_weights(source.get_weights())
    _, (first, second) = run_tf1(export_dir, "eval", [{"x": x, "out_target": y} for x, y in zip(xs, labels)])
    one = twin.evaluate(xs[0], labels[0], batch_size=8, verbose=0, return_dict=True)
    both = twin.evaluate(np.concatenate(xs), np.concatenate(labels), batch_size=8, verbose=0, return_dict=True)
    close(first["metrics/accuracy/value"], one["accuracy"], "first call: the batch's own accuracy")
    close(first["loss"], one["loss"], "first call loss")
    close(second["metrics/accuracy/value"], both["accuracy"], "second call: accuracy over both batches")
    reader = tf.train.load_checkpoint(str(export_dir / "variables" / "variables"))
    metric_keys = [k for k in reader.get_variable_to_shape_map() if k.startswith("metrics_variables/")]
    assert metric_keys and all(not np.any(reader.get_tensor(k)) for k in metric_keys)
    assert int(source.optimizer.iterations.numpy()) == 8
    for i, variable in enumerate(source.optimizer.variables):  # the optimizer state: kept as is
        np.testing.assert_array_equal(
            reader.get_tensor(f"optimizer_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE"),
            keras.ops.convert_to_numpy(variable),
        )


def test_load_from_saved_model_with_python_functions_in_its_config(tmp_path):
    """Before: "the model uses function, which is not among custom_objects"."""
    source = models.with_functions()
    export_dir = tmp_path / "m"
    exportkit.export_saved_model(source, export_dir, overrides=NO_VERIFY, verbose=False)
    custom = {"scaled_tanh": models.scaled_tanh, "half_squared_error": models.half_squared_error}
    loaded = exportkit.load_from_saved_model(export_dir, custom_objects=custom)
    x = RNG.standard_normal((4, 5)).astype("float32")
    want = keras.ops.convert_to_numpy(source(x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), want, rtol=1e-6, atol=1e-6 * np.abs(want).max())
    y = np.eye(3, dtype="float32")[RNG.integers(0, 3, 4)]
    got, expected = (
        loaded.evaluate(x, y, verbose=0, return_dict=True),
        source.evaluate(x, y, verbose=0, return_dict=True),
    )
    assert set(got) == set(expected) == {"loss", "categorical_accuracy", "mean_squared_error"}
    for name in got:
        close(got[name], expected[name], name)
    with pytest.raises(LoadError, match="the model uses scaled_tanh, half_squared_error, which"):
        exportkit.load_from_saved_model(export_dir)


def test_keras_function_metric_and_loss_need_no_custom_objects(tmp_path):
    x_in = keras.Input((5,), name="x")
    source = keras.Model(x_in, keras.layers.Dense(3, activation="softmax", name="out")(x_in))
    source.compile("sgd", loss=keras.losses.categorical_crossentropy, metrics=[keras.metrics.categorical_accuracy])
    export_dir = tmp_path / "m"
    exportkit.export_saved_model(source, export_dir, overrides=NO_VERIFY, verbose=False)
    loaded = exportkit.load_from_saved_model(export_dir)
    x = RNG.standard_normal((4, 5)).astype("float32")
    want = keras.ops.convert_to_numpy(source(x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), want, rtol=1e-6, atol=1e-6 * np.abs(want).max())
    assert loaded.compiled


def test_multi_output_export_is_byte_identical_and_bad_targets_name_the_key(tmp_path):
    from exportkit.errors import ConfigError
    from tests.test_determinism import contents

    overrides = ("model=keras", "model.build._target_=tests.models.dict_heads", *NO_VERIFY)
    export(*overrides, f"export_dir={tmp_path / 'a'}")
    export(*overrides, f"export_dir={tmp_path / 'b'}")
    a, b = contents(tmp_path / "a"), contents(tmp_path / "b")
    assert sorted(a) == sorted(b) and all(a[k] == b[k] for k in a)
    with pytest.raises(ConfigError, match="compile.targets names nope, which the model does not output"):
        export(*overrides, "+compile.targets.nope={shape: [null]}", f"export_dir={tmp_path / 'c'}")
    with pytest.raises(ConfigError, match=r"compile.targets.label.dtype='int3' is not supported"):
        export(*overrides, "+compile.targets.label={shape: [null], dtype: int3}", f"export_dir={tmp_path / 'd'}")
