"""TensorFlow resources beyond variables: lookup tables and the layers' own state.

Every model here holds state that plain variables do not carry: a lookup table (``TextVectorization``,
``StringLookup``, ``IntegerLookup``, a custom layer with a ``tf.lookup.StaticHashTable``), state
finalized after loading (an adapted ``Normalization``), configuration-borne state
(``Discretization`` boundaries, ``Hashing``), or BatchNorm statistics. Each is exported through
the Python API (verified in a fresh process) and the CLI's in-process path, then read back by the
TF2 loader, the TF1 session loader (tables initialized by the loader) and
``exportkit.load_from_saved_model``, and compared with the source model.

The factories are importable ``_target_``s (``tests.test_resources.text_vectorization``).
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import exportkit
from exportkit.artifact.files import graph_dir
from exportkit.errors import ModelSourceError
from tests.conftest import export, serve

TEXTS = ["the cat sat on the mat", "a dog ran", "the dog sat down", "cats and dogs"]
COLORS = ["red", "blue", "blue", "green", "green", "green"]


@keras.saving.register_keras_serializable(package="exportkit_tests")
class TableLayer(keras.layers.Layer):
    """A custom layer holding a ``tf.lookup.StaticHashTable`` (token -> score)."""

    def __init__(self, keys=("a", "b", "c"), values=(1.5, -2.0, 4.0), **kwargs):
        super().__init__(**kwargs)
        self.keys, self.values = list(keys), [float(v) for v in values]
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(self.keys), tf.constant(self.values, tf.float32)),
            default_value=-1.0,
        )

    def call(self, x):
        return self.table.lookup(x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, x):
        return keras.KerasTensor(x.shape, dtype="float32")

    def get_config(self):
        return {**super().get_config(), "keys": self.keys, "values": self.values}


class RawTable(keras.layers.Layer):
    """A table created by a raw op: no trackable object owns its handle, so it cannot be exported."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.handle = tf.raw_ops.HashTableV2(
            key_dtype=tf.string, value_dtype=tf.float32, shared_name="exportkit_test_raw_table"
        )
        tf.raw_ops.LookupTableImportV2(table_handle=self.handle, keys=tf.constant(["a"]), values=tf.constant([1.0]))

    def call(self, x):
        return tf.raw_ops.LookupTableFindV2(table_handle=self.handle, keys=x, default_value=tf.constant(0.0))

    def compute_output_spec(self, x):
        return keras.KerasTensor(x.shape, dtype="float32")


