"""Export (and verify) a JAX model with more than 2 GiB of params; report time and peak memory.

    .venv/bin/python bench/bench_jax_large.py                 # 9 x 8192^2 float32 = 2.25 GiB
    .venv/bin/python bench/bench_jax_large.py --layers 3      # a quicker 0.75 GiB run
    .venv/bin/python bench/bench_jax_large.py --from-npz      # params read from a .npz file

Without ``--from-npz`` the factory makes the params in the exporting process (NumPy arrays, copied
once into the variables); with it a separate process first saves them to a ``.npz`` and the
export reads them from there (``model.params_path``, shapes from ``bench.jax_models.wide_template``).

Peak memory is the exporting process's peak RSS (``ru_maxrss``) and, separately, the verify
worker's (its own ``VmHWM``, which the verify stage records), each also as a multiple of the params' bytes. Prints one JSON object at the end
(``--json PATH`` writes it too).
"""

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def rss_mib(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def save_params_in_another_process(path: Path, width: int, layers: int) -> None:
    """The params as a .npz, made in a separate process so they do not count in this one's peak."""
    import subprocess

    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from tests.jax_models import wide; "
        "from exportkit.jax.params import save_params; "
        "save_params(sys.argv[2], wide(width=int(sys.argv[3]), layers=int(sys.argv[4]))[1])"
    )
    subprocess.run([sys.executable, "-c", code, str(ROOT), str(path), str(width), str(layers)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=8192)
    parser.add_argument("--layers", type=int, default=9)
    parser.add_argument("--no-verify", action="store_true")
    parser.add_argument("--from-npz", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    # Import the frameworks first, so the baseline is what an export costs before any params.
    import jax  # noqa: F401
    import tensorflow as tf  # noqa: F401

    import exportkit.jax.convert  # noqa: F401  (what the jax2tf stage imports)
    import exportkit.jax.variables  # noqa: F401
    from exportkit import pipeline
    from exportkit.composition import compose

    baseline = rss_mib()
    param_bytes = args.layers * args.width * args.width * 4
    with tempfile.TemporaryDirectory(prefix="exportkit-large-", dir=os.environ.get("BENCH_TMP")) as tmp:
        export_dir = Path(tmp) / "model"
        source = ["model.build._target_=bench.jax_models.wide"]
        if args.from_npz:
            params_path = Path(tmp) / "params.npz"
            save_params_in_another_process(params_path, args.width, args.layers)
            source = ["model.build._target_=bench.jax_models.wide_template", f"model.params_path={params_path}"]
        start = time.perf_counter()
        result = pipeline.run(
            pipeline.resolved(
                compose(
                    [
                        "model=jax",
                        *source,
                        f"+model.build.width={args.width}",
                        f"+model.build.layers={args.layers}",
                        f"export_dir={export_dir}",
                        "verify.batch_sizes=[1,3]",
                        f"+signatures.serving_default={{inputs: {{x: {{shape: [null, {args.width}], dtype: float32}}}}}}",
                        *(["pipeline.stages.verify=null"] if args.no_verify else []),
                    ]
                )
            )
        )
        seconds = time.perf_counter() - start
        pb = (export_dir / "saved_model.pb").stat().st_size
        variables = sum(p.stat().st_size for p in (export_dir / "variables").iterdir())
        peak = rss_mib()
        worker = result.context.verification.worker.get("peak_rss_mib", 0.0)
        figures = {
            "param_gib": round(param_bytes / 2**30, 3),
            "params_from": "npz" if args.from_npz else "factory",
            "seconds_total": round(seconds, 1),
            "stages": {r.name: [r.status, round(r.seconds, 1)] for r in result.records},
            "saved_model_pb_bytes": pb,
            "variables_gib": round(variables / 2**30, 3),
            "baseline_rss_mib": round(baseline),
            "peak_rss_mib": round(peak),
            "peak_over_params": round(peak * 2**20 / param_bytes, 2),
            "peak_minus_baseline_over_params": round((peak - baseline) * 2**20 / param_bytes, 2),
            "verify_worker_peak_rss_mib": round(worker),
            "verify_worker_over_params": round(worker * 2**20 / param_bytes, 2),
            "verify": "off" if args.no_verify else result.manifest["verify"],
        }
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
