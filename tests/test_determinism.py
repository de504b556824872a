"""Byte-reproducible exports: the same config gives the same files, in fresh processes and in one.

Each case is one line of ``CASES`` (CLI overrides of a model source); the checks are generic,
through the pipeline's own reference function and signatures, so a JAX model is one more line.
"""

import numpy as np
import pytest

from exportkit.artifact import canonical, manifest
from tests.conftest import export, run_cli, serve

KERAS_COMPILED = ("model=keras", "model.build._target_=tests.models.sequential", "+model.build.compiled=true")
# case -> (CLI overrides, each SavedModel proto of its export -> the MetaGraphDef tags it holds)
CASES = {
    "keras_compiled": (
        KERAS_COMPILED,
        {"saved_model.pb": ["serve"], "graphs/train/saved_model.pb": ["train"], "graphs/eval/saved_model.pb": ["eval"]},
    ),
    "keras_compiled_tf1": ((*KERAS_COMPILED, "layout=tf1"), {"saved_model.pb": ["serve", "train", "eval"]}),
    # lookup tables in all three graphs: table names and initializer names carry process counters
    "keras_text": (
        ("model=keras", "model.build._target_=tests.test_resources.text_vectorization", "+model.build.compiled=true"),
        {"saved_model.pb": ["serve"], "graphs/train/saved_model.pb": ["train"], "graphs/eval/saved_model.pb": ["eval"]},
    ),
    "jax": (
        (
            "model=jax",
            "model.build._target_=tests.jax_models.two_inputs",
            "+signatures.serving_default={inputs: {image: {shape: [null, 5], dtype: float32}, "
            "meta: {shape: [null, 3], dtype: float32}}}",
        ),
        {"saved_model.pb": ["serve"]},
    ),
}


def contents(export_dir):
    """Relative path -> bytes of every file but the manifest."""
    return {
        p.relative_to(export_dir).as_posix(): p.read_bytes()
        for p in sorted(export_dir.rglob("*"))
        if p.is_file() and p.relative_to(export_dir) != manifest.MANIFEST
    }


def without_timings(recorded):
    return dict(recorded, stages=[{k: v for k, v in s.items() if k != "seconds"} for s in recorded["stages"]])


def tf1_serve(export_dir, inputs, key="serving_default"):
    """The signature run by the TF1 loader in a Session, as TensorFlow Serving does."""
    import tensorflow as tf

    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.load(sess, ["serve"], str(export_dir))
        sig = meta.signature_def[key]
        names = sorted(sig.outputs)
        values = sess.run([sig.outputs[n].name for n in names], {sig.inputs[k].name: v for k, v in inputs.items()})
    return dict(zip(names, values))


# the tf1 layout case (the same graphs joined in one proto) and the JAX one (tests/test_jax.py
# checks a JAX export's bytes within one process) run in `make test-slow`
SLOW = {c for c in CASES if c.endswith("_tf1") or c == "jax"}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in CASES])
def test_two_fresh_processes_write_identical_bytes(tmp_path, case):
    from tensorflow.core.protobuf import saved_model_pb2

    from exportkit.verification.cases import make_inputs

    overrides, tags = CASES[case]
    export_dir = tmp_path / "model"
    runs = []
    for hash_seed in ("1", "2"):  # different str hashes: set and dict-of-set orders differ
        run_cli(
            *overrides,
            f"export_dir={export_dir}",
            "pipeline.stages.verify=null",
            f"hydra.run.dir={tmp_path / 'hydra' / hash_seed}",
            env={"PYTHONHASHSEED": hash_seed},
            check=True,
        )
        runs.append(export_dir.rename(tmp_path / f"run{hash_seed}"))
    first, second = runs

    a, b = contents(first), contents(second)
    assert {"saved_model.pb", "fingerprint.pb", "variables/variables.index"} <= set(a)
    assert sorted(a) == sorted(b)
    for pb, pb_tags in tags.items():
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString(a[pb])
        assert [list(m.meta_info_def.tags) for m in proto.meta_graphs] == [[t] for t in pb_tags]
    assert sorted(p for p in a if p.endswith("saved_model.pb")) == sorted(tags)
    for path in a:
        assert a[path] == b[path], f"{path} differs between two fresh-process runs"
    # Same config, same export_dir: the manifests differ in the stage timings only.
    m1, m2 = manifest.read(first).to_dict(), manifest.read(second).to_dict()
    assert without_timings(m1) == without_timings(m2)
    assert m1["digest"] == canonical.content_digest(manifest.file_hashes(first))
    assert m1["fingerprint"]["uuid"] == m2["fingerprint"]["uuid"]

    # The canonical export still loads with both loaders and computes what the source model does;
    # and an export in this (long-lived, much-traced) test process writes the same bytes again.
    result = export(*overrides, f"export_dir={tmp_path / 'in_process'}", "pipeline.stages.verify=null")
    assert contents(tmp_path / "in_process") == a
    hints = result.context.model.input_hints  # string inputs drawn from the model's vocabularies
    for (key, _), inputs in make_inputs(result.context.model.signatures, [3], seed=7, hints=hints).items():
        want = result.context.model.reference[key](inputs)
        for got in (serve(first, inputs, key), tf1_serve(first, inputs, key)):
            assert set(got) == set(want)
            for name in want:
                np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-6)


