"""Keras 3 on the JAX backend (``exportkit.keras.jax_backend``): the serve graph through jax2tf.

The backend is chosen when Keras is imported, so the exports run in fresh processes with
``KERAS_BACKEND=jax`` (the CLI on the built-in example; one Python script exporting a functional
and a subclassed model through the Python API, and Keras' own ``model.export()`` of the
functional one); this process (the TensorFlow backend) then reads each export back as its
consumers do and compares it with the source model's outputs, which the script saved.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT

RTOL = (
    1e-4  # (1e-3 for TFLite, which fuses float ops) relative to the outputs' scale: max|got - want| <= RTOL * max|want|
)
JAX_ENV = {"KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}

SCRIPT = r"""
import json, sys
from pathlib import Path

import numpy as np
import keras

import exportkit
from exportkit.errors import ModelSourceError

assert keras.backend.backend() == "jax", keras.backend.backend()
out = Path(sys.argv[1])
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)

# functional: two inputs, two named outputs, BatchNorm's moving statistics (non-trainable), Dropout
a, b = keras.Input((6,), name="a"), keras.Input((3,), name="b")
h = keras.layers.Concatenate()([keras.layers.Dense(8, activation="relu", name="d1")(a), b])
h = keras.layers.BatchNormalization(name="bn")(h)
h = keras.layers.Dropout(0.5)(h)
functional = keras.Model(
    {"a": a, "b": b},
    {"score": keras.layers.Dense(1, name="score")(h), "probs": keras.layers.Dense(4, activation="softmax", name="probs")(h)},
)
bn = functional.get_layer("bn")
bn.moving_mean.assign(rng.standard_normal(11).astype("float32"))
bn.moving_variance.assign(rng.uniform(0.5, 2.0, 11).astype("float32"))


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(5, activation="tanh")
        self.head = keras.layers.Dense(2)

    def call(self, x):
        return self.head(self.hidden(x)) * 3.0


subclassed = Subclassed()
x = rng.standard_normal((4, 7)).astype("float32")
subclassed(x)

inputs = {"a": rng.standard_normal((5, 6)).astype("float32"), "b": rng.standard_normal((5, 3)).astype("float32")}
want = {k: np.asarray(v) for k, v in functional(inputs, training=False).items()}
np.savez(out / "functional.npz", **{f"in_{k}": v for k, v in inputs.items()}, **{f"out_{k}": v for k, v in want.items()})
np.savez(out / "subclassed.npz", in_x=x, out_output_0=np.asarray(subclassed(x)))

results = {}
for name, model in [("functional", functional), ("subclassed", subclassed)]:
    result = exportkit.export_saved_model(model, out / name, verbose=False)
    results[name] = result.manifest["verification"]["verified"]
functional.export(str(out / "keras_own"), verbose=False)

compiled = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
compiled.compile(optimizer="adam", loss="mse")
try:
    exportkit.export_saved_model(compiled, out / "compiled", verbose=False)
    results["compiled_error"] = None
except ModelSourceError as e:
    results["compiled_error"] = str(e)
results["compiled_serving_only"] = exportkit.export_saved_model(
    compiled, out / "compiled_serving", serving_only=True, verbose=False
).manifest["verification"]["verified"]
stateful = keras.Sequential([keras.Input((5, 3), batch_size=2), keras.layers.LSTM(4, stateful=True, name="lstm")])
try:
    exportkit.export_saved_model(stateful, out / "stateful", verbose=False)
    results["stateful_error"] = None
except ModelSourceError as e:
    results["stateful_error"] = str(e)
