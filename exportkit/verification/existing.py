"""``exportkit verify PATH``: verify an export that already exists, on this machine, against what
it computed when it was exported.

The verify stage keeps its cases inside every verified export (``exportkit.verification.kept``).
Here they are run again by the verification process, in a fresh process, and compared with the stage's own ``compare`` and the tolerances
recorded at export time; the worker also replays the warmup file through the TF1 session loader
and times each serve signature. Neither the source model nor its factory is needed, and this
process never imports TensorFlow: run it on the serving host, after a TensorFlow upgrade, or on
a GPU machine::

    exportkit verify /srv/models/clf                    # its highest version, on every GPU (else the CPU)
    exportkit verify /srv/models/clf --version 3 --device /CPU:0 --json

A mismatch (or a graph or warmup record that does not run) is one ``exportkit: error:`` line and
exit status 1.
"""

import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from exportkit.errors import ExportkitError, VerificationError
from exportkit.verification import compare, kept, latency
from exportkit.verification.process import RELOAD_FAILED, run_cases
from exportkit.verification.protocol import Latency, format_request

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

    start = time.perf_counter()
    export_dir, number = export_of(path, version)
    recorded = manifest.read(export_dir) if (export_dir / manifest.MANIFEST).is_file() else None
    checked = check_integrity(export_dir, recorded) if recorded is not None else None
    cases = kept.read(export_dir)
    config = recorded.config if recorded is not None else {}
    ties = tuple((config.get("verify") or {}).get(k, 1e-5) for k in ("atol", "rtol"))
    # the export alone: no custom object's module (the user's code) is imported, only the op
    # libraries its graphs need and what verify.imports named
    modules = op_libraries_here(recorded) + list((config.get("verify") or {}).get("imports") or [])
    timing = Latency(runs=latency_runs, budget_s=latency_budget_s) if latency_runs > 0 else None
    partial = [k for k, tag in cases.graph_of.items() if tag != "serve"]
    formats = {
        name: record
        for name, record in (recorded.formats if recorded is not None else {}).items()
        if record["status"] == "ok"
    }
    queue, done, ran, failures = list(devices or [AUTO]), set(), [], []
    checked_formats: Dict[str, Any] = {}
    while queue:
        asked = queue.pop(0)
        requests = [format_request(n, r["target"], r["options"], export_dir) for n, r in formats.items()]
        with tempfile.TemporaryDirectory(prefix="exportkit-verify-") as tmp:
            try:
                actual, reply, _ = run_cases(
                    export_dir,
                    cases.inputs,
                    cases.graph_of,
                    asked,
                    modules,
                    Path(tmp),
                    latency=timing,
                    formats=requests if not checked_formats else [],
                )
            except VerificationError as error:
                reason = str(error).removeprefix(f"{RELOAD_FAILED}: ")
                raise VerificationError(f"{export_dir} could not be loaded and run on {asked}: {reason}") from None
        device = reply.device or asked
        done.add(device)
        if asked == AUTO:  # every other GPU too
            queue += [gpu for gpu in reply.gpus if gpu not in done and gpu not in queue]
        report, failed = compare.compare(
            cases.expected, actual, cases.tolerances, cases.top1, partial=partial, ties=ties
        )
        failures += [f"on {device}: {f}" for f in failed]
        if requests and not checked_formats:  # the formats, on the CPU, once
            checked_formats = check_formats(formats, reply, cases, actual)
            failures += [f"formats.{n}: {r['failures'][0]}" for n, r in checked_formats.items() if r["failures"]]
        errors = [
            o["max_abs_error"]
            for sizes in report.values()
            for case in sizes.values()
            for o in case.values()
            if isinstance(o, dict) and "max_abs_error" in o
        ]
        record = latency.record(reply.load_s, reply.latency) if reply.latency else None
        ran.append(
            {
                "device": device,
                "ok": not failed,
                "failures": failed,
                "max_abs_error": max(errors) if errors else None,
                "summary": list(compare.summarize(report)),
                "report": report,
                "warmup": {"records": reply.warmup_records, "seconds": round(reply.warmup_seconds or 0.0, 4)}
                if reply.warmup_records is not None
                else None,
                "load_s": record["load_s"] if record else {k: round(v, 4) for k, v in reply.load_s.items()},
                "latency": record,
                "latency_lines": latency.lines(record) if record else [],
                "peak_rss_mib": round(reply.peak_rss_kib / 1024, 1),
            }
        )
    return {
        "path": str(export_dir),
        "version": number,
        "ok": not failures,
        "failures": failures,
        "cases": len(cases.inputs),
        "inputs": cases.source,
        "signatures": {key: [label for k, label in cases.inputs if k == key] for key in cases.graph_of},
        "tensorflow": {
            "here": _installed("tensorflow"),
            "exported_with": recorded.versions.get("tensorflow") if recorded is not None else None,
        },
        "devices": ran,
        "formats": checked_formats,
        "integrity": {"files": checked, "ok": True} if checked is not None else None,
        "seconds": round(time.perf_counter() - start, 3),
    }


