"""The Python API: export_saved_model / load_from_saved_model, TF 1.14's pair and beyond."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import exportkit
from exportkit.artifact.files import graph_dir
from exportkit.errors import ExportDirExistsError, LoadError, SignatureError
from tests import models
from tests.conftest import ROOT, leftovers, random_inputs, serve

NO_VERIFY = ["pipeline.stages.verify=null"]


def _assert_same_outputs(a, b, inputs):
    out_a, out_b = a(inputs, training=False), b(inputs, training=False)
    for x, y in zip(tf.nest.flatten(out_a), tf.nest.flatten(out_b)):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(x), keras.ops.convert_to_numpy(y))


def test_seed_example_runs_as_written(tmp_path):
    script = (ROOT / "examples" / "seed_example.py").read_text()
    target = tmp_path / "simple_keras_model"
    (tmp_path / "seed.py").write_text(script.replace("'/tmp/simple_keras_model'", repr(str(target))))
    done = subprocess.run(
        [sys.executable, str(tmp_path / "seed.py")], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("Total params: 11") == 2  # summary before export and after load
    assert (target / "saved_model.pb").exists() and (target / "assets" / "saved_model.json").exists()


@pytest.mark.parametrize("name", ["sequential", "functional_multi_io", "custom_layer"])
def test_load_from_saved_model_gives_identical_outputs(name, export_dir):
    source = models.REGISTRY[name]()
    custom = {"Scale": models.Scale} if name == "custom_layer" else None
    exportkit.export_saved_model(source, export_dir, custom_objects=custom)
    assert json.loads((export_dir / "assets" / "saved_model.json").read_text()) == json.loads(source.to_json())
    loaded = exportkit.load_from_saved_model(export_dir, custom_objects=custom)
    specs = {t.name: tuple(t.shape[1:]) for t in source.inputs}
    inputs = random_inputs(specs, 4)
    _assert_same_outputs(source, loaded, inputs if len(inputs) > 1 else next(iter(inputs.values())))


def test_missing_custom_object_names_the_class(export_dir):
    exportkit.export_saved_model(
        models.custom_layer(), export_dir, custom_objects={"Scale": models.Scale}, overrides=NO_VERIFY
    )
    with pytest.raises(LoadError, match="the model uses Scale, which is not among custom_objects"):
        exportkit.load_from_saved_model(export_dir)


def test_lambda_layer_refused_in_safe_mode_unless_opted_out(export_dir):
    source = models.with_lambda()
    exportkit.export_saved_model(source, export_dir, overrides=NO_VERIFY)
    with pytest.raises(LoadError, match="safe_mode=False"):
        exportkit.load_from_saved_model(export_dir)
    loaded = exportkit.load_from_saved_model(export_dir, safe_mode=False)
    _assert_same_outputs(source, loaded, np.ones((2, 3), "float32"))


def test_subclassed_without_get_config_skips_json_with_warning_and_load_says_why(export_dir, caplog):
    source = models.no_config()
    with caplog.at_level("WARNING", logger="exportkit"):
        exportkit.export_saved_model(source, export_dir, input_signature=[tf.TensorSpec([None, 4], name="x")])
    assert "has no get_config()" in caplog.text
    assert not (export_dir / "assets" / "saved_model.json").exists()
    inputs = random_inputs({"x": (4,)}, 3)
    np.testing.assert_allclose(serve(export_dir, inputs)["output_0"], source(inputs["x"]).numpy(), atol=1e-6)
    with pytest.raises(LoadError, match=r"get_config\(\)"):
        exportkit.load_from_saved_model(export_dir)


def test_compiled_export_resumes_training_where_it_left_off(export_dir):
    source = models.functional_multi_io(compiled=True)
    rng = np.random.default_rng(0)
    x = {"image": rng.standard_normal((8, 5)).astype("float32"), "meta": rng.standard_normal((8, 3)).astype("float32")}
    y = {
        "score": rng.standard_normal((8, 1)).astype("float32"),
        "label": np.eye(4, dtype="float32")[rng.integers(0, 4, 8)],
    }
    source.fit(x, y, epochs=3, batch_size=4, verbose=0)  # Adam moments and iterations are non-trivial
    exportkit.export_saved_model(source, export_dir, overrides=NO_VERIFY)
    loaded = exportkit.load_from_saved_model(export_dir)
    assert int(loaded.optimizer.iterations.numpy()) == int(source.optimizer.iterations.numpy()) == 6
    for a, b in zip(source.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    source.train_on_batch(x, y)
    loaded.train_on_batch(x, y)
    for a, b in zip(source.weights, loaded.weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=1e-6)


def test_no_inferable_signature_is_a_value_error(export_dir):
    with pytest.raises(ValueError, match="cannot infer an input signature") as raised:
        exportkit.export_saved_model(models.subclassed(), export_dir)
    assert isinstance(raised.value, SignatureError)
    assert leftovers(export_dir) == []


def test_existing_directory_is_an_assertion_error(export_dir):
    export_dir.mkdir(parents=True)
    (export_dir / "keep.txt").write_text("x")
    with pytest.raises(AssertionError, match="overwrite=true") as raised:
        exportkit.export_saved_model(models.sequential(), export_dir)
    assert isinstance(raised.value, ExportDirExistsError)
    assert [p.name for p in export_dir.iterdir()] == ["keep.txt"]


def test_input_signature_list_dict_and_nested(tmp_path):
    source = models.functional_multi_io()
    image, meta = tf.TensorSpec([None, 5], tf.float32), tf.TensorSpec([None, 3], tf.float32)
    inputs = random_inputs({"image": (5,), "meta": (3,)}, 2)
    want = {k: v.numpy() for k, v in source(inputs).items()}
    for i, signature in enumerate([[image, meta], {"image": image, "meta": meta}, [[image, meta]]]):
        path = tmp_path / str(i)
        exportkit.export_saved_model(source, path, input_signature=signature, overrides=NO_VERIFY)
        got = serve(path, inputs)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], atol=1e-6)


def test_subclassed_compiled_with_signature_gets_train_and_eval(export_dir):
    source = models.subclassed(compiled=True)
    exportkit.export_saved_model(source, export_dir, input_signature=[tf.TensorSpec([None, 7], name="x")])
    train = tf.saved_model.load(str(graph_dir(export_dir, "train")), tags=["train"]).signatures["train"]
    x, target = tf.ones((4, 7)), tf.zeros((4, 3))
    losses = [float(train(x=x, y_target=target)["loss"]) for _ in range(4)]
    assert losses == sorted(losses, reverse=True) and losses[-1] < losses[0]


@pytest.mark.parametrize("compiled", [False, True])
def test_tfsm_layer_serves_the_endpoint(export_dir, compiled):
    """TFSMLayer loads without tags, which TensorFlow allows for one MetaGraphDef only: an
    uncompiled or serving_only export (a compiled model's full export, whose root holds serve
    alone too, is in tests/test_layout_consumers.py)."""
    source = models.sequential(compiled=compiled)
    exportkit.export_saved_model(source, export_dir, serving_only=compiled, overrides=NO_VERIFY)
    layer = keras.layers.TFSMLayer(str(export_dir), call_endpoint="serving_default")
    x = np.random.default_rng(1).standard_normal((3, 6)).astype("float32")
    np.testing.assert_allclose(layer(x)["out"], source(x).numpy(), atol=1e-6)


def _signature_inputs(export_dir):
    loaded = tf.saved_model.load(str(export_dir), tags=["serve"]).signatures["serving_default"]
    return {k: (v.shape.as_list(), v.dtype.name) for k, v in loaded.structured_input_signature[1].items()}


def test_called_subclassed_model_exports_without_input_signature(export_dir):
    """Before: "cannot infer an input signature". The signature comes from the shapes the model was
    first called with, batch dynamic, as Keras' model.export() infers it; verify runs as usual."""
    source = models.subclassed()
    source(np.ones((2, 7), "float32"))
    exportkit.export_saved_model(source, export_dir, verbose=False)
    assert _signature_inputs(export_dir) == {"x": ([None, 7], "float32")}
    inputs = random_inputs({"x": (7,)}, 5)
    want = source(inputs["x"])["y"].numpy()
    np.testing.assert_allclose(serve(export_dir, inputs)["y"], want, rtol=1e-6, atol=1e-6 * np.abs(want).max())


