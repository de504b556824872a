"""Verifying the export being made: every signature, on every case (batch size x probed dynamic
dimensions), reloaded in the fresh verification process and compared with the source model; for a
compiled model, the train and eval graphs with the source's own training API too. Any output
beyond its tolerance, or a top-1 class that differs, is a ``VerificationError``. The cases are kept
inside the export (``exportkit.verification.kept``) so it can be verified again without the source.

The verify stage (``exportkit.stages.verify``) calls ``verify_staged``; the runner calls
``require_verified`` before it publishes.
"""

import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from exportkit.artifact.leftovers import verify_temp_dir
from exportkit.context import ExportContext, Verification
from exportkit.errors import ConfigError, ExportkitError, VerificationError
from exportkit.verification import compare, kept, latency
from exportkit.verification.cases import (
    parse_values,
    serve_cases,
    source_failure,
    step_case,
    step_specs,
    symbols_of,
)
from exportkit.verification.process import modules_of, run_cases
from exportkit.verification.protocol import portable


def verify_staged(ctx: ExportContext) -> None:
    """Verify the staged export in ``ctx.run.work_dir`` against ``ctx.model.reference`` (and
    ``ctx.training.reference``) on every target device present; record the state and keep the cases."""
    cfg = ctx.run.cfg
    run_on, not_verified = verify_devices(list(cfg.target.devices))
    verify = cfg.verify
    steps = (
        []
        if not verify.steps or cfg.serving_only or ctx.training is None
        else [
            (tag, key, fn)
            for tag, fn in ctx.training.reference.items()
            if tag in ctx.graphs
            for key in ctx.graphs[tag].functions
        ]
    )
    known = [n for specs in ctx.model.signatures.values() for n in specs]
    parse_values(
        verify["values"], known + [n for tag, key, _ in steps for n in step_specs(ctx.graphs[tag].functions[key])]
    )
    inputs = serve_cases(ctx.model.signatures, verify, cfg.seed, ctx.model.input_hints, symbols_of(cfg))
    graph_of = {key: "serve" for key in ctx.model.signatures}
    expected = {
        case: run_reference(
            ctx.model.reference[case[0]], case, arrays, ctx.model.signatures[case[0]], verify, ctx.model.input_hints
        )
        for case, arrays in inputs.items()
    }
    for tag, key, reference in steps:
        specs = step_specs(ctx.graphs[tag].functions[key])
        case, arrays = step_case(key, specs, inputs, expected, verify, cfg.seed, ctx.model.signatures)
        expected[case] = run_reference(reference, case, arrays, specs, verify, {}, tag)
        inputs[case], graph_of[key] = arrays, tag
    if not inputs:
        raise ConfigError(
            f"verify would run no case for signatures {sorted(ctx.model.signatures)} at "
            f"verify.batch_sizes={list(verify.batch_sizes)}; give batch sizes to verify at"
        )
    tolerances, top1 = compare.checks(verify, expected)
    failures: List[str] = []
    latencies: Dict[str, Any] = {}
    worker: Dict[str, Any] = {}  # the verify process's pid and its peak memory
    warmup_replayed: Optional[int] = None
    imports = sorted({*modules_of(cfg.custom_objects.values()), *ctx.op_libraries, *verify.imports})
    for device in run_on:
        ctx.run.reporter.progress(
            f"reloading in a fresh process on {device}: {len(inputs)} cases ("
            + "; ".join(f"{key}: {' '.join(label for k, label in inputs if k == key)}" for key in graph_of)
            + ")"
        )
        temp_dir = verify_temp_dir(ctx.run.export_dir)
        try:
            actual, reply, started_at = run_cases(
                ctx.run.work_dir,
                inputs,
                graph_of,
                device,
                imports,
                temp_dir,
                latency=latency.settings(verify),
                verifier=ctx.run.verifier,
                timeout=verify.timeout_s,
                log_dir=run_dir(),
                formats=format_requests(ctx) if device == run_on[0] else [],
            )
        finally:
            shutil.rmtree(temp_dir, ignore_errors=True)
        worker.update(
            pid=reply.pid,
            started_at=started_at,
            ready_at=reply.ready_at,
            served=reply.served,
            peak_rss_mib=round(reply.peak_rss_kib / 1024, 1),
        )
        if reply.latency:
            latencies[device] = latency.record(reply.load_s, reply.latency)
            for line in latency.lines(latencies[device]):
                ctx.run.reporter.progress(line)
        if reply.warmup_records is not None:
            warmup_replayed = reply.warmup_records
            ctx.run.reporter.progress(
                f"warmup: {reply.warmup_records} requests replayed through the TF1 "
                f"session loader (TF Serving's load path) in {reply.warmup_seconds:.2f}s"
            )
        report, failed = compare.compare(
            expected,
            actual,
            tolerances,
            top1,
            partial=[k for k, tag in graph_of.items() if tag != "serve"],
            ties=(verify.atol, verify.rtol),
        )
        if device == run_on[0]:
            check_formats(ctx, reply, expected, actual, graph_of)
        ctx.verify_report = ctx.verify_report or report  # the first device's; failures from all
        failures += [f"on {device}: {f}" if len(run_on) > 1 else f for f in failed]
        for line in compare.summarize(report):
            ctx.run.reporter.progress(line)
    for device, reason in not_verified.items():
        ctx.run.reporter.progress(f"{device}: not verified ({reason})")
    if failures:
        raise VerificationError(
            f"the reloaded SavedModel does not match the source model: {failures[0]}"
            + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else "")
            + "; nothing was written. If the model is stochastic at inference or the "
            "tolerance is too tight, fix the model or raise verify.atol / verify.rtol "
            "(or verify.tolerances.OUTPUT)"
        )
    source = "verify.inputs" if verify.inputs else "generated"
    kept.keep(ctx.run.work_dir / kept.KEPT_DIR, kept.KeptCases(inputs, expected, graph_of, tolerances, top1, source))
    ctx.verification = Verification(
        verified=True,
        cases=len(inputs) * len(run_on),
        devices_verified=run_on,
        devices_not_verified=not_verified,
        worker=worker,
        latency=latencies,
        warmup_replayed=warmup_replayed,
    )


