"""Serving-only export of one Keras model: exportkit (verify off) vs Keras 3's ``model.export()``.

Both run in this process, alternating, on the same model; the ratio of medians is printed.

    .venv/bin/python bench/bench_keras_export.py [--repeats 7] [--units 512]
"""

import argparse
import contextlib
import io
import os
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build(units: int):
    import keras

    inputs = keras.Input((256,), name="features")
    x = inputs
    for i in range(4):
        x = keras.layers.Dense(units, activation="relu", name=f"dense_{i}")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="bench_mlp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--units", type=int, default=512)
    args = parser.parse_args()

    import logging

    import exportkit

    logging.getLogger("absl").setLevel(logging.ERROR)
    model = build(args.units)
    root = tempfile.mkdtemp(prefix="exportkit-bench-")

    def with_exportkit(path):  # verbose=False: the progress lines are not the point here
        exportkit.export_saved_model(
            model, path, serving_only=True, verbose=False, overrides=["pipeline.stages.verify=null"]
        )

    def with_keras(path):
        with contextlib.redirect_stdout(io.StringIO()):
            model.export(path, format="tf_saved_model", verbose=False)

    times = {"exportkit": [], "keras": []}
    tools = {"exportkit": with_exportkit, "keras": with_keras}
    for name, fn in tools.items():  # warm-up: first traces, imports
        fn(os.path.join(root, f"warm-{name}"))
    for i in range(args.repeats):
        for name, fn in tools.items():
            path = os.path.join(root, f"{name}-{i}")
            start = time.perf_counter()
            fn(path)
            times[name].append(time.perf_counter() - start)
            shutil.rmtree(path)
    shutil.rmtree(root, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    params = model.count_params()
    print(f"model: 4x Dense({args.units}) MLP, {params:,} parameters; {args.repeats} alternating runs each")
    for name in tools:
        print(f"  {name:<10} median {med[name]:.3f}s  (min {min(times[name]):.3f}s, max {max(times[name]):.3f}s)")
    print(f"ratio exportkit / keras model.export(): {med['exportkit'] / med['keras']:.2f}x")


if __name__ == "__main__":
    main()
