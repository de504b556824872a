"""verify: reload the export in a fresh process and compare every signature, at every batch size,
with the source model. Any output beyond ``verify.atol``/``verify.rtol`` fails the export."""
import os
import subprocess
import sys
import shutil
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from exportkit.artifact.publish import verify_temp_dir
from exportkit.context import ExportContext
from exportkit.errors import StageSkipped, VerificationError
from exportkit.stages.base import Stage
from exportkit.stages.verify_worker import PEAK_RSS, decode, encode


class Verify(Stage):
    needs = ("reference", "signatures", "saved_model_file")
    adds = ("verify_report",)

    def __call__(self, ctx: ExportContext) -> ExportContext:
        cfg = ctx.cfg
        device = cfg.target.devices[0]
        missing = missing_devices(list(cfg.target.devices))
        if missing:
            reason = f"target {cfg.target.name}: device {', '.join(missing)} not present on this machine"
            ctx.verify_report = {"skipped": reason}
            raise StageSkipped(reason)
        inputs = make_inputs(ctx.signatures, list(cfg.verify.batch_sizes), cfg.seed, vocabulary(ctx.model))
        expected = {case: ctx.reference[case[0]](arrays) for case, arrays in inputs.items()}
        ctx.reporter.progress(f"reloading in a fresh process on {device}: {len(inputs)} cases "
                        f"({', '.join(ctx.signatures)} x batch {list(cfg.verify.batch_sizes)})")
        actual, peak_kib = run_worker(ctx.work_dir, inputs, device, list(cfg.custom_objects.values()),
                                      ctx.export_dir)
        ctx.extra["verify_worker"] = {"peak_rss_mib": peak_kib / 1024}
        ctx.verify_report, failures = compare(expected, actual, cfg.verify.atol, cfg.verify.rtol)
        for line in summarize(ctx.verify_report):
            ctx.reporter.progress(line)
        if failures:
            raise VerificationError(
                f"the reloaded SavedModel does not match the source model: {failures[0]}"
                + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else "")
                + "; nothing was written. If the model is stochastic at inference or the "
                  "tolerance is too tight, fix the model or raise verify.atol / verify.rtol")
        return ctx


def missing_devices(devices):
    import tensorflow as tf

    present = {(d.device_type, int(tf.DeviceSpec.from_string(d.name).device_index or 0))
               for d in tf.config.list_logical_devices()}
    missing = []
    for name in devices:
        spec = tf.DeviceSpec.from_string(name)
        if (spec.device_type, int(spec.device_index or 0)) not in present:
            missing.append(name)
    return missing


def make_inputs(signatures, batch_sizes, seed, words=()) -> Dict[Tuple[str, int], Dict[str, np.ndarray]]:
    """Seeded random inputs per (signature, batch size); a fixed leading dim is used as given.
    String inputs are drawn from ``words`` (the model's lookup vocabularies), else made up."""
    rng = np.random.default_rng(seed)
    cases = {}
    for key, specs in signatures.items():
        leading = {spec.shape[0] if spec.shape.rank else None for spec in specs.values()}
        sizes = batch_sizes if leading == {None} else [next(iter(leading)) or 1]
        for size in sizes:
            cases[(key, size)] = {name: random_array(rng, spec, size, words) for name, spec in specs.items()}
    return cases


def vocabulary(model) -> List[str]:
    """The string tokens of the model's lookup layers (``StringLookup``, ``TextVectorization``:
    whatever has ``get_vocabulary``), special tokens aside, in layer order; [] for other models."""
    words: List[str] = []
    for layer in getattr(model, "_flatten_layers", lambda: [])():
        get = getattr(layer, "get_vocabulary", None)
        if get is None:
            continue
        try:
            tokens = get(include_special_tokens=False)
        except Exception:  # a lookup layer not adapted yet, or another get_vocabulary
            continue
        words += [t for t in tokens if isinstance(t, str) and t and t not in words]
    return words


