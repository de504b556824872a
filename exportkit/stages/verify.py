"""verify: reload the export in a fresh process and compare every signature, on every case (batch
size x probed dynamic dimensions), with the source model; and, for a compiled model, the train and
eval graphs with the source's own training API. Any output beyond its tolerance
(``verify.atol``/``verify.rtol``, ``verify.tolerances.<output>``), or a top-1 class that differs
(``verify.top1``), fails the export. The cases' inputs (``verify_inputs``) and the source's
outputs are kept under ``assets.extra/`` so the export can be verified again without the source
(``exportkit verify PATH``). The worker also times each serve signature per case (``verify.latency``:
load, first call, warm p50/p90/p99), recorded as ``verification.latency.<device>`` in the manifest."""

import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from exportkit.artifact.leftovers import verify_temp_dir
from exportkit.context import ExportContext
from exportkit.errors import ConfigError, ExportkitError, VerificationError
from exportkit.stages.base import Stage
from exportkit.stages.verifier import Verifier, modules_of
from exportkit.stages.verify_inputs import (  # noqa: F401
    flatten,
    jax_symbols,
    parse_values,
    portable,
    save_npz,
    serve_cases,
    source_failure,
    step_case,
)
from exportkit.stages.verify_worker import PEAK_RSS, WARMUP_RECORDS, WARMUP_SECONDS, WORKER_JSON, decode, encode

# What verify keeps inside the export (under assets.extra/) to verify it again later.
KEPT_DIR, INDEX_FILE = "assets.extra", "verify.json"
INPUTS_FILE, OUTPUTS_FILE = "verify_inputs.npz", "verify_outputs.npz"
FORMAT = "exportkit-verify/1"
WORKER = "worker"  # run_worker's facts: what the worker measured (device, GPUs, load times, latency)


class Verify(Stage):
    needs = ("reference", "signatures", "saved_model_file")
    adds = ("verify_report",)
    reads_variables = False  # the export is loaded from disk in the verification process

    def __call__(self, ctx: ExportContext) -> ExportContext:
        cfg = ctx.cfg
        run_on, not_verified = verify_devices(list(cfg.target.devices))
        verify = cfg.verify
        steps = (
            []
            if not verify.steps or cfg.serving_only
            else [
                (tag, key, fn)
                for tag, fn in ctx.training_reference.items()
                if tag in ctx.graphs
                for key in ctx.graphs[tag].functions
            ]
        )
        known = [n for specs in ctx.signatures.values() for n in specs]
        parse_values(
            verify["values"], known + [n for tag, key, _ in steps for n in step_specs(ctx.graphs[tag].functions[key])]
        )
        inputs = serve_cases(ctx.signatures, verify, cfg.seed, ctx.input_hints, symbols_of(cfg))
        graph_of = {key: "serve" for key in ctx.signatures}
        expected = {
            case: run_reference(ctx.reference[case[0]], case, arrays, ctx.signatures[case[0]], verify, ctx.input_hints)
            for case, arrays in inputs.items()
        }
        for tag, key, reference in steps:
            specs = step_specs(ctx.graphs[tag].functions[key])
            case, arrays = step_case(key, specs, inputs, expected, verify, cfg.seed, ctx.signatures)
            expected[case] = run_reference(reference, case, arrays, specs, verify, {}, tag)
            inputs[case], graph_of[key] = arrays, tag
        if not inputs:
            raise ConfigError(
                f"verify would run no case for signatures {sorted(ctx.signatures)} at "
                f"verify.batch_sizes={list(verify.batch_sizes)}; give batch sizes to verify at"
            )
        tolerances, top1 = checks(verify, expected)
        failures, latency, worker = [], {}, {}  # worker: the verify process's pid and its peak memory
        for device in run_on:
            ctx.reporter.progress(
                f"reloading in a fresh process on {device}: {len(inputs)} cases ("
                + "; ".join(f"{key}: {' '.join(label for k, label in inputs if k == key)}" for key in graph_of)
                + ")"
            )
            facts = {}  # the warmup file's replay (exportkit.serving), load times and latency
            actual, peak_kib = run_worker(
                ctx.work_dir,
                inputs,
                graph_of,
                device,
                list(cfg.custom_objects.values()),
                ctx.export_dir,
                facts,
                latency=latency_settings(verify),
                verifier=ctx.verifier,
                timeout=verify.get("timeout_s", 600.0),
                worker=worker,
            )
            measured = facts.pop(WORKER, {})
            replay = facts
            ctx.extra["verify_worker"] = {"peak_rss_mib": peak_kib / 1024, **replay}
            if measured.get("latency"):
                latency[device] = latency_record(measured)
                for line in latency_lines(latency[device]):
                    ctx.reporter.progress(line)
            if replay:
                ctx.reporter.progress(
                    f"warmup: {replay[WARMUP_RECORDS]} requests replayed through the TF1 "
                    f"session loader (TF Serving's load path) in {replay[WARMUP_SECONDS]:.2f}s"
                )
            report, failed = compare(
                expected,
                actual,
                tolerances,
                top1,
                partial=[k for k, tag in graph_of.items() if tag != "serve"],
                ties=(verify.atol, verify.rtol),
            )
            ctx.verify_report = ctx.verify_report or report  # the first device's; failures from all
            failures += [f"on {device}: {f}" if len(run_on) > 1 else f for f in failed]
            for line in summarize(report):
                ctx.reporter.progress(line)
        for device, reason in not_verified.items():
            ctx.reporter.progress(f"{device}: not verified ({reason})")
        if failures:
            raise VerificationError(
                f"the reloaded SavedModel does not match the source model: {failures[0]}"
                + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else "")
                + "; nothing was written. If the model is stochastic at inference or the "
                "tolerance is too tight, fix the model or raise verify.atol / verify.rtol "
                "(or verify.tolerances.OUTPUT)"
            )
        keep(ctx.work_dir / KEPT_DIR, inputs, expected, graph_of, tolerances, top1, bool(verify.inputs))
        ctx.extra["verification"] = {
            "verified": True,
            "cases": len(inputs) * len(run_on),
            "devices_verified": run_on,
            "devices_not_verified": not_verified,
            "worker": worker,
        }
        if latency:
            ctx.extra["verification"]["latency"] = latency
        return ctx


