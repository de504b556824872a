"""The checkpoint: TensorFlow's own save writes it, beside the graphs; a failed write (a full
disk included) fails its stage and leaves nothing; a stage after it sees it whole; a checkpoint
that misses a table the graphs capture is refused."""

import errno
import os
import subprocess

import numpy as np
import pytest

from tests.conftest import leftovers, random_inputs, serve


def test_the_checkpoint_holds_the_models_values_and_the_export_round_trips(export_dir):
    import keras
    import tensorflow as tf

    import exportkit

    model = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(3)])
    exportkit.export_saved_model(model, export_dir, verbose=False)
    reader = tf.train.load_checkpoint(str(export_dir / "variables" / "variables"))
    values = sorted(
        (reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k.endswith("VARIABLE_VALUE")),
        key=np.ndim,
    )
    bias, kernel = values
    np.testing.assert_array_equal(kernel, model.layers[0].kernel.numpy())
    np.testing.assert_array_equal(bias, model.layers[0].bias.numpy())
    x = random_inputs({"x": (4,)}, 5)["x"]
    out = next(iter(serve(export_dir, {"x": x}).values()))
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def test_a_failed_checkpoint_write_fails_that_stage_and_leaves_nothing(export_dir, monkeypatch):
    import keras
    import tensorflow as tf

    from exportkit import pipeline
    from tests.conftest import compose

    def failing(self, prefix, *args, **kwargs):
        os.makedirs(os.path.dirname(prefix), exist_ok=True)
        with open(f"{prefix}.data-00000-of-00001", "wb") as partial:
            partial.write(b"partial")
        raise OSError(5, "Input/output error", prefix)

    monkeypatch.setattr(tf.train.Checkpoint, "write", failing)
    model = keras.Sequential([keras.Input((8,), name="x"), keras.layers.Dense(4)])
    export = pipeline.Export(pipeline.resolved(compose(f"export_dir={export_dir}", "model=in_memory")), model=model)
    with pytest.raises(OSError, match="Input/output error"):
        export.run()
    records = {r.name: (r.status, r.detail) for r in export.records}
    assert records["write_checkpoint"][0] == "failed" and "Input/output error" in records["write_checkpoint"][1]
    assert "write_graphs" not in records and "verify" not in records  # nothing after it ran
    assert leftovers(export_dir) == [] and not export_dir.exists()


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


class ReadCheckpoint:
    """A user stage placed right after write_checkpoint that reads the checkpoint's values."""

    needs, adds, required = ("variables",), (), True

    def __call__(self, ctx):
        import tensorflow as tf

        reader = tf.train.load_checkpoint(str(ctx.run.work_dir / "variables" / "variables"))
        ctx.extra["values"] = sorted(
            (reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k.endswith("VARIABLE_VALUE")),
            key=np.ndim,
        )
        return ctx


def test_a_stage_after_write_checkpoint_finds_the_checkpoint_whole(export_dir, monkeypatch):
    """write_checkpoint's write goes on beside write_graphs, never beside a stage that reads files:
    held back after write_checkpoint has returned, it is still waited for."""
    import threading

    import keras
    import tensorflow as tf

    import exportkit

    write = tf.train.Checkpoint.write

    def held_write(self, prefix, *args, **kwargs):
        go = threading.Event()
        threading.Timer(0.1, go.set).start()  # a stage run beside the write would find no checkpoint
        go.wait()
        return write(self, prefix, *args, **kwargs)

    monkeypatch.setattr(tf.train.Checkpoint, "write", held_write)
    model = keras.Sequential([keras.Input((256,), name="x"), keras.layers.Dense(512)])  # 0.5 MiB
    result = exportkit.export_saved_model(
        model,
        export_dir,
        verbose=False,
        overrides=[
            "pipeline.stages.verify=null",
            "+pipeline.stages.read={_target_: tests.test_checkpoint.ReadCheckpoint, after: write_checkpoint}",
        ],
        input_signature=[tf.TensorSpec([None, 256], tf.float32, name="x")],
    )
    bias, kernel = result.context.extra["values"]
    np.testing.assert_array_equal(kernel, model.layers[0].kernel.numpy())
    np.testing.assert_array_equal(bias, model.layers[0].bias.numpy())
    records = {r.name: r for r in result.records}
    assert list(records)[2:4] == ["write_checkpoint", "read"]
    assert records["write_checkpoint"].seconds >= 0.1  # up to the write's end, not the stage's return