def random_strings(rng, shape, words) -> np.ndarray:
    """One or two words per element: vocabulary words (known tokens and, joined, unknown ones),
    or short made-up lowercase words when the model has no vocabulary."""
    pool = list(words) or ["".join(rng.choice(list("abcdefghij"), size=rng.integers(1, 6)))
                           for _ in range(16)]
    count = int(np.prod(shape))
    texts = [" ".join(rng.choice(pool, size=rng.integers(1, 3))) for _ in range(count)]
    return np.array([t.encode() for t in texts], dtype=object).astype(bytes).reshape(shape)


def random_array(rng, spec, batch: int, words=()) -> np.ndarray:
    dims = spec.shape.as_list() if spec.shape.rank is not None else []
    shape = [batch if i == 0 and d is None else (d if d is not None else 2) for i, d in enumerate(dims)]
    dtype = spec.dtype
    if dtype.name == "string":
        return random_strings(rng, shape, words)
    if dtype.is_bool:
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.is_integer:
        return rng.integers(0, 10, size=shape).astype(dtype.as_numpy_dtype)
    return rng.standard_normal(size=shape).astype(dtype.as_numpy_dtype)


def run_worker(saved_model: Path, inputs, device: str, custom_object_paths, export_dir: Path) -> Tuple[Dict, int]:
    """The worker's outputs per case, and its peak resident memory in KiB.

    Its files live beside ``export_dir`` (``.NAME.verify-PID-*``, removed here, or by the next
    run if this process is killed) and the worker dies with this process (``--parent``).
    """
    tmp = verify_temp_dir(export_dir)
    try:
        in_path, out_path = tmp / "inputs.npz", tmp / "outputs.npz"
        np.savez(in_path, **encode(inputs))
        modules = sorted({p.rpartition(".")[0] for p in custom_object_paths})
        command = [sys.executable, "-m", "exportkit.stages.verify_worker", str(saved_model), str(in_path),
                   str(out_path), "--device", device, "--parent", str(os.getpid())]
        command += [a for m in modules for a in ("--import", m)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
                   TF_CPP_MIN_LOG_LEVEL="2")
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-15:])
            raise VerificationError(f"the export could not be reloaded and run in a fresh process:\n{tail}")
        with np.load(out_path) as data:
            return decode(data), int(data[PEAK_RSS]) if PEAK_RSS in data.files else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def compare(expected, actual, atol: float, rtol: float):
    """Per signature and batch size: max abs and rel error per output, and the failures."""
    result, failures = {}, []
    for (key, size), want in expected.items():
        got = actual.get((key, size), {})
        case = result.setdefault(key, {})[str(size)] = {}
        if set(got) != set(want):
            failures.append(f"{key} at batch {size}: outputs {sorted(got)} != source {sorted(want)}")
            case["error"] = "output names differ"
            continue
        for name, w in want.items():
            g = got[name]
            if g.shape != w.shape:
                failures.append(f"{key}/{name} at batch {size}: shape {g.shape} != source {w.shape}")
                case[name] = {"error": f"shape {list(g.shape)} != {list(w.shape)}"}
                continue
            w64, g64 = w.astype(np.float64), g.astype(np.float64)
            diff = np.abs(g64 - w64)
            abs_err = float(diff.max()) if diff.size else 0.0
            rel_err = float((diff / np.maximum(np.abs(w64), 1e-12)).max()) if diff.size else 0.0
            ok = bool(np.allclose(g64, w64, atol=atol, rtol=rtol))
            case[name] = {"max_abs_error": abs_err, "max_rel_error": rel_err, "ok": ok}
            if not ok:
                failures.append(f"{key}/{name} at batch {size}: max abs error {abs_err:.3g} "
                                f"(atol {atol:g}, rtol {rtol:g})")
    return result, failures


def summarize(verify_report):
    for key, sizes in verify_report.items():
        errors = [o.get("max_abs_error", float("inf")) for case in sizes.values() for o in case.values()
                  if isinstance(o, dict)]
        worst = max(errors) if errors else 0.0
        yield f"{key}: batch sizes {', '.join(sizes)}: max abs error {worst:.3g}"