def verify_devices(devices: List[str]) -> Tuple[List[str], Dict[str, str]]:
    """The target devices verify runs on, and those it cannot run on here with the reason.

    The graphs are device-agnostic, so a target device this machine lacks (``target=gpu``
    without a GPU) does not stop verification: it runs on the target devices that exist, or
    on ``/CPU:0`` when none does, and the missing ones are recorded as not verified.
    """
    missing = missing_devices(devices)
    present = [d for d in devices if d not in missing]
    return present or ["/CPU:0"], {d: "not present on this machine" for d in missing}


def require_verified(ctx: ExportContext) -> Dict[str, Any]:
    """Before publishing: the export's verification state (also on the manifest and in the
    summary). An export in which no verify case ran is refused unless the user said so:
    verification disabled (``pipeline.stages.verify=null``) or ``verify.allow_unverified=true``.
    """
    state = ctx.extra.get("verification")
    if not (state and state.get("cases")):
        disabled = ctx.cfg.pipeline.stages.get("verify") is None
        verify = [r for r in ctx.records if r.name == "verify"]
        reason = (
            "verification is disabled (pipeline.stages.verify=null)"
            if disabled
            else f"the verify stage {verify[-1].status}: {verify[-1].detail}"
            if verify and verify[-1].detail
            else "no verify stage ran"
        )
        state = {"verified": False, "cases": 0, "reason": reason}
        if not disabled and not ctx.cfg.verify.get("allow_unverified", False):
            raise VerificationError(
                f"no verify case ran ({reason}); nothing was published. Make verify "
                f"run, or publish it unverified with verify.allow_unverified=true"
            )
    for record in ctx.records:
        if record.name == "verify" and record.status == "ok" and state.get("devices_not_verified"):
            record.detail = (
                f"verified on {', '.join(state['devices_verified'])}; not verified on "
                f"{', '.join(state['devices_not_verified'])} (not present on this machine)"
            )
    ctx.extra["verification"] = state
    note = getattr(ctx.reporter, "verification", None)
    if note is not None:
        note(state)
    return state