class RawVariable(keras.layers.Layer):
    """A ``tf.Variable`` that Keras does not track as a weight: not among ``model.variables``."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.offset = tf.Variable(2.0)

    def call(self, x):
        return x + self.offset

    def compute_output_spec(self, x):
        return keras.KerasTensor(x.shape, dtype="float32")


def _head(x, vocabulary: int, name="out"):
    x = keras.layers.Embedding(vocabulary, 3, name="embedding")(x)
    x = keras.layers.Flatten()(x)
    return keras.layers.Dense(2, name=name)(x)


def text_vectorization(compiled: bool = False):
    vectorize = keras.layers.TextVectorization(max_tokens=20, output_sequence_length=5, name="vectorize")
    vectorize.adapt(TEXTS)
    text = keras.Input((), dtype="string", name="text")
    model = keras.Model(text, _head(vectorize(text), 20), name="text_classifier")
    if compiled:
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", metrics=["mae"])
    return model


def string_lookup():
    lookup = keras.layers.StringLookup(name="lookup")
    lookup.adapt(COLORS)
    color = keras.Input((1,), dtype="string", name="color")
    return keras.Model(color, _head(lookup(color), lookup.vocabulary_size()), name="colors")


def integer_lookup():
    lookup = keras.layers.IntegerLookup(name="lookup")
    lookup.adapt(np.array([3, 7, 7, 42, 42, 42], "int64"))
    code = keras.Input((1,), dtype="int64", name="code")
    return keras.Model(code, _head(lookup(code), lookup.vocabulary_size()), name="codes")


def hashing():
    word = keras.Input((1,), dtype="string", name="word")
    hashed = keras.layers.Hashing(num_bins=8, salt=[7, 11], name="hash")(word)
    return keras.Model(word, _head(hashed, 8), name="hashed")


def discretization():
    bins = keras.layers.Discretization(num_bins=4, name="bins")
    bins.adapt(np.arange(40, dtype="float32").reshape(-1, 2))
    x = keras.Input((2,), name="x")
    return keras.Model(x, _head(bins(x), 4), name="binned")


def static_table():
    token = keras.Input((), dtype="string", name="token")
    score = TableLayer(name="scores")(token)
    scaled = keras.layers.Rescaling(3.0, name="out")(score)
    return keras.Model(token, scaled, name="table_model")


def features():
    """Dict input: StringLookup + IntegerLookup + adapted Normalization, one output."""
    city_lookup = keras.layers.StringLookup(output_mode="one_hot", name="city_lookup")
    city_lookup.adapt(["paris", "rome", "rome", "oslo"])
    code_lookup = keras.layers.IntegerLookup(output_mode="one_hot", name="code_lookup")
    code_lookup.adapt(np.array([10, 20, 20, 30], "int64"))
    normalize = keras.layers.Normalization(name="normalize")
    normalize.adapt(np.array([[10.0, -3.0], [14.0, -1.0], [30.0, 5.0]], "float32"))
    city = keras.Input((1,), dtype="string", name="city")
    code = keras.Input((1,), dtype="int64", name="code")
    amount = keras.Input((2,), name="amount")
    joined = keras.layers.Concatenate()([city_lookup(city), code_lookup(code), normalize(amount)])
    out = keras.layers.Dense(2, name="out")(joined)
    return keras.Model({"city": city, "code": code, "amount": amount}, out, name="features")


def batchnorm():
    x = keras.Input((3,), name="x")
    hidden = keras.layers.Dense(4, name="hidden")(x)
    norm = keras.layers.BatchNormalization(name="bn")
    model = keras.Model(x, keras.layers.Dense(2, name="out")(norm(hidden)), name="bn_model")
    norm.moving_mean.assign([0.5, -1.0, 2.0, 0.25])  # statistics far from the 0 / 1 a fresh layer has
    norm.moving_variance.assign([4.0, 0.5, 9.0, 2.0])
    return model


# case -> (factory, inputs for the source and every reader, custom objects)
CASES = {
    "text_vectorization": (
        text_vectorization,
        {"text": np.array([b"the cat sat", b"a dog ran", b"mat", b"zebra"])},
        {},
    ),
    "string_lookup": (string_lookup, {"color": np.array([[b"red"], [b"blue"], [b"green"], [b"purple"]])}, {}),
    "integer_lookup": (integer_lookup, {"code": np.array([[3], [7], [42], [99]], "int64")}, {}),
    "hashing": (hashing, {"word": np.array([[b"red"], [b"blue"], [b"green"], [b"purple"]])}, {}),
    "discretization": (discretization, {"x": np.array([[0.5, 12.0], [20.0, 39.0], [-4.0, 25.0]], "float32")}, {}),
    "static_table": (static_table, {"token": np.array([b"a", b"b", b"c", b"zz"])}, {"TableLayer": TableLayer}),
    "features": (
        features,
        {
            "city": np.array([[b"paris"], [b"rome"], [b"oslo"], [b"lima"]]),
            "code": np.array([[10], [20], [30], [99]], "int64"),
            "amount": np.array([[10.0, -3.0], [14.0, -1.0], [30.0, 5.0], [0.0, 0.0]], "float32"),
        },
        {},
    ),
    "batchnorm": (batchnorm, {"x": np.array([[0.5, 1.0, -2.0], [3.0, 0.0, 1.0]], "float32")}, {}),
}


def predict(model, inputs):
    from exportkit.keras.calls import model_inputs, name_outputs

    outputs = name_outputs(model, model(model_inputs({k: tf.constant(v) for k, v in inputs.items()}), training=False))
    return {k: keras.ops.convert_to_numpy(v) for k, v in outputs.items()}


def tf1_serve(export_dir, inputs, tag="serve", key="serving_default"):
    """The signature run by the TF1 loader in a Session: tables are initialized by its init op."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.load(sess, [tag], str(graph_dir(export_dir, tag)))
        sig = meta.signature_def[key]
        names = sorted(sig.outputs)
        values = sess.run([sig.outputs[n].name for n in names], {sig.inputs[k].name: v for k, v in inputs.items()})
    return dict(zip(names, values))


