"""The checkpoint: TensorFlow's own save writes it; a failed write fails its stage and leaves
nothing; a checkpoint that misses a table the graphs capture is refused."""

import os

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
