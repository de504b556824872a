"""Latency, as the verification process measures it: the settings it is asked with
(``verify.latency``), what the manifest keeps of its measurements, and the lines that tell them."""

from typing import Any, Dict, List, Optional

from exportkit.verification.protocol import Latency


def settings(verify) -> Optional[Latency]:
    """``verify.latency`` as a request takes it; None when turned off."""
    latency = verify.get("latency")
    if latency is None or not latency.enabled:
        return None
    return Latency(runs=int(latency.runs), budget_s=float(latency.budget_s))


def record(load_s: Dict[str, float], measured: Dict[str, Any]) -> Dict[str, Any]:
    """What the manifest keeps of the worker's measurements (``verification.latency.<device>``):
    ``load_s`` per graph, and per serve signature and case ``{batch, first_ms, p50_ms, p90_ms,
    p99_ms, runs}``, rounded to microseconds."""
    return {
        "load_s": {tag: round(s, 4) for tag, s in load_s.items()},
        "signatures": {
            key: {
                label: {k: round(v, 3) if isinstance(v, float) else v for k, v in case.items()}
                for label, case in cases.items()
            }
            for key, cases in measured.items()
        },
    }


def lines(record: Dict[str, Any]) -> List[str]:
    """One line per signature: ``latency serving_default: load 0.12s; b1 first 3.1 ms, warm p50 0.21 /
    p90 0.25 / p99 0.31 ms (20 runs); b3 ...``."""
    load = record.get("load_s", {}).get("serve")
    out = []
    for key, cases in record["signatures"].items():
        parts = [
            f"{'b' + label if label.isdigit() else label} first {c['first_ms']:.3g} ms, warm p50 "
            f"{c['p50_ms']:.3g} / p90 {c['p90_ms']:.3g} / p99 {c['p99_ms']:.3g} ms ({c['runs']} runs)"
            for label, c in cases.items()
        ]
        out.append(f"latency {key}: " + (f"load {load:.2f}s; " if load is not None else "") + "; ".join(parts))
    return out


def p50_by_batch(record: Dict[str, Any]) -> str:
    """A deployment format's load time and warm p50/p99 per batch size (its ``FormatRecord``), for
    one line: ``; load 0.01s, b1 p50 0.005 / p99 0.016 ms, b3 ...`` ("" before verification)."""
    if record.get("load_s") is None:
        return ""
    parts = [
        f"b{case['batch']} p50 {case['p50_ms']:.3g} / p99 {case['p99_ms']:.3g} ms"
        for cases in (record.get("latency") or {}).values()
        for case in cases.values()
    ]
    return f"; load {record['load_s']:.2f}s" + (", " + ", ".join(parts) if parts else "")
