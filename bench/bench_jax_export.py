"""exportkit vs orbax-export on the same JAX function, timed in one run.

    .venv/bin/python bench/bench_jax_export.py                   # 8 x 1024^2 float32 (32 MiB)
    .venv/bin/python bench/bench_jax_export.py --width 2048 --repeats 5 --params jax

Both export ``bench.jax_models.wide`` (``layers`` square matrices, tanh between) with a dynamic
batch, lowered for the CPU, without gradients, from the same params in memory:

* exportkit: ``exportkit.export_saved_model((apply_fn, params), ...)``, the Python API's JAX path
  (``model=jax_in_memory``): the whole JAX pipeline (build, jax2tf, trace, write_checkpoint,
  write_graphs, the manifest with every file's hash, the atomic publish), verify off;
* orbax-export: ``JaxModule(params, apply_fn)`` + ``ExportManager(...).save(dir)``.

Each is run once to warm up (imports, caches), then ``--repeats`` (15) times alternately; the medians
and their ratio (exportkit / orbax) are printed, with a check that both exports compute the same.
"""

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def export_with_exportkit(apply_fn, params, width, export_dir):
    import tensorflow as tf

    import exportkit

    # verbose=False: the pipeline's stage lines would drown the figures
    exportkit.export_saved_model(
        (apply_fn, params),
        export_dir,
        verbose=False,
        input_signature=[tf.TensorSpec([None, width], tf.float32, name="x")],
        overrides=["pipeline.stages.verify=null", "pipeline.stages.jax2tf.with_gradient=false"],
    )


def export_with_orbax(apply_fn, params, width, export_dir):
    import tensorflow as tf
    from orbax.export import ExportManager, JaxModule, ServingConfig

    module = JaxModule(
        params,
        apply_fn,
        input_polymorphic_shape=f"(batch, {width})",
        jax2tf_kwargs={"with_gradient": False, "native_serialization_platforms": ("cpu",)},
    )
    spec = tf.TensorSpec([None, width], tf.float32, name="x")
    ExportManager(module, [ServingConfig("serving_default", input_signature=[spec])]).save(str(export_dir))


def run(fn, apply_fn, params, width, root: Path, name: str) -> float:
    export_dir = root / name
    gc.collect()  # the previous export's garbage (either tool's) is freed outside the timed region
    start = time.perf_counter()
    fn(apply_fn, params, width, export_dir)
    return time.perf_counter() - start


def same_outputs(exportkit_dir: Path, orbax_dir: Path, width: int) -> float:
    import numpy as np
    import tensorflow as tf

    x = np.random.default_rng(0).standard_normal((3, width)).astype("float32")
    outputs = []
    for directory in (exportkit_dir, orbax_dir):
        loaded = tf.saved_model.load(str(directory))
        result = loaded.signatures["serving_default"](tf.constant(x))
        outputs.append(next(iter(result.values())).numpy())
    return float(np.abs(outputs[0] - outputs[1]).max())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=15)  # single short runs swing with the page cache
    parser.add_argument(
        "--params",
        choices=["numpy", "jax"],
        default="numpy",
        help="the params as NumPy arrays (copied into the variables) or CPU jax.Arrays (adopted)",
    )
    args = parser.parse_args()

    from bench.jax_models import wide

    apply_fn, params = wide(width=args.width, layers=args.layers)
    if args.params == "jax":
        import jax.numpy as jnp

        params = [jnp.asarray(p) for p in params]
    times = {"exportkit": [], "orbax": []}
    exporters = {"exportkit": export_with_exportkit, "orbax": export_with_orbax}
    with tempfile.TemporaryDirectory(prefix="exportkit-bench-") as tmp:
        root = Path(tmp)
        for name, fn in exporters.items():  # warm-up
            run(fn, apply_fn, params, args.width, root, f"warmup-{name}")
        for i in range(args.repeats):
            for name, fn in exporters.items():
                times[name].append(run(fn, apply_fn, params, args.width, root, f"{name}-{i}"))
        max_diff = same_outputs(root / "exportkit-0", root / "orbax-0", args.width)
    median = {name: statistics.median(t) for name, t in times.items()}
    figures = {
        "params_mib": args.layers * args.width * args.width * 4 / 2**20,
        "params": args.params,
        "repeats": args.repeats,
        "exportkit_s": [round(t, 3) for t in times["exportkit"]],
        "orbax_s": [round(t, 3) for t in times["orbax"]],
        "exportkit_median_s": round(median["exportkit"], 3),
        "orbax_median_s": round(median["orbax"], 3),
        "ratio_exportkit_over_orbax": round(median["exportkit"] / median["orbax"], 2),
        "max_abs_output_difference": max_diff,
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
