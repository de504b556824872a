"""What one export is, read from its manifest without TensorFlow: sizes, verify status, latency
at export, the contract check, digests. ``exportkit inspect`` prints it and the sweep summary
tabulates it; both read it here.

>>> facts = export_facts(Path("/srv/models/clf/3"))  # doctest: +SKIP
>>> facts["verify"]["status"], format_size(facts["sizes"]["total"])
"""

from pathlib import Path
from typing import Any, Dict, Optional

from exportkit.artifact import files
from exportkit.artifact.manifest import MANIFEST, Manifest
from exportkit.artifact.warmup import WARMUP


def export_facts(export_dir: Path) -> Dict[str, Any]:
    """One export: from its manifest; the contract from saved_model.pb only without one."""
    recorded = Manifest.read(export_dir) if (export_dir / MANIFEST).is_file() else None
    graph = files.saved_model_file(export_dir)
    contract = recorded.contract if recorded is not None else None
    source = "manifest"
    if contract is None:
        from exportkit.artifact import contract as signature_contract

        contract, source = signature_contract.read(export_dir), graph.name if graph else "-"
    warmup_file = export_dir / WARMUP
    serving = recorded.serving if recorded is not None else {}
    return {
        "signatures": contract,
        "signatures_from": source,
        "sizes": {
            "saved_model": graph.stat().st_size if graph else None,
            "variables": tree_bytes(export_dir / "variables"),
            "warmup": warmup_file.stat().st_size if warmup_file.is_file() else None,
            "total": tree_bytes(export_dir),
        },
        "warmup_records": (serving.get("warmup") or {}).get("records"),
        "serving": {k: v for k, v in serving.items() if k not in ("contract_check", "warmup")},
        "verify": recorded.verify_status() if recorded is not None else {"status": "unknown (no manifest)"},
        # per device: load_s per graph, and per serve signature and case first_ms, p50_ms, p90_ms, p99_ms
        "latency": recorded.verification.get("latency") if recorded is not None else None,
        "contract_check": serving.get("contract_check"),
        "digest": recorded.digest if recorded is not None else None,
        "fingerprint": str((recorded.fingerprint if recorded is not None else {}).get("saved_model_checksum", "")),
        "versions": recorded.versions if recorded is not None else {},
        "op_libraries": recorded.op_libraries if recorded is not None else {},
        "formats": recorded.formats if recorded is not None else {},
        "stages": [{k: s.get(k) for k in ("name", "status", "seconds")} for s in (recorded.stages if recorded else [])],
    }


def tree_bytes(directory: Path) -> int:
    """The bytes of every file under ``directory`` (0 when it does not exist)."""
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) if directory.is_dir() else 0


def format_size(value: Optional[float]) -> str:
    """``1536`` -> ``"1.5 KiB"``; None -> ``"-"``."""
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)