def assert_matches(got, want, what):
    assert set(got) == set(want), what
    for name, w in want.items():
        g = np.asarray(got[name])
        assert g.shape == w.shape, f"{what}/{name}: shape {g.shape} != {w.shape}"
        scale = max(float(np.abs(w).max()), 1e-30)  # tolerance relative to the outputs' scale
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * scale, err_msg=f"{what}/{name}")


def assert_readers_match(export_dir, inputs, want, custom_objects):
    assert_matches(serve(export_dir, inputs), want, "TF2 loader")
    assert_matches(tf1_serve(export_dir, inputs), want, "TF1 session loader")
    loaded = exportkit.load_from_saved_model(export_dir, custom_objects=custom_objects)
    assert_matches(predict(loaded, inputs), want, "load_from_saved_model")


@pytest.mark.parametrize("case", list(CASES))
def test_round_trips_through_every_reader(tmp_path, case):
    factory, inputs, custom_objects = CASES[case]

    source = factory()
    want = predict(source, inputs)
    rows = next(iter(want.values()))
    assert len({r.tobytes() for r in rows}) > 1, "inputs must tell the state apart"
    result = exportkit.export_saved_model(source, tmp_path / "api", custom_objects=custom_objects, verbose=False)
    verified = result.manifest["verify"]["serving_default"]  # the fresh-process reload passed
    assert verified and all(o["ok"] for case_ in verified.values() for o in case_.values())
    assert_readers_match(tmp_path / "api", inputs, want, custom_objects)

    overrides = [f"+custom_objects.{n}=tests.test_resources.{n}" for n in custom_objects]
    cli = export(
        "model=keras",
        f"model.build._target_=tests.test_resources.{case}",
        *overrides,
        f"export_dir={tmp_path / 'cli'}",
        "pipeline.stages.verify=null",
    )
    assert_readers_match(tmp_path / "cli", inputs, predict(cli.context.model.instance, inputs), custom_objects)


def test_the_state_is_what_keras_restores(tmp_path):
    """What the loaded model holds: the adapted statistics, vocabularies, boundaries, BatchNorm's
    moving statistics, not the fresh layer's (mean 0 / variance 1, empty vocabulary)."""
    source = features()
    exportkit.export_saved_model(source, tmp_path / "m", overrides=["pipeline.stages.verify=null"], verbose=False)
    loaded = exportkit.load_from_saved_model(tmp_path / "m")
    for name in ("city_lookup", "code_lookup"):
        assert loaded.get_layer(name).get_vocabulary() == source.get_layer(name).get_vocabulary()
    for attr in ("mean", "variance"):
        got, want = (keras.ops.convert_to_numpy(getattr(m.get_layer("normalize"), attr)) for m in (loaded, source))
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert not np.allclose(keras.ops.convert_to_numpy(loaded.get_layer("normalize").mean), 0.0)

    bins = discretization()
    exportkit.export_saved_model(bins, tmp_path / "bins", overrides=["pipeline.stages.verify=null"], verbose=False)
    assert (
        exportkit.load_from_saved_model(tmp_path / "bins").get_layer("bins").bin_boundaries
        == bins.get_layer("bins").bin_boundaries
    )

    bn = batchnorm()
    exportkit.export_saved_model(bn, tmp_path / "bn", overrides=["pipeline.stages.verify=null"], verbose=False)
    restored = exportkit.load_from_saved_model(tmp_path / "bn").get_layer("bn")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored.moving_mean), [0.5, -1.0, 2.0, 0.25])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored.moving_variance), [4.0, 0.5, 9.0, 2.0])