def symbols_of(cfg):
    """The jax2tf stage's symbols per input, so ``verify.dims.<symbol>`` can name them."""
    node = (cfg.pipeline.stages or {}).get("jax2tf") if "pipeline" in cfg else None
    return jax_symbols(node.get("polymorphic_shapes") if node else None)


def step_specs(function) -> Dict[str, Any]:
    """A traced step's named input specs, as its SignatureDef takes them."""
    args, kwargs = function.structured_input_signature
    return {**{spec.name: spec for spec in args}, **dict(kwargs)}


def run_reference(reference, case, arrays, specs, verify, hints, tag="serve") -> Dict[str, np.ndarray]:
    """The source model's outputs; a model that fails on its inputs is a user's error naming the
    input and the key to set, not a traceback."""
    try:
        return {name: portable(value) for name, value in reference(dict(arrays)).items()}
    except ExportkitError:
        raise
    except Exception as error:  # noqa: BLE001 - the model's own failure, reported in one line
        raise VerificationError(source_failure(case, arrays, error, specs, verify, hints, tag)) from error


def checks(verify, expected):
    """Per output name ``(atol, rtol)``, and the outputs whose top-1 class is compared; an output
    named in ``verify.tolerances`` or ``verify.top1`` that no graph has is a ``ConfigError``."""
    names = {n for outputs in expected.values() for n in outputs}
    bare = {n.split("/", 1)[1]: n for n in names if n.startswith("predictions/")}
    for key, named in [
        ("tolerances", list(verify.tolerances)),
        ("top1", [] if isinstance(verify.top1, bool) else list(verify.top1)),
    ]:
        for name in named:
            if name not in names and name not in bare:
                raise ConfigError(
                    f"verify.{key} names {name!r}, which no verified graph outputs; the outputs "
                    f"are {', '.join(sorted(names))}"
                )
    tolerances = {}
    for name in names:
        own = verify.tolerances.get(name) or verify.tolerances.get(name.split("/", 1)[-1]) or {}
        tolerances[name] = (
            own.get("atol") if own.get("atol") is not None else verify.atol,
            own.get("rtol") if own.get("rtol") is not None else verify.rtol,
        )
    if verify.top1 is True:
        top1 = {
            n
            for n in names
            if any(
                np.ndim(o.get(n)) >= 1 and np.shape(o[n])[-1] > 1 and np.asarray(o[n]).dtype.kind == "f"
                for o in expected.values()
                if n in o
            )
        }
    else:
        wanted = set(verify.top1 or [])
        top1 = {n for n in names if n in wanted or n.split("/", 1)[-1] in wanted}
    return tolerances, top1


def missing_devices(devices):
    import tensorflow as tf

    present = {
        (d.device_type, int(tf.DeviceSpec.from_string(d.name).device_index or 0))
        for d in tf.config.list_logical_devices()
    }
    missing = []
    for name in devices:
        spec = tf.DeviceSpec.from_string(name)
        if (spec.device_type, int(spec.device_index or 0)) not in present:
            missing.append(name)
    return missing


