"""``layout=tf1``: saved_model.pb of a three-graph (serve/train/eval) export vs the three single-graph exports
added up, and vs three copies of an all-in-one graph (what one MetaGraphDef per tag holding
every function would weigh).

    .venv/bin/python bench/pb_sizes.py
"""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build():
    import keras

    image = keras.Input((32,), name="image")
    meta = keras.Input((8,), name="meta")
    x = keras.layers.Concatenate()([image, meta])
    for i in range(3):
        x = keras.layers.Dense(64, activation="relu", name=f"dense_{i}")(x)
    model = keras.Model(
        {"image": image, "meta": meta},
        {
            "score": keras.layers.Dense(1, name="score")(x),
            "label": keras.layers.Dense(5, activation="softmax", name="label")(x),
        },
    )
    model.compile(
        optimizer="adam", loss={"score": "mse", "label": "categorical_crossentropy"}, metrics={"label": ["accuracy"]}
    )
    return model


def main() -> None:
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    import exportkit
    from exportkit.variables import trackable_root

    model = build()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "full"
        result = exportkit.export_saved_model(
            model, path, verbose=False, overrides=["pipeline.stages.verify=null", "layout=tf1"]
        )
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString((path / "saved_model.pb").read_bytes())
        full = (path / "saved_model.pb").stat().st_size
        singles = {
            tuple(m.meta_info_def.tags)[0]: len(
                saved_model_pb2.SavedModel(saved_model_schema_version=1, meta_graphs=[m]).SerializeToString()
            )
            for m in proto.meta_graphs
        }
        ctx = result.context
        root = trackable_root(ctx.variables, list(ctx.variables))
        every = {key: fn for graph in ctx.graphs.values() for key, fn in graph.functions.items()}
        tf.saved_model.save(root, str(Path(tmp) / "all_in_one"), signatures=every)
        all_in_one = (Path(tmp) / "all_in_one" / "saved_model.pb").stat().st_size
    print(f"three-graph export saved_model.pb: {full:,} bytes")
    print(
        "single-graph exports: "
        + ", ".join(f"{t} {n:,}" for t, n in singles.items())
        + f"; added up {sum(singles.values()):,} bytes"
    )
    print(f"one graph holding every function: {all_in_one:,} bytes; three copies {3 * all_in_one:,} bytes")
    print(
        f"ratio three-graph / single-graph sum: {full / sum(singles.values()):.3f}; "
        f"three-graph / three copies: {full / (3 * all_in_one):.3f}"
    )


if __name__ == "__main__":
    main()