def test_subclassed_model_called_on_a_dict_and_compiled_after_fit(export_dir):
    source = models.dict_subclassed()
    rng = np.random.default_rng(0)
    x = {"a": rng.standard_normal((8, 3)).astype("float32"), "b": rng.standard_normal((8, 4)).astype("float32")}
    y = rng.standard_normal((8, 2)).astype("float32")
    source.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    source.fit(x, y, batch_size=4, verbose=0)  # built by fit, never given a signature
    exportkit.export_saved_model(source, export_dir, overrides=NO_VERIFY, verbose=False)
    assert _signature_inputs(export_dir) == {"a": ([None, 3], "float32"), "b": ([None, 4], "float32")}
    want = source(x).numpy()
    np.testing.assert_allclose(serve(export_dir, x)["output_0"], want, rtol=1e-6, atol=1e-6 * np.abs(want).max())
    evaluate = tf.saved_model.load(str(graph_dir(export_dir, "eval")), tags=["eval"]).signatures["eval"]
    got = float(evaluate(**x, output_0_target=y)["loss"])
    np.testing.assert_allclose(got, source.evaluate(x, y, verbose=0), rtol=1e-5)


def test_exports_from_two_threads_at_once_refuse_one_line_naming_no_other_process(tmp_path):
    """The second thread is refused while the first exports (held mid-way by a stage that waits for
    the test's word); it blames no override and names no process; the first then publishes."""
    import threading

    from exportkit.errors import ExportkitError

    holding, release, results = threading.Event(), threading.Event(), {}

    def first():
        model = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(2)])
        held = {"_target_": "tests.test_api.WaitFor", "after": "trace"}
        WaitFor.events = (holding, release)
        try:
            results["first"] = exportkit.export_saved_model(
                model, tmp_path / "a", verbose=False, overrides=[f"+pipeline.stages.wait={held}".replace("'", "")]
            )
        except BaseException as error:  # noqa: BLE001 - told below
            results["first"] = error

    thread = threading.Thread(target=first, name="exporter-1")
    thread.start()
    assert holding.wait(300), results
    model = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(2)])
    with pytest.raises(ExportkitError) as refused:
        exportkit.export_saved_model(model, tmp_path / "b", verbose=False)
    release.set()
    thread.join(300)
    message = str(refused.value)
    assert "another export is running in this process (thread 'exporter-1')" in message
    assert "process (pid" not in message and "overrides" not in message and "\n" not in message
    assert not (tmp_path / "b").exists()
    assert isinstance(results["first"], exportkit.pipeline.ExportResult), results["first"]
    x = random_inputs({"x": (4,)}, 3)["x"]
    (got,) = serve(tmp_path / "a", {"x": x}).values()
    assert got.shape == (3, 2)


class WaitFor:
    """A stage that says it is running, then waits for the test's word."""

    events = None

    def __call__(self, ctx):
        holding, release = WaitFor.events
        holding.set()
        release.wait(300)
        return ctx