def run_worker(
    saved_model: Path,
    inputs,
    graph_of,
    device: str,
    custom_object_paths,
    export_dir: Path,
    facts: Dict = None,
    latency: Dict = None,
    temp_dir: Path = None,
    *,
    verifier: Optional[Verifier] = None,
    timeout: float = 600.0,
    worker: Optional[Dict] = None,
) -> Tuple[Dict, int]:
    """The worker's outputs per case, and its peak resident memory in KiB. ``facts`` gets the
    warmup records' count and replay seconds when the export has them, and ``worker``: the device
    it ran on (``device="auto"``: the first GPU, else /CPU:0), the GPUs it saw, each graph's load
    seconds and, with ``latency`` (``{"runs", "budget_s"}``), each serve case's latency. The
    ``worker`` dict gets the verify process's pid, when it started and was ready, the requests it
    has served and its peak memory.

    ``verifier`` is the verification process the pipeline started early
    (``exportkit.stages.verifier``); without one, a worker is started here and ended after. Its
    files live in ``temp_dir`` (made by the caller), else beside ``export_dir``
    (``.NAME.verify-PID-*``, removed here, or by the next run if this process is killed); the
    worker dies with this process (``--parent``).
    """
    own = verifier is None
    tmp = Path(temp_dir) if temp_dir is not None else verify_temp_dir(export_dir)
    try:
        in_path, out_path = tmp / "inputs.npz", tmp / "outputs.npz"
        np.savez(in_path, **encode(inputs))
        modules = modules_of(custom_object_paths)
        verifier = verifier or Verifier(modules)
        request = {
            "saved_model": str(saved_model),
            "inputs": str(in_path),
            "outputs": str(out_path),
            "device": device,
            "imports": modules,
            "latency": latency or None,
            "graph": {key: tag for key, tag in graph_of.items() if tag != "serve"},
        }
        reply = verifier.run(request, timeout)
        with np.load(out_path) as data:
            if facts is not None:
                facts.update({k: data[k].item() for k in (WARMUP_RECORDS, WARMUP_SECONDS) if k in data.files})
                if WORKER_JSON in data.files:
                    facts[WORKER] = json.loads(data[WORKER_JSON].item())
            peak = int(data[PEAK_RSS]) if PEAK_RSS in data.files else 0
            if worker is not None:
                worker.update(
                    pid=reply.get("pid"),
                    started_at=verifier.started_at,
                    ready_at=reply.get("ready_at"),
                    served=reply.get("served"),
                    peak_rss_mib=round(peak / 1024, 1),
                )
            return decode(data), peak
    finally:
        if own and verifier is not None:
            verifier.close()
        if temp_dir is None:
            shutil.rmtree(tmp, ignore_errors=True)


def latency_settings(verify) -> Dict[str, Any]:
    """``verify.latency`` as ``run_worker`` takes it; None when turned off."""
    latency = verify.get("latency")
    if latency is None or not latency.enabled:
        return None
    return {"runs": int(latency.runs), "budget_s": float(latency.budget_s)}


def latency_record(measured: Dict[str, Any]) -> Dict[str, Any]:
    """What the manifest keeps of the worker's measurements (``verification.latency.<device>``):
    ``load_s`` per graph, and per serve signature and case ``{batch, first_ms, p50_ms, p90_ms,
    p99_ms, runs}``, rounded to microseconds."""
    return {
        "load_s": {tag: round(s, 4) for tag, s in measured.get("load_s", {}).items()},
        "signatures": {
            key: {
                label: {k: round(v, 3) if isinstance(v, float) else v for k, v in case.items()}
                for label, case in cases.items()
            }
            for key, cases in measured["latency"].items()
        },
    }


def latency_lines(record: Dict[str, Any]) -> List[str]:
    """One line per signature: ``latency serving_default: load 0.12s; b1 first 3.1 ms, warm p50 0.21 /
    p90 0.25 / p99 0.31 ms (20 runs); b3 ...``."""
    load = record.get("load_s", {}).get("serve")
    lines = []
    for key, cases in record["signatures"].items():
        parts = [
            f"{'b' + label if label.isdigit() else label} first {c['first_ms']:.3g} ms, warm p50 "
            f"{c['p50_ms']:.3g} / p90 {c['p90_ms']:.3g} / p99 {c['p99_ms']:.3g} ms ({c['runs']} runs)"
            for label, c in cases.items()
        ]
        lines.append(f"latency {key}: " + (f"load {load:.2f}s; " if load is not None else "") + "; ".join(parts))
    return lines


