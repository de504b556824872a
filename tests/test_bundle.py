"""exportkit's checkpoint writer (exportkit.artifact.bundle) against TensorFlow's own save, and the
export's background writing (exportkit.background): same bytes, digests of what is on disk,
failures told as the write_checkpoint stage's and nothing left behind."""

import hashlib
import threading

import numpy as np
import pytest

from tests import jax_models
from tests.conftest import leftovers, random_inputs, serve


def tf_and_exportkit_bundles(root, tmp_path):
    """The checkpoint of ``root`` written by ``tf.train.Checkpoint.write`` and by exportkit."""
    import tensorflow as tf

    from exportkit.artifact import bundle

    tf.train.Checkpoint(root).write(str(tmp_path / "tf" / "variables"))
    items = bundle.entries(tf.train.Checkpoint(root))
    assert items is not None
    (tmp_path / "exportkit").mkdir()
    digests = bundle.write(tmp_path / "exportkit" / "variables", items)
    return tmp_path / "tf", tmp_path / "exportkit", digests


def assert_same_files(a, b):
    names = sorted(p.name for p in a.iterdir())
    assert names == ["variables.data-00000-of-00001", "variables.index"]
    assert sorted(p.name for p in b.iterdir()) == names
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_same_bytes_as_tensorflow_for_every_kind_of_tensor(tmp_path):
    import ml_dtypes
    import tensorflow as tf

    root = tf.Module()
    root.values = [
        tf.Variable(np.arange(12, dtype=np.float32).reshape(3, 4)),
        tf.Variable(np.int64(-3)),
        tf.Variable([True, False, True]),
        tf.Variable(np.linspace(-2, 2, 6).astype(ml_dtypes.bfloat16)),
        tf.Variable(np.zeros((0, 3), np.float16)),
        tf.Variable(["", "a", "ünïcode" * 40]),
        tf.Variable([[b"nul\x00\x00", b"\x00"]]),
        tf.Variable(b"scalar ends in NUL\x00"),
        tf.Variable(np.arange(6, dtype=np.uint8)),
        tf.Variable(np.array([1 + 2j], np.complex64)),
    ]
    root.table = tf.lookup.experimental.MutableHashTable(tf.string, tf.int64, default_value=-1)
    root.table.insert(tf.constant(["x", "yy", "zzz"]), tf.constant([1, 2, 3], tf.int64))
    theirs, ours, digests = tf_and_exportkit_bundles(root, tmp_path)
    assert_same_files(theirs, ours)
    for path, digest in digests.items():  # the digests returned are those of the files written
        assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    restored = tf.Module()
    restored.values = [tf.Variable(tf.zeros_like(v)) for v in root.values]
    restored.table = tf.lookup.experimental.MutableHashTable(tf.string, tf.int64, default_value=-1)
    tf.train.Checkpoint(restored).read(str(ours / "variables")).assert_consumed()
    for a, b in zip(root.values, restored.values):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert restored.table.lookup(tf.constant(["yy", "q"])).numpy().tolist() == [2, -1]


def test_same_bytes_as_tensorflow_for_an_index_of_several_blocks(tmp_path):
    import tensorflow as tf

    root = tf.Module()  # 6000 entries: an index of ~300 KB, two of its 256 KiB blocks
    root.values = [tf.Variable(np.full(4, i, np.float32), name=f"v{i}") for i in range(6000)]
    theirs, ours, _ = tf_and_exportkit_bundles(root, tmp_path)
    assert (theirs / "variables.index").stat().st_size > 262144
    assert_same_files(theirs, ours)


def test_same_bytes_as_tensorflow_for_a_library_model_with_its_optimizer(tmp_path):
    import keras
    import tensorflow as tf

    model = keras.applications.MobileNetV3Small(weights=None, input_shape=(32, 32, 3), classes=10)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.train_on_batch(np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype("float32"), np.array([1, 2]))
    root = tf.Module()
    root.model, root.optimizer = list(model.variables), list(model.optimizer.variables)
    theirs, ours, _ = tf_and_exportkit_bundles(root, tmp_path)
    assert_same_files(theirs, ours)


def test_checkpoints_it_does_not_cover_are_left_to_tensorflow():
    import tensorflow as tf

    from exportkit.artifact import bundle

    iterator = iter(tf.data.Dataset.range(5))  # its state is a variant tensor
    next(iterator)
    assert bundle.entries(tf.train.Checkpoint(it=iterator)) is None
    from tensorflow.python.framework import dtypes

    float8 = tf.Variable(tf.cast(tf.zeros([2]), dtypes.float8_e4m3fn))  # a dtype it leaves to TensorFlow
    assert bundle.entries(tf.train.Checkpoint(v=float8)) is None
    assert bundle.entries(tf.train.Checkpoint(v=tf.Variable(1.0))) is not None


