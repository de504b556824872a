"""The comparison: what the export computed against what the source model computed, output by
output, within tolerances (``verify.atol``/``verify.rtol``, ``verify.tolerances.<output>``), and
the top-1 class where it is compared (``verify.top1``).

>>> report, failures = compare(expected, actual, {"probs": (1e-5, 1e-5)}, top1={"probs"})
"""

from typing import Dict, Set, Tuple

import numpy as np

from exportkit.errors import ConfigError


def checks(verify, expected) -> Tuple[Dict[str, Tuple[float, float]], Set[str]]:
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
    dtypes = {n: np.asarray(o[n]).dtype for o in expected.values() for n in o}
    tolerances: Dict[str, Tuple[float, float]] = {}
    for name in names:
        own = verify.tolerances.get(name) or verify.tolerances.get(name.split("/", 1)[-1]) or {}
        atol, rtol = own.get("atol"), own.get("rtol")
        floor = dtype_tolerance(dtypes[name])
        tolerances[name] = (
            atol if atol is not None else max(verify.atol, floor),
            rtol if rtol is not None else max(verify.rtol, floor),
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


def dtype_tolerance(dtype) -> float:
    """The least default atol and rtol for an output of ``dtype``: 4 units in the last place for
    a float narrower than float32 (bfloat16 0.031, float16 0.0039), so that one rounding of
    difference (an op fused or ordered otherwise) is not a failure; 0 for the rest (``verify.atol``
    and ``verify.rtol`` apply). ``verify.tolerances.<output>`` overrides it.

    >>> import ml_dtypes
    >>> dtype_tolerance(np.dtype(ml_dtypes.bfloat16)), dtype_tolerance(np.dtype("float32"))
    (0.03125, 0.0)
    """
    if dtype.kind in "fV" and dtype.itemsize < 4 and dtype.names is None:
        import ml_dtypes

        return float(4 * ml_dtypes.finfo(dtype).eps)
    return 0.0


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


def scaled(expected, actual, tolerance: float, min_top1: float, ties=(1e-5, 1e-5)):
    """A deployment format's outputs against the source model's, judged relative to each output's
    scale: the largest ``|artifact - source| / max |source|`` must stay within ``tolerance`` (at
    least the output dtype's own, ``dtype_tolerance``: a float16 output's rounding passes), and
    where an output has classes (a float output whose last dimension is over 1) the top-1 agreement
    over every case's decisive rows must reach ``min_top1``. Returns ``(record, failures)`` with
    the record's ``max_abs_error``, ``max_scaled_error`` and ``top1_agreement`` (None: no
    classes)."""
    worst_abs, worst_scaled, agree, rows, failures = 0.0, 0.0, 0.0, 0, []
    for (key, label), want in expected.items():
        got = actual.get((key, label))
        if got is None or set(got) != set(want):
            failures.append(f"{key} at batch {label}: outputs {sorted(got or {})} != source {sorted(want)}")
            continue
        for name, w in want.items():
            g = np.asarray(got[name])
            if g.shape != w.shape:
                failures.append(f"{key}/{name} at batch {label}: shape {g.shape} != source {w.shape}")
                continue
            if w.dtype.kind in "SUO":
                if not np.array_equal(g, w):
                    failures.append(f"{key}/{name} at batch {label}: strings differ")
                continue
            w64, g64 = w.astype(np.float64), g.astype(np.float64)
            error = float(np.abs(g64 - w64).max()) if w64.size else 0.0
            scale = float(np.abs(w64).max()) if w64.size else 0.0
            share = error / max(scale, 1e-12)
            worst_abs, worst_scaled = max(worst_abs, error), max(worst_scaled, share)
            if share > max(tolerance, dtype_tolerance(w.dtype)):
                failures.append(
                    f"{key}/{name} at batch {label}: max error {error:.3g} is {share:.3g} of the outputs' scale "
                    f"(tolerance {max(tolerance, dtype_tolerance(w.dtype)):g})"
                )
            if w.dtype.kind == "f" and w.ndim >= 1 and w.shape[-1] > 1:
                share, decisive = top1_agreement(w64, g64, *ties)
                agree, rows = agree + share * decisive, rows + decisive
    agreement = agree / rows if rows else None
    if agreement is not None and agreement < min_top1:
        failures.append(f"top-1 class agrees on {agreement:.0%} of {rows} rows (min_top1 {min_top1:g})")
    record = {"max_abs_error": worst_abs, "max_scaled_error": worst_scaled, "top1_agreement": agreement}
    return record, failures


def judge_format(name, ran, expected, actual, graph_of, tolerance: float, min_top1: float):
    """One deployment format as the verification process ran it (``Reply.formats[name]``; None:
    it did not) against the source model's outputs on the serve cases (``graph_of``: signature ->
    graph tag): ``(numbers, failures)``; the numbers are ``scaled``'s with the runtime's ``load_s``
    and ``latency``, empty when it did not run."""
    from exportkit.verification.protocol import format_key

    ran = ran or {"error": "the verification process did not run it"}
    if "error" in ran:
        return {}, [f"{ran['where']}: {ran['error']}" if ran.get("where") else ran["error"]]
    serve = {case: outputs for case, outputs in expected.items() if graph_of.get(case[0]) == "serve"}
    got = {case: actual.get((format_key(name, case[0]), case[1])) for case in serve}
    numbers, failures = scaled(serve, got, tolerance, min_top1)
    return {**numbers, "load_s": ran["load_s"], "latency": ran["latency"]}, failures


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
    """One line per signature: its cases and the largest abs error over its outputs."""
    for key, cases in verify_report.items():
        errors = [
            o.get("max_abs_error", float("inf"))
            for case in cases.values()
            for o in case.values()
            if isinstance(o, dict)
        ]
        worst = max(errors) if errors else 0.0
        yield f"{key}: {len(cases)} cases ({', '.join(cases)}): max abs error {worst:.3g}"
