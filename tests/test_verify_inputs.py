"""verify on meaningful inputs: real examples (``verify.inputs``), generated values the model
accepts (Embedding ids, lookup vocabularies, masks), every dynamic dimension probed, per-output
tolerances and top-1, the train/eval graphs, and the kept cases that re-verify an export later.

Exports are round trips through the written SavedModel, compared with the source model; the
unit tests of input generation and example loading need no export.
"""

import json

import keras
import numpy as np
import pytest

from exportkit.errors import ConfigError, VerificationError
from exportkit.stages.trace import Trace
from exportkit.verification.worker import load_graph
from tests.conftest import export, run_cli, serve


def kept(export_dir):
    """The kept cases: verify.json, and the inputs and source outputs as {key: array}."""
    extra = export_dir / "assets.extra"
    index = json.loads((extra / "verify.json").read_text())
    with np.load(extra / index["inputs"]) as inputs, np.load(extra / index["outputs"]) as outputs:
        return index, {k: inputs[k] for k in inputs.files}, {k: outputs[k] for k in outputs.files}


def reverify(export_dir):
    """Re-verify an export from its kept files alone (what a later ``exportkit verify`` does):
    every serve case run through TF2's loader, compared with the kept source outputs."""
    index, inputs, outputs = kept(export_dir)
    checked = 0
    for case in index["cases"]:
        if case["graph"] != "serve":
            continue
        prefix = f"{case['signature']}/{case['case']}/"
        got = serve(export_dir, {n: inputs[prefix + n] for n in case["inputs"]}, key=case["signature"])
        for name in case["outputs"]:
            tol = index["tolerances"][name]
            want = outputs[prefix + name]
            scale = float(np.abs(want).max()) or 1.0
            np.testing.assert_allclose(got[name], want, atol=max(tol["atol"], 1e-5 * scale), rtol=tol["rtol"])
            checked += 1
    return checked


# ---- models ---------------------------------------------------------------------------------


def tiny_bert():
    import keras_hub

    return keras_hub.models.BertBackbone(
        vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=16
    )


def gru_classifier(compiled: bool = True):
    """Embedding ids (input_dim 7: verify's old 0-9 ids fail on CPU) over a variable length."""
    ids = keras.Input((None,), dtype="int32", name="ids")
    x = keras.layers.Embedding(7, 4, name="emb")(ids)
    x = keras.layers.GRU(3, name="gru")(x)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    model = keras.Model(ids, keras.layers.Dense(2, name="out")(x), name="gru_classifier")
    if compiled:
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", metrics=["mae"])
    return model


class Lookup(keras.layers.Layer):
    """Gathers from a 3-row table: nothing tells verify that ids must be < 3."""

    def build(self, input_shape):
        self.table = self.add_weight(shape=(3, 2), initializer="glorot_uniform", name="table")

    def call(self, ids):
        import tensorflow as tf

        return tf.gather(self.table, ids)


def gather_model():
    ids = keras.Input((2,), dtype="int32", name="ids")
    return keras.Model(ids, keras.layers.Flatten(name="out")(Lookup(name="lookup")(ids)), name="gather")


def two_heads():
    image = keras.Input((5,), name="image")
    meta = keras.Input((3,), name="meta")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(keras.layers.Concatenate()([image, meta]))
    return keras.Model(
        {"image": image, "meta": meta},
        {
            "score": keras.layers.Dense(1, name="score")(hidden),
            "label": keras.layers.Dense(4, activation="softmax", name="label")(hidden),
        },
        name="heads",
    )


class Tampered(Trace):
    """The trace stage, but the export computes something else than the source model: ``add``
    shifts outputs, ``reverse`` reverses outputs' classes, ``loss_offset`` shifts the train loss."""

    def __init__(self, add=None, reverse=(), loss_offset: float = 0.0, required: bool = True):
        super().__init__(required)
        self.add, self.reverse, self.loss_offset = dict(add or {}), list(reverse), loss_offset

    def __call__(self, ctx):
        import tensorflow as tf

        serving = ctx.model.serving_fn

        def perturbed(inputs):
            out = dict(serving(inputs))
            out.update({n: out[n] + d for n, d in self.add.items()})
            out.update({n: tf.reverse(out[n], [-1]) for n in self.reverse})
            return out

        ctx.model.serving_fn = perturbed
        if self.loss_offset:
            train_fn = ctx.training.train_fn
            ctx.training.train_fn = lambda t: {**train_fn(t), "loss": train_fn(t)["loss"] + self.loss_offset}
        return super().__call__(ctx)


