"""The default layout (``layout=serving``) is read by every tool that reads Keras' own export.

A compiled two-input two-output functional model and a compiled single-input Sequential are
exported with the defaults (``serve`` alone in ``saved_model.pb``, ``train``/``eval`` under
``graphs/``) and read by each consumer; every cell compares numbers with the source model,
with tolerances relative to the outputs' scale. Where a consumer cannot read exportkit's
export, the same consumer runs on Keras' ``model.export()`` of the same model and must fail
there too (a consumer limit, not ours).
"""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

import exportkit
from exportkit.artifact import files, manifest
from exportkit.errors import ConfigError
from tests import models
from tests.conftest import export, random_inputs

NO_VERIFY = ["pipeline.stages.verify=null"]
INPUTS = {"multi": {"image": (5,), "meta": (3,)}, "seq": {"x": (6,)}}
FACTORIES = {"multi": models.functional_multi_io, "seq": models.sequential}


class Case:
    """One source model, its exportkit export (default layout), Keras' export of it, a batch."""

    def __init__(self, name, root: Path):
        self.name = name
        self.model = FACTORIES[name](compiled=True)
        self.path = root / name / "exportkit"
        self.keras_path = root / name / "keras"
        exportkit.export_saved_model(self.model, self.path, verbose=False, overrides=NO_VERIFY)
        self.model.export(str(self.keras_path), verbose=False)
        self.inputs = random_inputs(INPUTS[name], 3, seed=4)
        self.want = self.outputs(self.model)

    def outputs(self, model):
        """The model's outputs on ``self.inputs``, by output name."""
        got = model(self.inputs if self.name == "multi" else self.inputs["x"])
        return {k: v.numpy() for k, v in got.items()} if isinstance(got, dict) else {"out": got.numpy()}

    def targets(self):
        rng = np.random.default_rng(9)
        if self.name == "seq":
            return {"out_target": rng.standard_normal((3, 2)).astype("float32")}
        return {
            "score_target": rng.standard_normal((3, 1)).astype("float32"),
            "label_target": np.eye(4, dtype="float32")[rng.integers(0, 4, 3)],
        }


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("consumers")
    return {name: Case(name, root) for name in FACTORIES}