def test_tables_in_the_train_and_eval_graphs(tmp_path):
    """A compiled text model: every graph (serve, train, eval) carries and initializes the table
    in the TF1 loader, and computes the source model's predictions."""
    model = text_vectorization(compiled=True)
    exportkit.export_saved_model(model, tmp_path / "m", overrides=["pipeline.stages.verify=null"], verbose=False)
    inputs = CASES["text_vectorization"][1]
    want = predict(model, inputs)["out"]
    feed = dict(inputs, out_target=np.zeros_like(want))
    for tag in ("train", "eval"):
        got = tf1_serve(tmp_path / "m", feed, tag=tag, key=tag)
        np.testing.assert_allclose(got["predictions/out"], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert_matches(tf1_serve(tmp_path / "m", inputs), {"out": want}, "serve")


def test_vocabulary_file_is_an_asset(tmp_path):
    """A lookup layer built from a vocabulary file: the file travels with the export."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("red\nblue\ngreen\n")
    lookup = keras.layers.StringLookup(vocabulary=str(vocab), name="lookup")
    color = keras.Input((1,), dtype="string", name="color")
    model = keras.Model(color, _head(lookup(color), 4), name="file_vocab")
    inputs = CASES["string_lookup"][1]
    want = predict(model, inputs)
    exportkit.export_saved_model(model, tmp_path / "m", verbose=False)
    vocab.unlink()  # the export must not depend on the original file
    assert (tmp_path / "m" / "assets" / "vocab.txt").read_text() == "red\nblue\ngreen\n"
    assert_matches(serve(tmp_path / "m", inputs), want, "TF2 loader")
    assert_matches(tf1_serve(tmp_path / "m", inputs), want, "TF1 session loader")


@pytest.mark.parametrize(
    "layer, attribute, dtype", [(RawTable, "handle", "string"), (RawVariable, "offset", "float32")]
)
def test_an_unexportable_resource_names_its_layer(tmp_path, layer, attribute, dtype):
    token = keras.Input((), dtype=dtype, name="token")
    model = keras.Model(token, layer(name="holder")(token))
    with pytest.raises(ModelSourceError, match=f"layer 'holder' \\({layer.__name__}\\), attribute {attribute}"):
        exportkit.export_saved_model(model, tmp_path / "m", verbose=False)
    assert not (tmp_path / "m").exists()


def test_string_signature_from_the_config(tmp_path):
    """``dtype: string`` in the config's signatures; verify draws the strings from the vocabulary."""
    from exportkit.verification.cases import make_inputs

    result = export(
        "model=keras",
        "model.build._target_=tests.test_resources.string_lookup",
        f"export_dir={tmp_path}/m",
        "+signatures.serving_default={inputs: {color: {shape: [null, 1], dtype: string}}}",
    )
    assert result.context.model.signatures["serving_default"]["color"].dtype == tf.string
    assert result.context.model.input_hints["color"]["values"] == ["green", "blue", "red"]
    drawn = make_inputs(result.context.model.signatures, [5], 0, hints=result.context.model.input_hints)
    words = {w for v in drawn[("serving_default", "5")]["color"].ravel() for w in v.decode().split()}
    assert words <= {"green", "blue", "red"}
    verified = json.loads((tmp_path / "m" / "assets.extra" / "manifest.json").read_text())["verify"]
    assert set(verified["serving_default"]) == {"1", "3"}
    assert all(o["ok"] for case in verified["serving_default"].values() for o in case.values())
