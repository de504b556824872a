"""``assets.extra/manifest.json``: what produced the export, and a hash of every file in it.

``config`` (composed and resolved), ``overrides`` (the command line's) and ``versions`` are what
``python -m exportkit.reproduce`` re-runs from; ``digest`` is one hash of every other file, the
same for two runs of the same config (see ``exportkit.canonical``).
"""

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Optional

from omegaconf import OmegaConf

from exportkit.artifact import canonical
from exportkit.artifact.digests import HashCache, file_sha256

MANIFEST = Path("assets.extra") / "manifest.json"
_PACKAGES = ("exportkit", "tensorflow", "keras", "hydra-core", "omegaconf", "numpy", "jax", "jaxlib", "flax")


def versions() -> Dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def sha256(path: Path, hashes: Optional[HashCache] = None) -> str:
    """Of a file's bytes; of a directory (an Orbax checkpoint), of its files' paths and hashes."""
    if Path(path).is_dir():
        listing = "".join(f"{name}\0{digest}\n" for name, digest in file_hashes(Path(path), hashes).items())
        return hashlib.sha256(listing.encode()).hexdigest()
    return file_sha256(Path(path), hashes)


def file_hashes(root: Path, hashes: Optional[HashCache] = None) -> Dict[str, str]:
    """Relative path -> sha256 for every file under ``root`` except the manifest itself."""
    return {
        p.relative_to(root).as_posix(): sha256(p, hashes)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root) != MANIFEST
    }


def fingerprint(root: Path) -> Dict[str, Any]:
    """The fields of TF's ``fingerprint.pb``, or {} when the export has none."""
    if not (root / "fingerprint.pb").exists():
        return {}
    from google.protobuf import json_format
    from tensorflow.core.protobuf import fingerprint_pb2

    proto = fingerprint_pb2.FingerprintDef()
    proto.ParseFromString((root / "fingerprint.pb").read_bytes())
    return json_format.MessageToDict(proto, preserving_proto_field_name=True)


def input_files(cfg) -> Dict[str, Dict[str, str]]:
    """Path and sha256 of the files the model was read from (``model.path``, ``model.params_path``),
    so ``exportkit.reproduce`` can say when one changed since."""
    found = {}
    for key in ("path", "params_path"):
        value = cfg.model.get(key)
        if value and Path(value).expanduser().exists():
            found[f"model.{key}"] = {"path": str(value), "sha256": sha256(Path(value).expanduser())}
    return found


def contract(root: Path) -> Optional[Dict[str, Any]]:
    """Per tag-set and signature: method name, inputs' and outputs' dtypes and shapes (None: no graph)."""
    from exportkit.artifact import contract as signature_contract
    from exportkit.artifact import files

    return signature_contract.read(root) if files.saved_model_file(root) else None


def serving_record(ctx) -> Dict[str, Any]:
    """Model name, version (under a base path), warmup records and their replay, the contract check."""
    record = dict(ctx.extra.get("serving") or {})
    replayed = (ctx.extra.get("verify_worker") or {}).get("warmup_records")
    if "warmup" in record and replayed is not None:
        record["warmup"] = dict(record["warmup"], replayed=replayed)
    return record


def write(ctx) -> Dict[str, Any]:
    """Write the manifest of the export staged in ``ctx.work_dir`` (an ``ExportContext``)."""
    files = file_hashes(ctx.work_dir, ctx.hashes)
    manifest = {
        "config": OmegaConf.to_container(ctx.cfg, resolve=True),
        "overrides": list(ctx.overrides),
        "inputs": input_files(ctx.cfg),
        "versions": versions(),
        "stages": [
            {"name": r.name, "status": r.status, "seconds": round(r.seconds, 4), "detail": r.detail}
            for r in ctx.records
        ],
        "files": files,
        "digest": canonical.content_digest(files),
        "fingerprint": fingerprint(ctx.work_dir),
        "verify": ctx.verify_report,
        # verified (cases, devices verified and not) or not, and why: see stages.verify.require_verified
        "verification": ctx.extra.get("verification", {}),
        "contract": contract(ctx.work_dir),
        "serving": serving_record(ctx),
    }
    path = ctx.work_dir / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not sort_keys: the order of pipeline.stages is the order the stages run in, and
    # exportkit.reproduce re-runs this config. Insertion order is deterministic already.
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read(export_dir) -> Dict[str, Any]:
    return json.loads((Path(export_dir) / MANIFEST).read_text())