def compare(expected, actual, tolerances, top1=(), partial=(), ties=(1e-5, 1e-5)):
    """Per signature and case: max abs and rel error per output (and top-1 agreement where
    asked), and the failures. A signature in ``partial`` (a train/eval step) may output more
    than its reference gives (its metrics). Strings and NaNs must match exactly. A row whose
    top two source values lie within ``ties`` (verify.atol, verify.rtol: not an output's own,
    looser tolerance) has no top-1 class to agree on."""
    result, failures = {}, []
    for (key, label), want in expected.items():
        got = actual.get((key, label), {})
        case = result.setdefault(key, {})[label] = {}
        if not set(want) <= set(got) or (set(got) != set(want) and key not in partial):
            failures.append(f"{key} at batch {label}: outputs {sorted(got)} != source {sorted(want)}")
            case["error"] = "output names differ"
            continue
        for name, w in want.items():
            g, (atol, rtol) = got[name], tolerances.get(name, (0.0, 0.0))
            where = f"{key}/{name} at batch {label}"
            if g.shape != w.shape:
                failures.append(f"{where}: shape {g.shape} != source {w.shape}")
                case[name] = {"error": f"shape {list(g.shape)} != {list(w.shape)}"}
                continue
            if w.dtype.kind in "SUO" or g.dtype.kind in "SUO":
                ok = bool(np.array_equal(g, w))
                case[name] = {
                    "max_abs_error": 0.0 if ok else float("inf"),
                    "max_rel_error": 0.0 if ok else float("inf"),
                    "ok": ok,
                }
                if not ok:
                    failures.append(f"{where}: strings differ")
                continue
            w64, g64 = w.astype(np.float64), g.astype(np.float64)
            diff = np.where(np.isnan(w64) & np.isnan(g64), 0.0, np.abs(g64 - w64))
            abs_err = float(diff.max()) if diff.size else 0.0
            rel_err = float((diff / np.maximum(np.abs(np.nan_to_num(w64)), 1e-12)).max()) if diff.size else 0.0
            ok = bool(np.allclose(g64, w64, atol=atol, rtol=rtol, equal_nan=True))
            case[name] = {"max_abs_error": abs_err, "max_rel_error": rel_err, "ok": ok}
            if not ok:
                failures.append(f"{where}: max abs error {abs_err:.3g} (atol {atol:g}, rtol {rtol:g})")
            if name in top1 and w.ndim >= 1 and w.shape[-1] > 1:
                agreement, rows = top1_agreement(w64, g64, *ties)
                case[name].update(top1_agreement=agreement, top1_rows=rows)
                if agreement < 1.0:
                    case[name]["ok"] = False
                    failures.append(f"{where}: top-1 class agrees on {agreement:.0%} of {rows} rows")
    return result, failures


def top1_agreement(want, got, atol: float, rtol: float) -> Tuple[float, int]:
    """The share of rows whose arg-max agrees, among rows where the source's top class leads the
    runner-up by more than the tolerance (a tie within tolerance has no defined top class)."""
    want2, got2 = want.reshape(-1, want.shape[-1]), got.reshape(-1, got.shape[-1])
    top2 = np.sort(want2, axis=-1)[:, -2:]
    decisive = (top2[:, 1] - top2[:, 0]) > atol + rtol * np.abs(top2[:, 1])
    if not decisive.any():
        return 1.0, 0
    agree = np.argmax(want2, -1)[decisive] == np.argmax(got2, -1)[decisive]
    return float(agree.mean()), int(decisive.sum())


def summarize(verify_report):
    for key, cases in verify_report.items():
        errors = [
            o.get("max_abs_error", float("inf"))
            for case in cases.values()
            for o in case.values()
            if isinstance(o, dict)
        ]
        worst = max(errors) if errors else 0.0
        yield f"{key}: {len(cases)} cases ({', '.join(cases)}): max abs error {worst:.3g}"


def keep(directory: Path, inputs, expected, graph_of, tolerances, top1, real: bool) -> None:
    """``verify_inputs.npz``, ``verify_outputs.npz`` and ``verify.json`` under ``assets.extra/``:
    enough to verify the export again without the source model (see the README)."""
    directory.mkdir(parents=True, exist_ok=True)
    save_npz(directory / INPUTS_FILE, flatten(inputs))
    save_npz(directory / OUTPUTS_FILE, flatten(expected))
    names = sorted({n for outputs in expected.values() for n in outputs})
    index = {
        "format": FORMAT,
        "inputs": INPUTS_FILE,
        "outputs": OUTPUTS_FILE,
        "source": "verify.inputs" if real else "generated",
        "cases": [
            {
                "graph": graph_of[key],
                "signature": key,
                "case": label,
                "inputs": list(inputs[(key, label)]),
                "outputs": list(outputs),
            }
            for (key, label), outputs in expected.items()
        ],
        "tolerances": {n: {"atol": tolerances[n][0], "rtol": tolerances[n][1]} for n in names},
        "top1": sorted(top1),
    }
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=1) + "\n")