def test_an_export_tensorflow_saves_itself_still_round_trips(export_dir, monkeypatch):
    import keras

    import exportkit
    from exportkit.artifact import bundle

    monkeypatch.setattr(bundle, "entries", lambda checkpoint, sources=(): None)
    model = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(3)])
    exportkit.export_saved_model(model, export_dir, verbose=False)
    x = random_inputs({"x": (4,)}, 5)["x"]
    out = next(iter(serve(export_dir, {"x": x}).values()))
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def test_jax_params_written_by_tensorflow_get_their_values_first(export_dir, monkeypatch):
    """Variables made without values (misaligned NumPy params) are filled before TensorFlow's save."""
    import tensorflow as tf

    import exportkit
    from bench.jax_models import wide
    from exportkit.artifact import bundle
    from exportkit.stages import write_checkpoint

    monkeypatch.setattr(bundle, "entries", lambda checkpoint, sources=(): None)
    apply_fn, params = wide(width=32, layers=2)
    misaligned = [jax_models.misaligned(p) for p in params]
    seen = []
    real_fill = write_checkpoint.fill
    monkeypatch.setattr(write_checkpoint, "fill", lambda ctx: (seen.append(len(ctx.unfilled)), real_fill(ctx)))
    result = exportkit.export_saved_model(
        (apply_fn, misaligned),
        export_dir,
        verbose=False,
        input_signature=[tf.TensorSpec([None, 32], tf.float32, name="x")],
        overrides=["pipeline.stages.verify=null"],
    )  # unverified: no copy made
    assert seen == [2] and result.context.unfilled == [] and [r.status for r in result.records] == ["ok"] * 5
    reader = tf.train.load_checkpoint(str(export_dir / "variables" / "variables"))
    keys = sorted(k for k in reader.get_variable_to_shape_map() if k.endswith("VARIABLE_VALUE"))
    for key, source in zip(keys, params):
        np.testing.assert_array_equal(reader.get_tensor(key), source)


def _exporting(export_dir):
    import keras

    import exportkit

    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(512), keras.layers.Dense(8)])
    return lambda: exportkit.export_saved_model(model, export_dir, verbose=False)


def _writer_threads():
    return [t for t in threading.enumerate() if t.name.startswith("exportkit-") and t.name != "exportkit-hash"]


def test_a_failed_checkpoint_write_fails_that_stage_and_leaves_nothing(export_dir, monkeypatch):
    import keras

    from exportkit import pipeline
    from exportkit.artifact import bundle
    from tests.conftest import compose

    def failing(prefix, items, stop=None):
        (prefix.parent / "variables.data-00000-of-00001").write_bytes(b"partial")
        raise OSError(5, "Input/output error", str(prefix))

    monkeypatch.setattr(bundle, "write", failing)
    model = keras.Sequential([keras.Input((8,), name="x"), keras.layers.Dense(4)])
    export = pipeline.Export(pipeline.resolved(compose(f"export_dir={export_dir}", "model=in_memory")), model=model)
    with pytest.raises(OSError, match="Input/output error"):
        export.run()
    records = {r.name: (r.status, r.detail) for r in export.records}
    assert records["write_checkpoint"][0] == "failed" and "Input/output error" in records["write_checkpoint"][1]
    # write_graphs, which waited for it, is not blamed; nothing after it ran
    assert records["write_graphs"][0] == "skipped" and "verify" not in records
    assert leftovers(export_dir) == [] and _writer_threads() == []


def test_a_checkpoint_written_before_the_graphs_captured_a_table_is_refused(export_dir):
    import keras
    import tensorflow as tf

    import exportkit
    from exportkit.errors import ModelSourceError

    inputs = keras.Input((1,), dtype="string", name="word")
    model = keras.Model(inputs, keras.layers.StringLookup(vocabulary=["a", "b"])(inputs))
    order = [
        "~pipeline.stages.trace",
        "~pipeline.stages.write_graphs",
        "pipeline.stages.verify=null",
        "+pipeline.stages.trace_late={_target_: exportkit.stages.trace.Trace}",
        "+pipeline.stages.graphs={_target_: exportkit.stages.write_graphs.WriteGraphs}",
    ]
    with pytest.raises(ModelSourceError, match="captures 1 resource.*checkpoint was written with 0"):
        exportkit.export_saved_model(
            model,
            export_dir,
            verbose=False,
            overrides=order,
            input_signature=[tf.TensorSpec([None, 1], tf.string, name="word")],
        )
    assert leftovers(export_dir) == []


def test_a_stage_failing_while_the_checkpoint_is_written_stops_it_and_leaves_nothing(export_dir, monkeypatch):
    from exportkit.artifact import bundle
    from exportkit.stages import write_graphs

    started, failed, written_after_failure = threading.Event(), threading.Event(), []
    real_write_all = bundle._write_all

    def slow_write_all(f, view):  # the writer is still busy when the graphs' saving fails
        started.set()
        threading.Event().wait(0.05)
        if failed.is_set():
            written_after_failure.append(len(view))
        real_write_all(f, view)

    def failing_save(*args, **kwargs):
        started.wait(10)
        failed.set()
        raise RuntimeError("graph saving failed")

    monkeypatch.setattr(bundle, "CHUNK", 4096)
    monkeypatch.setattr(bundle, "_write_all", slow_write_all)
    monkeypatch.setattr(write_graphs, "save_meta_graph", failing_save)
    with pytest.raises(RuntimeError, match="graph saving failed"):
        _exporting(export_dir)()
    assert leftovers(export_dir) == [] and _writer_threads() == []
    # the checkpoint is ~150 KB, 36 blocks of 4 KiB here: told to stop, the writer ends after the
    # block in hand (the export waits for it before removing its staging directory)
    assert len(written_after_failure) <= 1


def test_stage_records_stay_in_pipeline_order_with_the_checkpoints_own_time(export_dir, monkeypatch):
    from exportkit.artifact import bundle

    real_write = bundle.write

    def slow_write(prefix, items, stop=None):
        threading.Event().wait(0.5)
        return real_write(prefix, items, stop)

    monkeypatch.setattr(bundle, "write", slow_write)
    result = _exporting(export_dir)()
    records = {r.name: r for r in result.records}
    assert [r.name for r in result.records] == ["build", "trace", "write_checkpoint", "write_graphs", "verify"]
    assert records["write_checkpoint"].status == "ok" and records["write_checkpoint"].seconds >= 0.5
    assert records["write_checkpoint"].detail == "in the background"
    files = result.manifest["files"]
    for name in ("variables/variables.data-00000-of-00001", "variables/variables.index"):
        assert files[name] == hashlib.sha256((export_dir / name).read_bytes()).hexdigest()