def verify_devices(devices: List[str]) -> Tuple[List[str], Dict[str, str]]:
    """The target devices verify runs on, and those it cannot run on here with the reason.

    The graphs are device-agnostic, so a target device this machine lacks (``target=gpu``
    without a GPU) does not stop verification: it runs on the target devices that exist, or
    on ``/CPU:0`` when none does, and the missing ones are recorded as not verified.
    """
    missing = missing_devices(devices)
    present = [d for d in devices if d not in missing]
    return present or ["/CPU:0"], {d: "not present on this machine" for d in missing}


def missing_devices(devices: List[str]) -> List[str]:
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


def run_reference(reference, case, arrays, specs, verify, hints, tag="serve") -> Dict[str, np.ndarray]:
    """The source model's outputs; a model that fails on its inputs is a user's error naming the
    input and the key to set, not a traceback."""
    try:
        return {name: portable(value) for name, value in reference(dict(arrays)).items()}
    except ExportkitError:
        raise
    except Exception as error:  # noqa: BLE001 - the model's own failure, reported in one line
        raise VerificationError(source_failure(case, arrays, error, specs, verify, hints, tag)) from error


def format_requests(ctx: ExportContext) -> List[Dict[str, Any]]:
    """The deployment formats the verification process runs (those converted), for the request."""
    from exportkit.verification.protocol import format_request

    return [
        format_request(n, r.target, r.options, ctx.run.work_dir) for n, r in ctx.formats.items() if r.status != "failed"
    ]


def check_formats(ctx: ExportContext, reply, expected, actual, graph_of) -> None:
    """Each deployment format's outputs against the source model's on the serve cases: recorded
    on its ``FormatRecord``; a format that fails is a ``VerificationError`` naming it, unless it is
    optional (then it is left out of the export and recorded as failed)."""
    from exportkit.formats.base import FORMATS_DIR

    for name, record in ctx.formats.items():
        if record.status == "failed":
            continue
        numbers, failures = compare.judge_format(
            name, reply.formats.get(name), expected, actual, graph_of, record.tolerance, record.min_top1
        )
        if numbers:
            record.max_abs_error, record.max_scaled_error = numbers["max_abs_error"], numbers["max_scaled_error"]
            record.top1_agreement, record.load_s, record.latency = (
                numbers["top1_agreement"],
                numbers["load_s"],
                numbers["latency"],
            )
        if not failures:
            record.status = "ok"
            agreement = f", top-1 agreement {record.top1_agreement:.0%}" if record.top1_agreement is not None else ""
            ctx.run.reporter.progress(
                f"{name}: verified, max error {record.max_abs_error:.3g} "
                f"({record.max_scaled_error:.2g} of the outputs' scale){agreement}"
            )
            continue
        message = f"formats.{name} does not match the source model: {failures[0]}"
        if not record.optional:
            raise VerificationError(
                f"{message}; nothing was written. Raise formats.{name}.tolerance (or lower min_top1) if that is "
                f"acceptable, or mark it formats.{name}.optional=true to publish without it"
            )
        record.status, record.reason = "failed", message
        shutil.rmtree(ctx.run.work_dir / FORMATS_DIR / name, ignore_errors=True)
        record.files, record.size_bytes = [], 0
        ctx.run.reporter.progress(f"{name}: left out (optional): {message}")


def run_dir() -> Optional[Path]:
    """The Hydra run's output directory (a CLI export's), where a failed verification process's
    log goes; None for the Python API (the system's temporary directory then)."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


def require_verified(ctx: ExportContext) -> Verification:
    """Before publishing: the export's verification state (also on the manifest and in the
    summary). An export in which no verify case ran is refused unless the user said so:
    verification disabled (``pipeline.stages.verify=null``) or ``verify.allow_unverified=true``.
    """
    state = ctx.verification
    if not state.cases:
        disabled = ctx.run.cfg.pipeline.stages.get("verify") is None
        verify = [r for r in ctx.run.records if r.name == "verify"]
        reason = (
            "verification is disabled (pipeline.stages.verify=null)"
            if disabled
            else f"the verify stage {verify[-1].status}: {verify[-1].detail}"
            if verify and verify[-1].detail
            else "no verify stage ran"
        )
        state = ctx.verification = Verification(verified=False, cases=0, reason=reason)
        if not disabled and not ctx.run.cfg.verify.allow_unverified:
            raise VerificationError(
                f"no verify case ran ({reason}); nothing was published. Make verify "
                f"run, or publish it unverified with verify.allow_unverified=true"
            )
    for record in ctx.run.records:
        if record.name == "verify" and record.status == "ok" and state.devices_not_verified:
            record.detail = (
                f"verified on {', '.join(state.devices_verified)}; not verified on "
                f"{', '.join(state.devices_not_verified)} (not present on this machine)"
            )
    ctx.run.reporter.verification(state.to_dict())
    return state
