"""``exportkit verify PATH``: verify an export that already exists, on this machine, against what
it computed when it was exported.

The verify stage keeps its cases inside every verified export (``assets.extra/verify.json``,
``verify_inputs.npz``, ``verify_outputs.npz``). Here they are run again by the verify stage's
own worker, in a fresh process, and compared with the stage's own ``compare`` and the tolerances
recorded at export time; the worker also replays the warmup file through the TF1 session loader
and times each serve signature. Neither the source model nor its factory is needed, and this
process never imports TensorFlow: run it on the serving host, after a TensorFlow upgrade, or on
a GPU machine::

    exportkit verify /srv/models/clf                    # its highest version, on every GPU (else the CPU)
    exportkit verify /srv/models/clf --version 3 --device /CPU:0 --json

A mismatch (or a graph or warmup record that does not run) is one ``exportkit: error:`` line and
exit status 1.
"""

import json
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from exportkit.errors import ExportkitError, VerificationError

AUTO = "auto"  # the worker's first GPU, else /CPU:0; then every other GPU it saw


def export_of(path: Path, version: Optional[int] = None) -> Tuple[Path, Optional[int]]:
    """The export to verify: ``path`` itself, or a base path's highest version (or ``version``)."""
    from exportkit.artifact import files
    from exportkit.artifact.versions import list_versions

    path = Path(path).expanduser().absolute()
    if not path.is_dir():
        raise ExportkitError(f"verify: {path} is not a directory; give an export or a base path")
    if files.saved_model_file(path) is not None:
        if version is not None:
            raise ExportkitError(f"verify: --version {version} needs a base path; {path} is an export")
        return path, None
    versions = list_versions(path)
    if not versions:
        raise ExportkitError(
            f"verify: {path} holds no saved_model.pb and no numbered versions; give an "
            f"export directory or a TF Serving base path"
        )
    number = max(versions) if version is None else version
    if number not in versions:
        raise ExportkitError(
            f"verify: {path} has no version {number} (versions: {', '.join(map(str, sorted(versions)))})"
        )
    return versions[number], number


def kept_cases(export_dir: Path) -> Dict[str, Any]:
    """The cases kept at export time: ``inputs`` and ``expected`` per ``(signature, case)``,
    ``graph_of`` (signature -> tag), ``tolerances`` (output -> (atol, rtol)), ``top1``."""
    from exportkit.stages.verify import FORMAT, INDEX_FILE, KEPT_DIR

    kept = export_dir / KEPT_DIR
    index_file = kept / INDEX_FILE
    if not index_file.is_file():
        raise ExportkitError(
            f"verify: {export_dir} keeps no verification cases ({KEPT_DIR}/{INDEX_FILE} is "
            f"missing): it was exported with verification off or by an older exportkit; "
            f"export it again with the verify stage on to verify it later"
        )
    try:
        index = json.loads(index_file.read_text())
    except ValueError as error:
        raise ExportkitError(f"verify: {index_file} is not JSON ({error})") from None
    if index.get("format") != FORMAT:
        raise ExportkitError(
            f"verify: {index_file} has format {index.get('format')!r}; this exportkit reads {FORMAT!r}"
        )
    arrays = {}
    for kind in ("inputs", "outputs"):
        try:
            with np.load(kept / index[kind], allow_pickle=False) as data:
                arrays[kind] = {k: data[k] for k in data.files}
        except (OSError, ValueError) as error:
            raise ExportkitError(f"verify: {kept / index[kind]} cannot be read ({error})") from None
    inputs, expected, graph_of = {}, {}, {}
    for case in index["cases"]:
        key, label = case["signature"], case["case"]
        graph_of[key] = case["graph"]
        for kind, names, into in (("inputs", case["inputs"], inputs), ("outputs", case["outputs"], expected)):
            flat = {name: f"{key}/{label}/{name}" for name in names}
            missing = [k for k in flat.values() if k not in arrays[kind]]
            if missing:
                raise ExportkitError(
                    f"verify: {kept / index[kind]} has no array {missing[0]!r}, which "
                    f"{INDEX_FILE} lists; the kept files do not belong together"
                )
            into[(key, label)] = {name: arrays[kind][k] for name, k in flat.items()}
    tolerances = {name: (t["atol"], t["rtol"]) for name, t in index["tolerances"].items()}
    return {
        "inputs": inputs,
        "expected": expected,
        "graph_of": graph_of,
        "tolerances": tolerances,
        "top1": set(index.get("top1", [])),
        "source": index.get("source"),
    }


