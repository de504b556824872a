"""Subcommands for exports that already exist: ``exportkit inspect PATH [--json]``,
``exportkit verify PATH`` (``exportkit.verification.existing``) and ``exportkit reproduce PATH --out
DIR`` (``exportkit.reproduce``). ``exportkit.cli.main`` dispatches here before Hydra sees the
command line.

``inspect`` reads the manifest only, so it never imports TensorFlow for an export exportkit
wrote; PATH may be an export or a TF Serving base path (then its versions are listed and the
highest is inspected)::

    exportkit inspect /srv/models/clf            # versions 3, 4; version 4's signatures, sizes, ...
    exportkit inspect /srv/models/clf/4 --json   # the same as one JSON object
    exportkit verify /srv/models/clf             # version 4 run again here, against its kept outputs
"""

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from exportkit.artifact.facts import format_size

PROG = "exportkit"
SUBCOMMANDS = ("inspect", "verify", "reproduce")


def main(argv: List[str]) -> int:
    """Run ``argv`` (``["inspect", PATH, ...]``, ``["verify", PATH, ...]`` or ``["reproduce", PATH,
    "--out", DIR]``); returns the exit status."""
    if argv and argv[0] == "reproduce":
        from exportkit import reproduce

        return reproduce.main(argv[1:], prog=f"{PROG} reproduce")
    parser = argparse.ArgumentParser(
        prog=PROG, description="Commands for existing exports (an export itself is `exportkit [KEY=VALUE ...]`)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser("inspect", help="tags, signatures, sizes, versions, verify report, contract")
    inspect.add_argument("path", help="an export directory, or a TF Serving base path holding numbered versions")
    inspect.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    verify = commands.add_parser(
        "verify",
        help="run an export again here against the inputs and outputs kept at export time",
        description="Run an existing export again in a fresh process, on this machine's devices, against the "
        "inputs and outputs kept inside it at export time (assets.extra/verify*.{json,npz}); replay "
        "its warmup file; time each serve signature. Exit status 1 on a mismatch.",
    )
    verify.add_argument("path", help="an export directory, or a TF Serving base path (its highest version)")
    verify.add_argument("--version", type=int, default=None, help="with a base path: this version")
    verify.add_argument(
        "--device",
        action="append",
        default=None,
        help="a device to run on, e.g. /GPU:0 (repeatable); default: every GPU, else /CPU:0",
    )
    verify.add_argument(
        "--latency-runs",
        type=int,
        default=20,
        metavar="N",
        help="warm calls timed per signature and case (0: no latency); default 20",
    )
    verify.add_argument("--json", action="store_true", help="print the report as one JSON object")
    commands.add_parser("reproduce", help="re-run an export from its manifest and compare the bytes", add_help=False)
    args = parser.parse_args(argv)

    from exportkit.errors import ExportkitError, print_error

    try:
        if args.command == "inspect":
            found = describe(Path(args.path))
            print(json.dumps(found, indent=2) if args.json else "\n".join(text(found)))
            return 0
        return verify_command(args)
    except ExportkitError as error:
        print_error(error)
        return 1


def verify_command(args) -> int:
    from exportkit.errors import VerificationError
    from exportkit.verification import existing as verify_existing

    report = verify_existing.verify(
        Path(args.path), version=args.version, devices=args.device, latency_runs=args.latency_runs
    )
    if args.json:
        print(json.dumps(report, indent=2))
    if not report["ok"]:
        raise VerificationError(verify_existing.failure_message(report))
    if not args.json:
        print("\n".join(verify_existing.text(report)))
    return 0


def describe(path: Path) -> Dict[str, Any]:
    """What ``inspect`` prints, as a dict: an export's facts, or a base path's versions and its newest."""
    from exportkit.artifact import files
    from exportkit.artifact.facts import export_facts
    from exportkit.artifact.versions import list_versions
    from exportkit.errors import ExportkitError

    path = path.expanduser().absolute()
    if not path.is_dir():
        raise ExportkitError(f"inspect: {path} is not a directory; give an export or a base path")
    if files.saved_model_file(path) is not None:
        return {"path": str(path), "kind": "export", **export_facts(path)}
    versions = list_versions(path)
    if not versions:
        raise ExportkitError(
            f"inspect: {path} holds no saved_model.pb and no numbered versions; give an "
            f"export directory or a TF Serving base path"
        )
    listing = []
    for number, directory in versions.items():
        facts = export_facts(directory) if files.saved_model_file(directory) else {}
        listing.append(
            {
                "version": number,
                "path": str(directory),
                "bytes": facts.get("sizes", {}).get("total"),
                "digest": facts.get("digest"),
                "verify": facts.get("verify", {}).get("status"),
                "contract": (facts.get("contract_check") or {}).get("status", "-"),
            }
        )
    newest = max(versions)
    return {
        "path": str(path),
        "kind": "base_path",
        "versions": listing,
        "latest_version": newest,
        "latest": export_facts(versions[newest]),
    }


def text(found: Dict[str, Any]) -> List[str]:
    """The human-readable form of ``describe``'s dict."""
    lines = [f"{found['path']}"]
    if found["kind"] == "base_path":
        lines.append(f"base path: {len(found['versions'])} version(s)")
        lines.append(f"  {'version':>8}  {'size':>10}  {'verify':<8}  {'contract':<10}  digest")
        for v in found["versions"]:
            lines.append(
                f"  {v['version']:>8}  {format_size(v['bytes']):>10}  {v['verify'] or '-':<8}  "
                f"{v['contract']:<10}  {(v['digest'] or '-')[:12]}"
            )
        lines.append(f"version {found['latest_version']} (the highest):")
        lines += ["  " + line for line in _export_lines(found["latest"])]
    else:
        lines += _export_lines(found)
    return lines


def _export_lines(facts: Dict[str, Any]) -> List[str]:
    sizes = facts["sizes"]
    lines = [
        f"size: {format_size(sizes['total'])} (saved_model {format_size(sizes['saved_model'])}, variables "
        f"{format_size(sizes['variables'])}"
        + (
            f", warmup {format_size(sizes['warmup'])} / {facts['warmup_records']} requests"
            if sizes["warmup"] is not None
            else ""
        )
        + ")"
    ]
    serving = facts["serving"]
    if serving.get("version") is not None:
        lines.append(
            f"serving: model {serving['model_name']}, version {serving['version']} under {serving['base_path']}"
        )
    for tags, signatures in facts["signatures"].items():
        lines.append(f"tag-set {tags}:")
        for key, signature in signatures.items():
            lines.append(f"  {key} ({signature['method_name']})")
            for kind in ("inputs", "outputs"):
                for name, tensor in signature[kind].items():
                    lines.append(f"    {kind[:-1]:<6} {name}: {tensor['dtype']} {_shape(tensor['shape'])}")
    for name, record in facts["formats"].items():
        from exportkit.verification.existing import format_numbers
        from exportkit.verification.latency import p50_by_batch

        lines.append(
            f"format {name} ({', '.join(f'{k}={v}' for k, v in record['options'].items())}): {record['status']}, "
            f"{format_size(record['size_bytes'])}, " + format_numbers(record) + p50_by_batch(record)
        )
    for package, library in facts["op_libraries"].items():
        lines.append(
            f"needs op library {package} {library['version']} (a server must load it too): {', '.join(library['ops'])}"
        )
    verify = facts["verify"]
    lines.append(
        "verify: "
        + verify["status"]
        + (
            f", max abs error {verify['max_abs_error']:.3g}, batch sizes {verify['batch_sizes']}"
            if verify["status"] in ("ok", "failed") and verify.get("max_abs_error") is not None
            else f" ({verify['reason']})"
            if verify.get("reason")
            else ""
        )
    )
    for device, record in (facts.get("latency") or {}).items():
        from exportkit.verification.latency import lines as latency_lines

        lines.append(f"latency at export, on {device}:")
        lines += [f"  {line[len('latency ') :]}" for line in latency_lines(record)]
    check = facts["contract_check"]
    if check:
        lines.append(f"contract: {check['status']} against {check['against']}")
        lines += [f"  breaking: {line}" for line in check["breaking"]]
        lines += [f"  compatible: {line}" for line in check["compatible"]]
    else:
        lines.append("contract: not compared (no previous version, no serving.compare_to)")
    if facts["digest"]:
        lines.append(f"digest: {facts['digest']}")
    return lines


def _shape(shape: Optional[list]) -> str:
    return "(unknown rank)" if shape is None else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