results["stateful_written"] = (out / "stateful").exists()
(out / "results.json").write_text(json.dumps(results))
"""


@pytest.fixture(scope="module")
def jax_exports(tmp_path_factory):
    """Under KERAS_BACKEND=jax, side by side: the Python API script, the CLI on the example, and the
    CLI on the example compiled (refused)."""
    out = tmp_path_factory.mktemp("keras_jax")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "examples")]), **JAX_ENV)
    env.pop("HYDRA_FULL_ERROR", None)
    cli = [sys.executable, "-m", "exportkit"]
    commands = {
        "script": [sys.executable, "-c", SCRIPT, str(out)],
        "cli": [*cli, f"export_dir={out / 'cli'}"],
        "refused": [
            *cli,
            "compile.optimizer=adam",
            "compile.loss=categorical_crossentropy",
            f"export_dir={out / 'refused'}",
        ],
    }
    running = {
        name: subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, command in commands.items()
    }
    done = {}
    for name, process in running.items():
        stdout, stderr = process.communicate(timeout=600)
        done[name] = subprocess.CompletedProcess(commands[name], process.returncode, stdout, stderr)
    script = done["script"]
    assert script.returncode == 0, f"the JAX-backend script failed:\n{script.stdout[-3000:]}\n{script.stderr[-5000:]}"
    return out, json.loads((out / "results.json").read_text()), done["cli"], done["refused"]


def cases(out: Path, name: str):
    data = np.load(out / f"{name}.npz")
    inputs = {k[3:]: data[k] for k in data.files if k.startswith("in_")}
    want = {k[4:]: data[k] for k in data.files if k.startswith("out_")}
    return inputs, want


def assert_matches(got, want, rtol=RTOL):
    assert set(got) == set(want), f"outputs {sorted(got)} != {sorted(want)}"
    for k, w in want.items():
        g = np.asarray(got[k])
        assert g.shape == w.shape, f"{k}: shape {g.shape} != {w.shape}"
        err, scale = float(np.max(np.abs(g.astype("float64") - w))), float(np.max(np.abs(w)))
        assert err <= rtol * max(scale, 1e-30), f"{k}: max abs error {err:.3g} > {rtol} x output scale {scale:.3g}"


def test_cli_exports_the_example_on_jax_verified(jax_exports):
    out, _, cli, _ = jax_exports
    assert cli.returncode == 0, cli.stderr[-3000:]
    manifest = json.loads((out / "cli" / "assets.extra" / "manifest.json").read_text())
    assert manifest["verification"]["verified"] is True and manifest["verification"]["cases"] >= 2
    assert manifest["conversion"]["platforms"] == ["cpu"] and manifest["conversion"]["with_gradient"] is False
    import tensorflow as tf

    names = sorted(k for k, _ in tf.train.list_variables(str(out / "cli" / "variables" / "variables")))
    assert [n for n in names if n.startswith("model_variables/")] == [
        f"model_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE" for i in range(4)
    ]
    loaded = tf.saved_model.load(str(out / "cli"))
    assert sorted(v.name for v in loaded.model_variables) == [
        "hidden/bias:0",
        "hidden/kernel:0",
        "probabilities/bias:0",
        "probabilities/kernel:0",
    ]


def test_compiled_model_on_jax_is_one_line_unless_serving_only(jax_exports):
    out, results, _, refused = jax_exports
    assert refused.returncode != 0
    assert "Traceback" not in refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("exportkit: error:")]
    assert len(errors) == 1, refused.stderr[-3000:]
    assert "TensorFlow backend" in errors[0] and "serving_only=true" in errors[0]
    assert not (out / "refused").exists()
    assert results["compiled_error"] and "serving_only=true" in results["compiled_error"]
    assert results["compiled_serving_only"] is True


@pytest.mark.parametrize("name", ["functional", "subclassed"])
def test_python_api_export_reads_back_in_every_loader(jax_exports, name):
    import keras
    import tensorflow as tf

    out, results, _, _ = jax_exports
    assert results[name] is True  # verified in the fresh process, KERAS_BACKEND=jax inherited
    path = str(out / name)
    inputs, want = cases(out, name)

    signature = tf.saved_model.load(path).signatures["serving_default"]
    assert_matches({k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in inputs.items()}).items()}, want)

    served = keras.layers.TFSMLayer(path)(inputs if len(inputs) > 1 else next(iter(inputs.values())))
    assert_matches(served if isinstance(served, dict) else {"output_0": served}, want)
    if len(inputs) == 1:  # a signature takes keyword arguments: TFSMLayer passes it one tensor only
        by_signature = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
        assert_matches({k: np.asarray(v) for k, v in by_signature(next(iter(inputs.values()))).items()}, want)

    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
        meta_graph = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
        sig = meta_graph.signature_def["serving_default"]
        feed = {sig.inputs[k].name: v for k, v in inputs.items()}
        assert_matches(sess.run({k: t.name for k, t in sig.outputs.items()}, feed_dict=feed), want)

    # TFLite converts the XlaCallModule's StableHLO (tf2onnx cannot, for Keras' own JAX export too)
    content = tf.lite.TFLiteConverter.from_saved_model(path, signature_keys=["serving_default"]).convert()
    runner = tf.lite.Interpreter(model_content=content).get_signature_runner("serving_default")
    got = runner(**inputs)
    assert_matches(got if len(want) > 1 else {"output_0": next(iter(got.values()))}, want, rtol=1e-3)


def test_functional_export_matches_keras_own_and_reloads_as_keras(jax_exports):
    import tensorflow as tf

    import exportkit

    out, _, _, _ = jax_exports
    inputs, want = cases(out, "functional")
    loaded = tf.saved_model.load(str(out / "keras_own"))  # held: its functions need its variables
    own = loaded.serve({k: tf.constant(v) for k, v in inputs.items()})
    assert_matches({k: v.numpy() for k, v in own.items()}, want)
    # rebuilt on this process's TensorFlow backend from assets/saved_model.json and the checkpoint
    model = exportkit.load_from_saved_model(str(out / "functional"))
    assert_matches({k: np.asarray(v) for k, v in model(inputs, training=False).items()}, want)


def test_torch_backend_is_refused_in_one_line(monkeypatch):
    from omegaconf import OmegaConf

    from exportkit.errors import ModelSourceError
    from exportkit.keras import jax_backend

    monkeypatch.setattr(jax_backend, "backend", lambda: "torch")
    with pytest.raises(ModelSourceError, match="torch backend.*KERAS_BACKEND=tensorflow") as info:
        jax_backend.check(object(), OmegaConf.create({"serving_only": False}))
    assert "\n" not in str(info.value)


def test_a_stateful_rnn_on_jax_is_one_line_naming_the_layer(jax_exports):
    """Its state would be frozen into the jax2tf graph: refused, nothing written."""
    _, results, _, _ = jax_exports
    assert results["stateful_error"] is not None and not results["stateful_written"]
    assert results["stateful_error"].startswith("layer 'lstm' (LSTM) is stateful")
    assert "KERAS_BACKEND=tensorflow" in results["stateful_error"] and "\n" not in results["stateful_error"]