def tamper(**kwargs):
    """The overrides that swap the trace stage for ``Tampered(**kwargs)``."""
    return (
        "pipeline.stages.trace._target_=tests.test_verify_inputs.Tampered",
        *[f"+pipeline.stages.trace.{k}={hydra_value(v)}" for k, v in kwargs.items()],
    )


def hydra_value(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(hydra_value(v) for v in value) + "]"
    return str(value)


# ---- exports --------------------------------------------------------------------------------


def test_keras_hub_bert_backbone_verifies_with_the_defaults(export_dir):
    """Ids below each Embedding's input_dim, a 0/1 padding mask, every sequence length probed:
    before, the reference itself failed (segment_ids 0-9 into a 2-row embedding)."""
    model = tiny_bert()
    result = export("model=in_memory", f"export_dir={export_dir}", model=model)
    report = result.manifest["verify"]["serving_default"]
    assert set(report) == {"1,padding_mask_1=2", "1,padding_mask_1=5", "3,padding_mask_1=2", "3,padding_mask_1=5"}
    assert all(o["ok"] for case in report.values() for o in case.values())
    index, inputs, outputs = kept(export_dir)
    assert index["format"] == "exportkit-verify/1" and index["source"] == "generated"
    case = "serving_default/3,padding_mask_1=5/"
    ids, segments, mask = inputs[case + "token_ids"], inputs[case + "segment_ids"], inputs[case + "padding_mask"]
    assert ids.shape == segments.shape == mask.shape == (3, 5)  # the shared length, shared
    assert ids.max() < 50 and set(np.unique(segments)) <= {0, 1} and ids.max() >= 10  # not the old 0-9
    assert set(np.unique(mask)) <= {0, 1} and (mask[:, 0] == 1).all()
    assert (np.diff(mask, axis=1) <= 0).all()  # a padding mask: ones, then zeros
    # The source model, now, on the kept inputs: what the kept outputs say, and what the export serves.
    feed = {n: inputs[case + n] for n in ("token_ids", "segment_ids", "padding_mask")}
    want = model(feed)
    got = serve(export_dir, feed)
    for name in ("sequence_output", "pooled_output"):
        scale = float(np.abs(want[name]).max())
        np.testing.assert_allclose(outputs[case + name], want[name], atol=1e-6 * scale)
        np.testing.assert_allclose(got[name], want[name], atol=1e-5 * scale, rtol=1e-5)
    assert reverify(export_dir) == 8


def test_embedding_gru_probes_every_length_and_verifies_train_and_eval(export_dir):
    """ids < input_dim 7; the sequence length at 2 and 5 and as configured; train's loss and
    eval's loss and predictions against Keras' own train_on_batch / test_on_batch, leaving the
    source model's state as it was."""
    model = gru_classifier()
    before = [np.array(v) for v in model.weights + model.optimizer.variables + model.metrics_variables]
    result = export("model=in_memory", f"export_dir={export_dir}", "+verify.dims.ids_1=[1,7]", model=model)
    report = result.manifest["verify"]
    assert set(report["serving_default"]) == {"1,ids_1=1", "1,ids_1=7", "3,ids_1=1", "3,ids_1=7"}
    assert report["train"]["3"]["loss"]["ok"] and report["eval"]["3"]["loss"]["ok"]
    assert report["eval"]["3"]["predictions/out"]["ok"]
    after = [np.array(v) for v in model.weights + model.optimizer.variables + model.metrics_variables]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    index, inputs, outputs = kept(export_dir)
    assert [(c["graph"], c["case"]) for c in index["cases"]][-2:] == [("train", "3"), ("eval", "3")]
    assert inputs["serving_default/3,ids_1=7/ids"].shape == (3, 7) and inputs["serving_default/3,ids_1=7/ids"].max() < 7
    # The train graph, loaded fresh, gives the kept loss for the kept batch: what Keras computes.
    import tensorflow as tf

    batch = {n: inputs[f"train/3/{n}"] for n in ("ids", "out_target")}
    step = load_graph(str(export_dir), "train").signatures["train"]
    loss = float(step(**{k: tf.constant(v) for k, v in batch.items()})["loss"])
    copy = gru_classifier()
    for mine, source in zip(copy.variables, model.variables):  # weights and dropout's seed state
        mine.assign(source)
    keras_loss = copy.train_on_batch(batch["ids"], batch["out_target"], return_dict=True)["loss"]
    assert abs(loss - float(outputs["train/3/loss"])) <= 1e-5 * abs(loss)
    assert abs(loss - keras_loss) <= 1e-5 * abs(loss)
    assert reverify(export_dir) == 4


def test_a_tampered_train_graph_fails(export_dir):
    with pytest.raises(VerificationError, match=r"train/loss at batch 3: max abs error"):
        export("model=in_memory", f"export_dir={export_dir}", *tamper(loss_offset=0.25), model=gru_classifier())


def test_real_examples_are_used_kept_and_reverify(tmp_path):
    """verify.inputs: unprefixed and signature-prefixed keys; the kept file is itself a valid
    verify.inputs, and a second export verified from it checks the same cases."""
    rng = np.random.default_rng(3)
    examples = tmp_path / "examples.npz"
    np.savez(
        examples,
        image=rng.standard_normal((4, 5)).astype("float32"),
        **{"serving_default/meta": rng.standard_normal((4, 3))},
    )  # float64: cast to float32
    model = two_heads()
    first = tmp_path / "first"
    result = export("model=in_memory", f"export_dir={first}", f"verify.inputs={examples}", model=model)
    assert set(result.manifest["verify"]["serving_default"]) == {"4"}
    index, inputs, outputs = kept(first)
    assert index["source"] == "verify.inputs"
    with np.load(examples) as given:
        np.testing.assert_array_equal(inputs["serving_default/4/image"], given["image"])
        np.testing.assert_array_equal(inputs["serving_default/4/meta"], given["serving_default/meta"].astype("float32"))
    want = model({"image": inputs["serving_default/4/image"], "meta": inputs["serving_default/4/meta"]})
    np.testing.assert_allclose(outputs["serving_default/4/label"], want["label"], atol=1e-6)
    assert reverify(first) == 2
    second = tmp_path / "second"
    again = export(
        "model=in_memory",
        f"export_dir={second}",
        f"verify.inputs={first / 'assets.extra' / 'verify_inputs.npz'}",
        model=model,
    )
    assert set(again.manifest["verify"]["serving_default"]) == {"4"}
    assert kept(second)[1].keys() == inputs.keys()


def test_per_output_tolerances_and_top1_catch_a_perturbed_export(tmp_path):
    model = two_heads()
    perturb = tamper(add={"score": 0.5}, reverse=["label"])
    loose = ("+verify.tolerances.score={atol: 1}", "+verify.tolerances.label={atol: 1}")
    # Each output within its own tolerance: the export passes, and says so per output.
    result = export("model=in_memory", f"export_dir={tmp_path / 'a'}", *perturb, *loose, model=model)
    case = result.manifest["verify"]["serving_default"]["3"]
    assert case["score"]["ok"] and 0.49 < case["score"]["max_abs_error"] < 0.51
    # One output's tolerance does not loosen another's.
    with pytest.raises(VerificationError, match=r"serving_default/score at batch \d: max abs error 0.5"):
        export("model=in_memory", f"export_dir={tmp_path / 'b'}", *perturb, loose[1], model=model)
    # Top-1: the classes the export ranks first are not the source model's.
    with pytest.raises(VerificationError, match=r"serving_default/label at batch \d: top-1 class agrees on 0%"):
        export("model=in_memory", f"export_dir={tmp_path / 'c'}", *perturb, *loose, "verify.top1=true", model=model)


def test_a_model_failing_on_its_inputs_is_one_line_naming_the_key(tmp_path):
    done = run_cli(
        "model=keras",
        "model.build._target_=tests.test_verify_inputs.gather_model",
        f"export_dir={tmp_path / 'out'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("exportkit: error: the source model failed on verify's inputs for serving_default")
    assert "Lookup.call(): indices[" in lines[-1] and "is not in [0, 3)" in lines[-1]  # the model's own words
    assert "input ids got integers 0-9 (the dtype's default)" in lines[-1] and "verify.values.ids=" in lines[-1]
    assert "Traceback" not in done.stderr
    # The key it names is the fix.
    result = export(
        "model=keras",
        "model.build._target_=tests.test_verify_inputs.gather_model",
        f"export_dir={tmp_path / 'fixed'}",
        "+verify.values.ids={low: 0, high: 3}",
    )
    assert all(o["ok"] for case in result.manifest["verify"]["serving_default"].values() for o in case.values())


# ---- units: no export -------------------------------------------------------------------------


def spec(shape, dtype="float32", name=None):
    import tensorflow as tf

    return tf.TensorSpec(shape, tf.as_dtype(dtype), name=name)


def test_introspection_finds_embeddings_lookups_and_text_through_nesting():
    from exportkit.keras.introspect import input_hints

    text_layer = keras.layers.TextVectorization(output_sequence_length=4, name="tv")
    text_layer.adapt(["the cat sat", "a dog ran"])
    text = keras.Input((1,), dtype="string", name="text")
    color = keras.Input((1,), dtype="string", name="color")
    ids = keras.Input((3,), dtype="int32", name="ids")
    inner_ids = keras.Input((3,), dtype="int32", name="inner_ids")
    inner = keras.Model(inner_ids, keras.layers.Embedding(4, 2, name="emb4")(inner_ids), name="inner")
    free = keras.Input((3,), name="free")
    model = keras.Model(
        [text, color, ids, free],
        [
            text_layer(keras.layers.Reshape(())(text)),
            keras.layers.StringLookup(vocabulary=["red", "blue"], name="lookup")(color),
            inner(ids),
            free,
        ],
    )
    hints = input_hints(model)
    assert set(hints) == {"text", "color", "ids"}
    assert sorted(hints["text"]["values"]) == ["a", "cat", "dog", "ran", "sat", "the"] and hints["text"]["sentence"]
    assert hints["color"]["values"] == ["red", "blue"] and "sentence" not in hints["color"]
    assert (hints["ids"]["low"], hints["ids"]["high"]) == (0, 4) and "emb4" in hints["ids"]["origin"]
    sequential = keras.Sequential([keras.Input((5,), name="seq_in"), keras.layers.Embedding(6, 2)])
    assert [h["high"] for h in input_hints(sequential).values()] == [6]


def test_generated_values_follow_config_hints_names_and_dtypes():
    from exportkit.verification.cases import make_inputs

    signatures = {
        "serving_default": {
            "words": spec([None, 1], "string"),
            "sentence": spec([None], "string"),
            "ids": spec([None, 6], "int32"),
            "attention_mask": spec([None, 6], "int32"),
            "token_type_ids": spec([None, 6], "int64"),
            "x": spec([None, 2]),
            "bucket": spec([None], "int32"),
            "flag": spec([None], "bool"),
        }
    }
    hints = {
        "words": {"values": ["red", "blue"], "origin": "StringLookup"},
        "sentence": {"values": ["hello", "world"], "sentence": True, "origin": "TextVectorization"},
        "ids": {"low": 0, "high": 3, "integer": True, "origin": "Embedding"},
    }
    cases = make_inputs(signatures, [50], seed=0, hints=hints, values={"x": {"low": 5, "high": 6}, "bucket": [7, 11]})
    a = cases[("serving_default", "50")]
    assert set(a["words"].ravel()) == {b"red", b"blue"} and a["words"].shape == (50, 1)
    assert (
        all(set(s.split()) <= {b"hello", b"world"} for s in a["sentence"])
        and max(len(s.split()) for s in a["sentence"]) > 1
    )
    assert a["ids"].dtype == np.int32 and set(np.unique(a["ids"])) == {0, 1, 2}
    assert set(np.unique(a["attention_mask"])) == {0, 1} and (a["attention_mask"][:, 0] == 1).all()
    assert set(np.unique(a["token_type_ids"])) == {0, 1} and a["token_type_ids"].dtype == np.int64
    assert a["x"].dtype == np.float32 and 5 <= a["x"].min() and a["x"].max() < 6
    assert set(np.unique(a["bucket"])) == {7, 11} and a["flag"].dtype == bool
    with pytest.raises(ConfigError, match=r"verify.values.bucket=.*low: L, high: H"):
        make_inputs(signatures, [1], seed=0, values={"bucket": {"low": 3, "high": 1}})


def test_dims_plan_shares_lengths_and_takes_keys_and_symbols():
    from exportkit.verification.cases import jax_symbols, make_inputs, plan

    specs = {"ids": spec([None, None], "int32"), "mask": spec([None, None], "int32"), "img": spec([None, None, 4])}
    cases = dict(plan(specs, [2], {}, [2, 5]))
    assert list(cases) == ["2,ids_1=2", "2,ids_1=5"]  # one group per axis index: a shared length
    assert cases["2,ids_1=5"] == {"ids": [2, 5], "mask": [2, 5], "img": [2, 5, 4]}
    # A key of one input sets its axis for every input without a key of its own.
    cases = dict(plan(specs, [1], {"ids_1": [1, 7, 64]}, [2, 5]))
    assert [s["mask"][1] for s in cases.values()] == [1, 7, 64] and [s["ids"][1] for s in cases.values()] == [1, 7, 64]
    # Its own key separates an input; the shorter list cycles.
    cases = dict(plan(specs, [1], {"ids_1": [3], "img_1": [8, 9]}, [2, 5]))
    assert [(s["ids"][1], s["img"][1], s["mask"][1]) for s in cases.values()] == [(3, 8, 3), (3, 9, 3)]
    # jax2tf's symbols: verify.dims.<symbol>.
    symbols = jax_symbols({"ids": "(batch, seq)", "mask": "(batch, seq)"})
    cases = dict(plan({n: specs[n] for n in ("ids", "mask")}, [1], {"seq": [4]}, [2, 5], symbols))
    assert cases == {"1,seq=4": {"ids": [1, 4], "mask": [1, 4]}}
    with pytest.raises(ConfigError, match=r"verify.dims.ids_2 names no dynamic dimension.*ids_1, img_1, mask_1"):
        make_inputs({"serving_default": specs}, [1], seed=0, dims={"ids_2": [3]})
    # A fixed leading dimension is the only batch size.
    assert [label for label, _ in plan({"x": spec([4, 3])}, [1, 3], {}, [2, 5])] == ["4"]


def test_bad_examples_are_one_line_config_errors(tmp_path):
    from exportkit.verification.cases import load_examples

    signatures = {
        "serving_default": {"ids": spec([None, 3], "int32"), "x": spec([None, 2])},
        "other": {"x": spec([None, 2])},
    }
    path = tmp_path / "e.npz"

    def error(**arrays):
        np.savez(path, **arrays)
        with pytest.raises(ConfigError) as raised:
            load_examples(str(path), signatures)
        assert "verify.inputs=" in str(raised.value) and "\n" not in str(raised.value)
        return str(raised.value)

    x = np.zeros((2, 2), "float32")
    assert "no array for input ids of serving_default" in error(x=x)
    assert "shape [2, 4]" in error(x=x, ids=np.zeros((2, 4), "int32")) and "input ids" in error(
        x=x, ids=np.zeros((2, 4), "int32")
    )
    assert "dtype float32, the input takes int32" in error(x=x, ids=np.zeros((2, 3), "float32"))
    assert "do not fit int32" in error(x=x, ids=np.full((2, 3), 2**40))
    assert "different batch sizes" in error(x=x, ids=np.zeros((5, 3), "int32"))
    assert "key 'nope/x'" in error(**{"nope/x": x, "ids": np.zeros((2, 3), "int32")})
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(ConfigError, match=r"verify.inputs=.*bad.npz.*cannot be read as a .npz"):
        load_examples(str(tmp_path / "bad.npz"), signatures)
    # Keys may name a signature and a case: one case per label, unprefixed keys shared.
    np.savez(
        path,
        x=x,
        **{"serving_default/a/ids": np.ones((2, 3), "int64"), "serving_default/b/ids": np.zeros((2, 3), "int32")},
    )
    cases = load_examples(str(path), signatures)
    assert set(cases) == {("serving_default", "a"), ("serving_default", "b"), ("other", "2")}
    assert cases[("serving_default", "a")]["ids"].dtype == np.int32


def test_kept_npz_bytes_do_not_depend_on_when_they_were_written(tmp_path, monkeypatch):
    import time

    from exportkit.verification.kept import save_npz

    arrays = {"serving_default/3/x": np.arange(6.0).reshape(2, 3), "serving_default/3/s": np.array([b"a", b"bc"])}
    save_npz(tmp_path / "a.npz", arrays)
    later = time.time() + 86400 * 400  # the clock a day over a year on (zip timestamps have a 2 s resolution)
    monkeypatch.setattr(time, "time", lambda: later)
    monkeypatch.setattr(time, "localtime", lambda seconds=None: time.gmtime(later if seconds is None else seconds))
    save_npz(tmp_path / "b.npz", arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz", allow_pickle=False) as data:
        assert data["serving_default/3/s"].tolist() == [b"a", b"bc"]