def test_function_counters_do_not_reach_the_bytes(tmp_path, monkeypatch):
    """Two exports in one process, with tracing in between, differ only by TF's counters, which
    canonicalization removes: without it the saved_model.pb files differ, with it they don't."""
    import tensorflow as tf

    overrides = ("model=keras", "model.build._target_=tests.models.functional_multi_io", "pipeline.stages.verify=null")

    def twice(tag):
        out = []
        for i in (1, 2):
            tf.function(lambda x: x + 1.0).get_concrete_function(tf.TensorSpec([None], tf.float32))
            export(*overrides, f"export_dir={tmp_path / tag / str(i)}")
            out.append(contents(tmp_path / tag / str(i)))
        return out

    with monkeypatch.context() as patch:
        patch.setattr(canonical, "saved_model", lambda proto: None)
        raw = twice("raw")
    assert raw[0]["saved_model.pb"] != raw[1]["saved_model.pb"]
    canonical_runs = twice("canonical")
    assert canonical_runs[0] == canonical_runs[1]


def test_text_format_is_canonical_too(tmp_path):
    overrides = (
        "model=keras",
        "model.build._target_=tests.models.custom_layer",
        "+custom_objects.Scale=tests.models.Scale",
        "as_text=true",
        "pipeline.stages.verify=null",
    )
    export(*overrides, f"export_dir={tmp_path / 'a'}")
    export(*overrides, f"export_dir={tmp_path / 'b'}")
    a, b = contents(tmp_path / "a"), contents(tmp_path / "b")
    assert "saved_model.pbtxt" in a and a == b
    # fingerprint.pb has no content hashes for a .pbtxt; its uuid still tells exports apart
    other = (
        "model=keras",
        "model.build._target_=tests.models.sequential",
        "as_text=true",
        "pipeline.stages.verify=null",
    )
    export(*other, f"export_dir={tmp_path / 'c'}")
    uuids = {manifest.read(tmp_path / d).to_dict()["fingerprint"]["uuid"] for d in "abc"}
    assert len(uuids) == 2


def test_canonical_names_keep_the_loaders_format(tmp_path):
    """Renamed functions keep ``<base>_<number>`` (the TF2 loader parses it) and every reference
    to a function names one that exists in the library."""
    from tensorflow.core.protobuf import saved_model_pb2

    export(
        "model=keras",
        "model.build._target_=tests.models.functional_multi_io",
        f"export_dir={tmp_path / 'm'}",
        "pipeline.stages.verify=null",
    )
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((tmp_path / "m" / "saved_model.pb").read_bytes())
    meta = proto.meta_graphs[0]
    names = [f.signature.name for f in meta.graph_def.library.function]
    assert names == sorted(names)
    assert all(canonical._UID.match(n) for n in names)
    called = {n.attr["f"].func.name for n in meta.graph_def.node if "f" in n.attr}
    called |= {n.attr["f"].func.name for f in meta.graph_def.library.function for n in f.node_def if "f" in n.attr}
    assert called and called <= set(names)
    assert set(meta.object_graph_def.concrete_functions) <= set(names)
    assert all(type(n) is str for n in names)  # plain strings


def _save_training_like_module(directory):
    """A signature that differentiates through a nested function and a custom gradient: the
    forward/backward function pairs and gradient op types a ``train`` graph is made of."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    v = tf.Variable([[1.0, 2.0], [3.0, 4.0]])

    @tf.function
    def inner(x):
        return tf.reduce_sum(tf.tanh(tf.matmul(x, v)))

    @tf.custom_gradient
    def clip(x):
        return x, lambda dy: tf.clip_by_value(dy, -0.1, 0.1)

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)])
    def step(x):
        with tf.GradientTape() as tape:
            loss = inner(clip(x))
        return {"loss": loss, "grad": tape.gradient(loss, v)}

    root = tf.Module()
    root.v = v
    tf.function(lambda x: x * 3.0).get_concrete_function(tf.TensorSpec([None], tf.float32))  # shift counters
    tf.saved_model.save(root, str(directory), signatures={"step": step.get_concrete_function()})
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((directory / "saved_model.pb").read_bytes())
    return proto, step


def test_gradient_functions_are_canonical_and_still_load(tmp_path):
    import tensorflow as tf

    (first, step), (second, _) = (_save_training_like_module(tmp_path / d) for d in ("a", "b"))
    library = first.meta_graphs[0].graph_def.library
    assert any(f.signature.name.startswith("__inference___backward_") for f in library.function)
    assert len(library.registered_gradients) == 1
    assert first.SerializeToString(deterministic=True) != second.SerializeToString(deterministic=True)
    for proto in (first, second):
        canonical.saved_model(proto)
    assert first.SerializeToString(deterministic=True) == second.SerializeToString(deterministic=True)

    (tmp_path / "a" / "saved_model.pb").write_bytes(first.SerializeToString(deterministic=True))
    x = np.array([[0.5, -1.0], [2.0, 0.25]], np.float32)
    want = {k: v.numpy() for k, v in step(tf.constant(x)).items()}
    tf2 = tf.saved_model.load(str(tmp_path / "a")).signatures["step"](x=tf.constant(x))
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.load(sess, ["serve"], str(tmp_path / "a"))
        sig = meta.signature_def["step"]
        tf1 = sess.run({k: t.name for k, t in sig.outputs.items()}, {sig.inputs["x"].name: x})
    for name in ("loss", "grad"):
        np.testing.assert_allclose(tf2[name].numpy(), want[name], rtol=1e-6)
        np.testing.assert_allclose(tf1[name], want[name], rtol=1e-6)