def close(got, want, rtol=1e-5):
    """``got`` equals ``want`` within ``rtol`` of the largest value of ``want`` (its scale)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(float(np.abs(want).max()), 1e-30))


def close_all(got, want, rtol=1e-5):
    assert set(got) == set(want)
    for name in want:
        close(got[name], want[name], rtol)


def tags_by_file(export_dir):
    """Relative path of each SavedModel proto -> the tag-sets of its MetaGraphDefs."""
    found = {}
    for pb in sorted(Path(export_dir).rglob(files.SAVED_MODEL_PB)):
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString(pb.read_bytes())
        found[pb.relative_to(export_dir).as_posix()] = [list(m.meta_info_def.tags) for m in proto.meta_graphs]
    return found


def test_default_layout_serve_alone_and_one_shared_checkpoint(cases):
    path = cases["multi"].path
    assert tags_by_file(path) == {
        "saved_model.pb": [["serve"]],
        "graphs/train/saved_model.pb": [["train"]],
        "graphs/eval/saved_model.pb": [["eval"]],
    }
    for tag in ("train", "eval"):
        nested = path / "graphs" / tag
        assert files.graph_dir(path, tag) == nested
        for shared in ("variables", "assets"):
            link = nested / shared
            assert link.is_symlink() and os.readlink(link) == f"../../{shared}"
            assert link.resolve() == (path / shared).resolve()
    assert files.graph_dir(path, "serve") == path
    # one checkpoint on disk: no file is stored twice, and the manifest hashes each once
    on_disk = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    assert [p for p in on_disk if p.startswith("variables/")] == [
        "variables/variables.data-00000-of-00001",
        "variables/variables.index",
    ]
    recorded = manifest.read(path).to_dict()["files"]
    assert sorted(recorded) == [p for p in on_disk if p != manifest.MANIFEST.as_posix()]
    assert recorded == manifest.file_hashes(path)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_tf2_load_without_tags_and_with_serve(cases, name):
    case = cases[name]
    for loaded in (tf.saved_model.load(str(case.path)), tf.saved_model.load(str(case.path), tags=["serve"])):
        got = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in case.inputs.items()})
        close_all({k: v.numpy() for k, v in got.items()}, case.want)
        # the positional endpoint, as Keras' export writes it: a tensor, a list or a dict in
        positional = [case.inputs, list(case.inputs.values())] if name == "multi" else [case.inputs["x"], case.inputs]
        for given in positional:
            out = loaded.serve(given)
            close_all(
                {k: v.numpy() for k, v in out.items()} if isinstance(out, dict) else {"out": out.numpy()}, case.want
            )


@pytest.mark.parametrize("name", list(FACTORIES))
def test_tfsm_layer_default_endpoint(cases, name):
    case = cases[name]
    layer = keras.layers.TFSMLayer(str(case.path))  # call_endpoint="serve"
    if name == "multi":
        close_all({k: v.numpy() for k, v in layer(case.inputs).items()}, case.want)
        close_all({k: v.numpy() for k, v in layer([case.inputs["image"], case.inputs["meta"]]).items()}, case.want)
    else:
        close(layer(case.inputs["x"]), case.want["out"])
    # in a Keras model, as TFSMLayer is meant to be used
    inputs = {k: keras.Input(shape, name=k) for k, shape in INPUTS[name].items()}
    wrapper = keras.Model(inputs, layer(inputs if name == "multi" else inputs["x"]))
    got = wrapper(case.inputs)
    close_all(
        {k: np.asarray(v) for k, v in got.items()} if isinstance(got, dict) else {"out": np.asarray(got)}, case.want
    )
    # the layer's weights are the export's
    assert len(layer.weights) == len(case.model.weights)


def test_tfsm_layer_serving_default_single_input(cases):
    case = cases["seq"]
    layer = keras.layers.TFSMLayer(str(case.path), call_endpoint="serving_default")
    close(layer(case.inputs["x"])["out"], case.want["out"])


def test_tfsm_layer_serving_default_multi_input_is_a_consumer_limit(cases):
    """TFSMLayer passes its inputs as one positional argument; a SavedModel signature takes keyword
    arguments only, so no multi-input signature can be called this way: Keras' own export fails
    the same way. The positional endpoint (``serve``, the default) is what serves it."""
    case = cases["multi"]
    for path in (case.path, case.keras_path):
        layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
        with pytest.raises(TypeError, match="positional"):
            layer(case.inputs)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_tflite_converter_and_interpreter(cases, name):
    case = cases[name]
    flatbuffer = tf.lite.TFLiteConverter.from_saved_model(str(case.path)).convert()
    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    runner = interpreter.get_signature_runner("serving_default")
    close_all(runner(**case.inputs), case.want, rtol=1e-4)


# the multi-input model runs in `make test-slow`; the sequential one in `make test`
@pytest.mark.parametrize("name", [pytest.param("multi", marks=pytest.mark.slow), "seq"])
def test_tf2onnx_and_onnxruntime(cases, name, tmp_path):
    import onnxruntime

    case = cases[name]
    onnx_file = tmp_path / "model.onnx"
    done = subprocess.run(
        [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(case.path), "--output", str(onnx_file)],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert sorted(i.name for i in session.get_inputs()) == sorted(case.inputs)
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(names, case.inputs)))
    close_all(got, case.want, rtol=1e-4)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_tf1_session_loader_trains_with_the_train_graph(cases, name):
    """The ``train`` graph, from ``graphs/train`` (its own SavedModel directory), in a TF1 session:
    the first step's loss and predictions are the source model's on that batch, and the loss
    falls with every step."""
    case = cases[name]
    targets = case.targets()
    y = {k[: -len("_target")]: v for k, v in targets.items()}
    want_loss = case.model.evaluate(
        case.inputs if name == "multi" else case.inputs["x"],
        y if name == "multi" else y["out"],
        verbose=0,
        return_dict=True,
    )["loss"]
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.load(sess, ["train"], str(files.graph_dir(case.path, "train")))
        sig = meta.signature_def["train"]
        feed = {sig.inputs[k].name: v for k, v in {**case.inputs, **targets}.items()}
        fetch = {k: t.name for k, t in sig.outputs.items()}
        steps = [sess.run(fetch, feed) for _ in range(3)]
    close(steps[0]["loss"], want_loss)
    close_all({k[len("predictions/") :]: v for k, v in steps[0].items() if k.startswith("predictions/")}, case.want)
    losses = [float(s["loss"]) for s in steps]
    assert losses[2] < losses[1] < losses[0]


@pytest.mark.parametrize("layout", ["serving", "tf1"])
def test_load_from_saved_model_reads_both_layouts(cases, tmp_path, layout):
    case = cases["multi"]
    path = case.path if layout == "serving" else tmp_path / "tf1"
    if layout == "tf1":
        exportkit.export_saved_model(case.model, path, verbose=False, overrides=[*NO_VERIFY, "layout=tf1"])
        assert tags_by_file(path) == {"saved_model.pb": [["serve"], ["train"], ["eval"]]}
        assert files.graph_dir(path, "train") == path
    loaded = exportkit.load_from_saved_model(path)
    close_all({k: v.numpy() for k, v in loaded(case.inputs).items()}, case.want)
    assert type(loaded.optimizer).__name__ == type(case.model.optimizer).__name__
    for mine, theirs in zip(loaded.optimizer.variables, case.model.optimizer.variables):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


def test_layout_tf1_trains_from_the_root_and_tf2_needs_its_tags(tmp_path):
    path = tmp_path / "tf1"
    model = models.sequential(compiled=True)
    exportkit.export_saved_model(model, path, verbose=False, overrides=[*NO_VERIFY, "layout=tf1"])
    assert not (path / files.GRAPHS).exists()
    with pytest.raises(ValueError, match="tags"):  # TF 1.14's layout: the object-graph loader refuses it
        tf.saved_model.load(str(path))
    x = random_inputs({"x": (6,)}, 2)["x"]
    close(tf.saved_model.load(str(path), tags=["serve"]).signatures["serving_default"](x=x)["out"], model(x).numpy())


def test_unknown_layout_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"layout='flat'.*layout=serving.*layout=tf1"):
        export(
            "model=keras", "model.build._target_=tests.models.sequential", f"export_dir={tmp_path / 'm'}", "layout=flat"
        )


def test_layout_experiments_compose():
    from tests.conftest import compose

    assert compose("export_dir=/tmp/m").layout == "serving"
    assert compose("+experiment=tf1_layout", "export_dir=/tmp/m").layout == "tf1"
    assert compose("+experiment=serving_layout", "layout=tf1", "export_dir=/tmp/m").layout == "tf1"
    assert compose("+experiment=[tf1_layout,serving_layout]", "export_dir=/tmp/m").layout == "serving"
