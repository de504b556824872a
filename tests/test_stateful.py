"""Stateful models: a ``stateful=True`` RNN's states (outside Keras' tracking) are exported as
Keras' own ``model.export()`` exports them, the state carried across calls by every loader, and a
variable held outside Keras' tracking otherwise is named where it lives."""

import types

import keras
import numpy as np
import pytest
import tensorflow as tf

import exportkit
from exportkit.errors import ModelSourceError, SignatureError

NO_VERIFY = ["pipeline.stages.verify=null"]
RNG = np.random.default_rng(0)
X1, X2 = (RNG.normal(size=(2, 5, 3)).astype("float32") for _ in range(2))


def stateful_model(time=5):
    inputs = keras.Input(batch_size=2, shape=(time, 3), name="x")
    outputs = keras.layers.Dense(4, name="out")(keras.layers.LSTM(8, stateful=True, name="lstm")(inputs))
    return keras.Model(inputs, outputs)


def states(model):
    return [v.numpy().copy() for v in model.get_layer("lstm").states]


def set_states(model, values):
    for variable, value in zip(model.get_layer("lstm").states, values):
        variable.assign(value)


def two_calls(call):
    return [np.asarray(call(x)) for x in (X1, X2)]


def assert_calls(got, want):
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(1)
    model = stateful_model()
    model(RNG.normal(size=(2, 5, 3)).astype("float32"))  # a state that is not zeros: exported as it is
    initial = states(model)
    export_dir = tmp_path_factory.mktemp("stateful") / "model"
    result = exportkit.export_saved_model(model, export_dir, verbose=False)
    after = states(model)
    want = two_calls(lambda x: model(x, training=False))  # from the exported state, carried
    set_states(model, initial)
    return types.SimpleNamespace(model=model, dir=export_dir, result=result, initial=initial, after=after, want=want)


def test_export_is_verified_and_leaves_the_source_state_alone(exported):
    assert exported.result.manifest["verification"]["verified"]
    for before, after in zip(exported.initial, exported.after):
        np.testing.assert_array_equal(before, after)
    assert np.abs(exported.initial[0]).max() > 0  # the exported state is the model's, not zeros
    keys = {k.split("/")[0] for k, _ in tf.train.list_variables(str(exported.dir / "variables" / "variables"))}
    assert {"model_variables", "state_variables"} <= keys
    contract = exported.result.manifest["contract"]["serve"]["serving_default"]
    assert contract["inputs"]["x"]["shape"][0] == 2  # the state's batch, fixed


def test_tf2_loader_carries_the_state_like_the_source(exported):
    loaded = tf.saved_model.load(str(exported.dir))
    assert_calls(two_calls(lambda x: loaded.signatures["serving_default"](x=tf.constant(x))["out"]), exported.want)
    again = tf.saved_model.load(str(exported.dir))  # a reload starts from the exported state
    assert_calls(two_calls(again.serve), exported.want)


def test_tf1_session_loader_carries_the_state_like_the_source(exported):
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.load(sess, ["serve"], str(exported.dir))
        sig = meta.signature_def["serving_default"]
        got = two_calls(lambda x: sess.run(sig.outputs["out"].name, {sig.inputs["x"].name: x}))
    assert_calls(got, exported.want)


def test_same_as_keras_own_export(exported, tmp_path):
    model = exported.model
    set_states(model, exported.initial)
    model.export(str(tmp_path / "keras"), verbose=False)
    keras_export = tf.saved_model.load(str(tmp_path / "keras"))
    assert_calls(two_calls(keras_export.serve), exported.want)


def test_load_from_saved_model_restores_the_state(exported):
    loaded = exportkit.load_from_saved_model(exported.dir)
    for got, want in zip(states(loaded), exported.initial):
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert_calls(two_calls(lambda x: loaded(x, training=False)), exported.want)


def test_verify_compares_the_state_carried_across_cases(tmp_path):
    # a dynamic time axis gives two cases (x_1=2, x_1=5), run in order on one loaded export; latency
    # runs between cases would advance the export's state (see the report: the worker's part)
    model = stateful_model(time=None)
    result = exportkit.export_saved_model(
        model, tmp_path / "m", verbose=False, overrides=["verify.latency.enabled=false"]
    )
    assert result.manifest["verification"]["cases"] == 2


def test_compiled_stateful_model_verifies_its_train_and_eval_steps(tmp_path):
    model = stateful_model()
    model.compile(optimizer="adam", loss="mse")
    initial = states(model)
    result = exportkit.export_saved_model(model, tmp_path / "m", verbose=False)
    assert result.manifest["verification"]["cases"] == 3  # serve, train, eval: each from the exported state
    for before, after in zip(initial, states(model)):
        np.testing.assert_array_equal(before, after)


def test_a_signature_with_another_batch_is_refused(tmp_path):
    with pytest.raises(SignatureError, match=r"layer 'lstm' \(LSTM, stateful=True\) keeps its state for a batch of 2"):
        exportkit.export_saved_model(
            stateful_model(),
            tmp_path / "m",
            verbose=False,
            input_signature=[tf.TensorSpec([3, 5, 3], tf.float32, name="x")],
            overrides=NO_VERIFY,
        )


class Boxed(keras.layers.Layer):
    """A keras.Variable inside a plain object: outside Keras' tracking, not among model.variables."""

    def build(self, shape):
        self.box = types.SimpleNamespace(scale=keras.Variable(2.0, name="scale"))

    def call(self, x):
        return x * self.box.scale


def test_variable_outside_tracking_is_named_where_it_lives(tmp_path):
    inputs = keras.Input((3,), name="x")
    model = keras.Model(inputs, Boxed(name="holder")(inputs))
    assert len(model.variables) == 0
    with pytest.raises(ModelSourceError) as error:
        exportkit.export_saved_model(model, tmp_path / "m", verbose=False, overrides=NO_VERIFY)
    message = str(error.value)
    assert "held by layer 'holder' (Boxed), attribute box.scale, outside Keras' tracking" in message
    assert "no layer" not in message