def check_integrity(export_dir: Path, recorded) -> int:
    """Every file of the export against the sha256 its manifest records, and the manifest's own
    digest of those records: a file changed, missing or unknown to the manifest is a one-line
    ``VerificationError`` naming it. Returns the number of files checked."""
    from exportkit.artifact import canonical, manifest

    where = export_dir / manifest.MANIFEST
    if canonical.content_digest(recorded.files) != recorded.digest:
        raise VerificationError(
            f"{where}: its digest does not match the sha256 it records for the files; the manifest was altered "
            f"after the export, so nothing in it can be trusted: export again"
        )
    on_disk = manifest.file_hashes(export_dir)
    problems = [f"{name} is missing" for name in sorted(set(recorded.files) - set(on_disk))]
    problems += [
        f"{name} changed since the export (sha256 {on_disk[name][:12]}, the manifest records "
        f"{recorded.files[name][:12]})"
        for name in sorted(set(recorded.files) & set(on_disk))
        if on_disk[name] != recorded.files[name]
    ]
    problems += [f"{name} is not in the manifest" for name in sorted(set(on_disk) - set(recorded.files))]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise VerificationError(
            f"{export_dir} is not the export its manifest records: {problems[0]}{more}; "
            f"restore the export from where it was published, or export it again"
        )
    return len(on_disk)


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
    if report.get("integrity"):
        lines.append(f"  integrity: {report['integrity']['files']} files match the sha256 their manifest records")
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
    for name, checked in (report.get("formats") or {}).items():
        lines.append(f"  {'OK' if checked['ok'] else 'FAILED'} formats.{name}: " + format_numbers(checked))
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


def op_libraries_here(recorded) -> List[str]:
    """The op libraries the manifest records, each importable here; one that is not is an
    ``ExportkitError`` naming it, its ops and the ``pip install`` that brings it."""
    import importlib.util

    from exportkit.artifact.op_libraries import OpLibrary

    libraries = {p: OpLibrary(**r) for p, r in (recorded.op_libraries if recorded is not None else {}).items()}
    for package, library in libraries.items():
        if importlib.util.find_spec(package) is None:
            raise ExportkitError(
                f"verify: the export's graphs use ops of {package} ({', '.join(library.ops)}), which is not "
                f"installed here: {library.install(package)}"
            )
    return sorted(libraries)


def check_formats(formats: Dict[str, Dict[str, Any]], reply, cases, actual) -> Dict[str, Dict[str, Any]]:
    """Each deployment format the manifest records as verified, run again on the kept serve cases
    and judged as at export (its recorded tolerance and least top-1 agreement)."""
    checked = {}
    for name, record in formats.items():
        numbers, failed = compare.judge_format(
            name,
            reply.formats.get(name),
            cases.expected,
            actual,
            cases.graph_of,
            record["tolerance"],
            record["min_top1"],
        )
        checked[name] = {"ok": not failed, "failures": failed, **numbers}
    return checked


def format_numbers(record: Dict[str, Any]) -> str:
    """``max error 6e-08 (9e-08 of the outputs' scale), top-1 agreement 100%``"""
    if record.get("max_abs_error") is None:
        return "; ".join(record.get("failures") or [record.get("reason") or "not verified"])
    agreement = record.get("top1_agreement")
    return f"max error {record['max_abs_error']:.2g} ({record['max_scaled_error']:.2g} of the outputs' scale)" + (
        f", top-1 agreement {agreement:.0%}" if agreement is not None else ""
    )