def verify(
    path: Path,
    *,
    version: Optional[int] = None,
    devices: Optional[List[str]] = None,
    latency_runs: int = 20,
    latency_budget_s: float = 5.0,
) -> Dict[str, Any]:
    """Verify an existing export here; returns the report (``ok`` False on a mismatch, with
    ``failures``). Raises ``ExportkitError`` when it cannot be verified at all.

    >>> report = verify(Path("/srv/models/clf"), devices=["/CPU:0"])  # doctest: +SKIP
    >>> report["ok"], report["devices"][0]["latency"]["signatures"]["serving_default"]["1"]["p50_ms"]
    """
    from exportkit.artifact import manifest
    from exportkit.stages.verify import WORKER, compare, latency_lines, latency_record, run_worker, summarize
    from exportkit.stages.verify_worker import WARMUP_RECORDS, WARMUP_SECONDS

    start = time.perf_counter()
    export_dir, number = export_of(path, version)
    cases = kept_cases(export_dir)
    recorded = manifest.read(export_dir) if (export_dir / manifest.MANIFEST).is_file() else {}
    config = recorded.get("config") or {}
    ties = tuple((config.get("verify") or {}).get(k, 1e-5) for k in ("atol", "rtol"))
    modules = list((config.get("custom_objects") or {}).values())
    latency = {"runs": latency_runs, "budget_s": latency_budget_s} if latency_runs > 0 else None
    partial = [k for k, tag in cases["graph_of"].items() if tag != "serve"]
    queue, done, ran, failures = list(devices or [AUTO]), set(), [], []
    while queue:
        asked = queue.pop(0)
        facts: Dict[str, Any] = {}
        with tempfile.TemporaryDirectory(prefix="exportkit-verify-") as tmp:
            try:
                actual, peak_kib = run_worker(
                    export_dir,
                    cases["inputs"],
                    cases["graph_of"],
                    asked,
                    modules,
                    export_dir,
                    facts,
                    latency=latency,
                    temp_dir=Path(tmp),
                )
            except VerificationError as error:
                raise VerificationError(
                    f"{export_dir} could not be loaded and run on {asked}: {str(error).strip().splitlines()[-1]}"
                ) from None
        measured = facts.pop(WORKER, {})
        device = measured.get("device", asked)
        done.add(device)
        if asked == AUTO:  # every other GPU too
            queue += [gpu for gpu in measured.get("gpus", []) if gpu not in done and gpu not in queue]
        report, failed = compare(
            cases["expected"], actual, cases["tolerances"], cases["top1"], partial=partial, ties=ties
        )
        failures += [f"on {device}: {f}" for f in failed]
        errors = [
            o["max_abs_error"]
            for sizes in report.values()
            for case in sizes.values()
            for o in case.values()
            if isinstance(o, dict) and "max_abs_error" in o
        ]
        record = latency_record(measured) if measured.get("latency") else None
        ran.append(
            {
                "device": device,
                "ok": not failed,
                "failures": failed,
                "max_abs_error": max(errors) if errors else None,
                "summary": list(summarize(report)),
                "report": report,
                "warmup": {"records": facts[WARMUP_RECORDS], "seconds": round(facts[WARMUP_SECONDS], 4)}
                if WARMUP_RECORDS in facts
                else None,
                "load_s": record["load_s"]
                if record
                else {k: round(v, 4) for k, v in measured.get("load_s", {}).items()},
                "latency": record,
                "latency_lines": latency_lines(record) if record else [],
                "peak_rss_mib": round(peak_kib / 1024, 1),
            }
        )
    return {
        "path": str(export_dir),
        "version": number,
        "ok": not failures,
        "failures": failures,
        "cases": len(cases["inputs"]),
        "inputs": cases["source"],
        "signatures": {key: [label for k, label in cases["inputs"] if k == key] for key in cases["graph_of"]},
        "tensorflow": {
            "here": _installed("tensorflow"),
            "exported_with": (recorded.get("versions") or {}).get("tensorflow"),
        },
        "devices": ran,
        "seconds": round(time.perf_counter() - start, 3),
    }


def failure_message(report: Dict[str, Any]) -> str:
    """The one line for a report with failures."""
    failures = report["failures"]
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    return (
        f"{report['path']} does not reproduce the outputs recorded at export time: {failures[0]}{more}; "
        f"tensorflow {report['tensorflow']['here']} here, {report['tensorflow']['exported_with']} at export"
    )


def text(report: Dict[str, Any]) -> List[str]:
    """The short human-readable report of a successful run."""
    versions = report["tensorflow"]
    lines = [
        f"{report['path']}"
        + (f" (version {report['version']})" if report["version"] is not None else "")
        + f": {report['cases']} kept cases ({report['inputs']} inputs; "
        + "; ".join(f"{k}: {' '.join(labels)}" for k, labels in report["signatures"].items())
        + ")"
    ]
    for run in report["devices"]:
        error = run["max_abs_error"]
        lines.append(
            f"  {'OK' if run['ok'] else 'FAILED'} on {run['device']}: max abs error "
            + (f"{error:.3g}" if error is not None else "-")
            + " (export-time tolerances)"
        )
        if run["warmup"]:
            lines.append(
                f"    warmup: {run['warmup']['records']} requests replayed through the TF1 session "
                f"loader in {run['warmup']['seconds']:.2f}s"
            )
        lines += [f"    {line}" for line in run["latency_lines"]]
    lines.append(
        f"  tensorflow {versions['here']} (exported with {versions['exported_with'] or 'unknown'}); "
        f"verified in {report['seconds']:.1f}s"
    )
    return lines


def _installed(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