def test_a_full_disk_under_the_checkpoint_is_one_line_and_leaves_nothing(tmp_path):
    """The checkpoint fails on its thread while write_graphs builds the graphs: the export says
    so in one line, as any full disk, and the staging directory goes once the write has ended."""
    import keras
    import tensorflow as tf

    import exportkit
    from exportkit.errors import FilesystemError

    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip() or done.returncode}")
    try:
        model = keras.Sequential([keras.Input((512,), name="x"), keras.layers.Dense(1024)])  # 2 MiB
        with pytest.raises(FilesystemError) as full:
            exportkit.export_saved_model(
                model,
                disk / "model",
                verbose=False,
                overrides=["pipeline.stages.verify=null"],
                input_signature=[tf.TensorSpec([None, 512], tf.float32, name="x")],
            )
        message = str(full.value)
        assert "\n" not in message and os.strerror(errno.ENOSPC) in message and f"free space on {disk}" in message
        assert os.listdir(disk) == []
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def test_ctrl_c_while_the_checkpoint_is_written_leaves_nothing(export_dir, monkeypatch):
    """Ctrl-C in write_graphs while the checkpoint's write still runs: the staging directory is
    removed only once that write has ended, so nothing is written into it afterwards."""
    import threading

    import keras
    import tensorflow as tf

    import exportkit
    from exportkit.errors import Interrupted
    from exportkit.stages import write_graphs

    go, written = threading.Event(), []

    def slow_write(self, prefix, *args, **kwargs):
        go.wait()  # until the interrupt is on its way
        os.makedirs(os.path.dirname(prefix), exist_ok=True)  # as TensorFlow's save does
        with open(f"{prefix}.index", "wb") as index:
            index.write(b"late")
        written.append(prefix)

    def interrupted(*args, **kwargs):
        threading.Timer(0.05, go.set).start()
        raise KeyboardInterrupt

    monkeypatch.setattr(tf.train.Checkpoint, "write", slow_write)
    monkeypatch.setattr(write_graphs, "save_meta_graph", interrupted)
    model = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(3)])
    with pytest.raises(Interrupted):
        exportkit.export_saved_model(model, export_dir, verbose=False)
    assert written and leftovers(export_dir) == []


@pytest.mark.parametrize("when", ["as_the_write_starts", "while_write_graphs_waits"])
def test_ctrl_c_during_the_checkpoint_write_leaves_nothing(export_dir, monkeypatch, when):
    """Ctrl-C as the checkpoint's write starts (the stage may not even have returned), or while
    write_graphs waits for it: the wait goes on until the write has ended, then the staging
    directory is removed and the export reports the signal."""
    import signal
    import threading

    import keras
    import tensorflow as tf

    import exportkit
    from exportkit.background import Background
    from exportkit.errors import Interrupted

    waiting, written = threading.Event(), []
    finish = Background.finish

    def announced_finish(self, reporter):
        if self._unfinished:  # write_graphs' wait for the write, not a stage's start
            waiting.set()
        return finish(self, reporter)

    if when == "as_the_write_starts":
        waiting.set()

    def interrupted_write(self, prefix, *args, **kwargs):
        waiting.wait()
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, delivered to the main thread in its wait
        go = threading.Event()
        threading.Timer(0.1, go.set).start()
        go.wait()
        os.makedirs(os.path.dirname(prefix), exist_ok=True)
        with open(f"{prefix}.index", "wb") as index:
            index.write(b"late")
        written.append(prefix)

    monkeypatch.setattr(Background, "finish", announced_finish)
    monkeypatch.setattr(tf.train.Checkpoint, "write", interrupted_write)
    model = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(3)])
    with pytest.raises(Interrupted):
        exportkit.export_saved_model(model, export_dir, verbose=False)
    assert written and leftovers(export_dir) == []
