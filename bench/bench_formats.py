"""Every deployment target, whole processes: exportkit's verified SavedModel + LiteRT + ONNX +
OpenVINO export against Keras' own four unverified exports of the same model, alternating.

- exportkit: ``python -m exportkit model=keras model.build._target_=bench.bench_formats.model
  '+formats=[litert,onnx,openvino]'`` (the SavedModel and the three artifacts, each verified in the
  fresh process with its own runtime, published atomically with the manifest);
- Keras: one script building the same model and calling ``model.export(path)`` and
  ``model.export(path, format=...)`` for ``litert``, ``onnx`` and ``openvino``, nothing verified.

The model is keras.applications' MobileNetV3Small (``weights=None``, 96x96x3, 10 classes, the
same seed in both). Prints the median wall time of each over ``--repeats`` alternating runs, the
ratio (target: at most 1.3x) and the commands.

    .venv/bin/python bench/bench_formats.py [--repeats 3]
"""

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
print = functools.partial(print, flush=True)

KERAS_SCRIPT = """\
import sys
from bench.bench_formats import model
built, out = model(), sys.argv[1]
built.export(out + "/saved_model", verbose=False)
for name, path in (("litert", "model.tflite"), ("onnx", "model.onnx"), ("openvino", "model.xml")):
    built.export(out + "/" + path, format=name, verbose=False)
"""


def model():
    """MobileNetV3Small without weights (no download), 96x96x3 -> 10 classes, seeded."""
    import keras

    keras.utils.set_random_seed(0)
    return keras.applications.MobileNetV3Small(
        input_shape=(96, 96, 3), weights=None, classes=10, include_preprocessing=False
    )


def run(command, env) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(
            f"failed ({done.returncode}): {' '.join(command)}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    env.pop("HYDRA_FULL_ERROR", None)
    times = {"exportkit": [], "keras": []}
    with tempfile.TemporaryDirectory(prefix="exportkit-bench-formats-") as tmp:
        root = Path(tmp)

        def commands(i):
            return {
                "exportkit": [
                    sys.executable,
                    "-m",
                    "exportkit",
                    "model=keras",
                    "model.build._target_=bench.bench_formats.model",
                    "+formats=[litert,onnx,openvino]",
                    f"export_dir={root / f'exportkit-{i}'}",
                    f"hydra.run.dir={root / f'run-{i}'}",
                ],
                "keras": [sys.executable, "-c", KERAS_SCRIPT, str(root / f"keras-{i}")],
            }

        for command in commands("warmup").values():  # imports into the page cache, pip's .pyc
            run(command, env)
        for i in range(args.repeats):
            for name, command in commands(i).items():
                times[name].append(run(command, env))
                shutil.rmtree(root / f"{name}-{i}", ignore_errors=True)
        shown = {
            name: " ".join("python" if c == sys.executable else c for c in cmd) for name, cmd in commands("N").items()
        }
    median = {name: statistics.median(t) for name, t in times.items()}
    print(
        json.dumps(
            {
                "model": "MobileNetV3Small(weights=None, 96x96x3, 10 classes)",
                "repeats": args.repeats,
                "exportkit_s": [round(t, 2) for t in times["exportkit"]],
                "keras_s": [round(t, 2) for t in times["keras"]],
                "exportkit_median_s": round(median["exportkit"], 2),
                "keras_median_s": round(median["keras"], 2),
                "ratio_exportkit_verified_over_keras_unverified": round(median["exportkit"] / median["keras"], 2),
                "commands": shown,
                "uptime": os.getloadavg(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
