"""``assets.extra/manifest.json``: what produced the export, and a hash of every file in it.

``config`` (composed and resolved), ``overrides`` (the command line's) and ``versions`` are what
``exportkit reproduce`` re-runs from; ``digest`` is one hash of every other file, the same for two
runs of the same config (see ``exportkit.artifact.canonical``). ``Manifest`` is its one typed form:
written here, read here by ``inspect``, the sweep summary, ``reproduce`` and ``verify``.
"""

import dataclasses
import functools
import hashlib
import json
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import OmegaConf

from exportkit.artifact import canonical
from exportkit.artifact.digests import HashCache, file_sha256
from exportkit.errors import LoadError

MANIFEST = Path("assets.extra") / "manifest.json"
_PACKAGES = ("exportkit", "tensorflow", "keras", "hydra-core", "omegaconf", "numpy", "jax", "jaxlib", "flax")


@dataclass
class Manifest:
    """The manifest of one export; ``read`` checks that a file is one exportkit wrote."""

    config: Dict[str, Any]
    overrides: List[str] = field(default_factory=list)
    inputs: Dict[str, Dict[str, str]] = field(default_factory=dict)  # model.path -> {path, sha256}
    versions: Dict[str, str] = field(default_factory=dict)
    stages: List[Dict[str, Any]] = field(default_factory=list)  # {name, status, seconds, detail}
    files: Dict[str, str] = field(default_factory=dict)  # relative path -> sha256, every file but the manifest
    digest: str = ""
    fingerprint: Dict[str, Any] = field(default_factory=dict)
    verify: Dict[str, Any] = field(default_factory=dict)  # signature -> case -> output -> errors
    verification: Dict[str, Any] = field(default_factory=dict)  # exportkit.context.Verification
    contract: Optional[Dict[str, Any]] = None
    serving: Dict[str, Any] = field(default_factory=dict)  # exportkit.context.ServingRecord
    conversion: Dict[str, Any] = field(default_factory=dict)  # exportkit.context.Conversion (a JAX model's)
    # package -> {distribution, version, ops}: what a process loading the export must import
    # (exportkit.artifact.op_libraries)
    op_libraries: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    # name -> exportkit.context.FormatRecord: each deployment format's files, numbers and status
    formats: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        # Not sort_keys: the order of pipeline.stages is the order the stages run in, and
        # reproduce re-runs this config. Insertion order is deterministic already.
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def read(cls, export_dir) -> "Manifest":
        """The manifest of ``export_dir``: a ``LoadError`` naming the file and what is wrong for a
        missing, truncated, altered or foreign one."""
        from exportkit.errors import first_line

        path = Path(export_dir) / MANIFEST
        if not path.is_file():
            raise LoadError(f"{export_dir} has no {MANIFEST}; give the directory of an export written by exportkit")
        try:
            recorded = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise LoadError(
                f"{path} cannot be read as JSON ({type(e).__name__}: {first_line(e)}); the manifest is truncated "
                f"or damaged"
            ) from e
        expected = {"config": dict, "files": dict}
        if not isinstance(recorded, dict):
            raise LoadError(
                f"{path} holds a JSON {type(recorded).__name__}, not an exportkit manifest (an object "
                f"with {', '.join(expected)})"
            )
        kinds = {f.name: f for f in dataclasses.fields(cls)}
        for key, kind in {**expected, "overrides": list, "versions": dict, "inputs": dict}.items():
            if key in recorded and not isinstance(recorded[key], kind) or key in expected and key not in recorded:
                raise LoadError(
                    f"{path}: `{key}` is {'missing' if key not in recorded else type(recorded[key]).__name__}"
                    f", expected a JSON {'object' if kind is dict else 'array'}; not an exportkit "
                    f"manifest, or altered"
                )
        for key, entry in recorded.get("inputs", {}).items():
            if not (
                isinstance(entry, dict) and isinstance(entry.get("path"), str) and isinstance(entry.get("sha256"), str)
            ):
                raise LoadError(
                    f"{path}: inputs.{key} is {entry!r}, expected {{path, sha256}}; the manifest was altered"
                )
        # every field the dataclass knows; a null stands only where the field may be null (contract)
        known = {k: v for k, v in recorded.items() if k in kinds and (v is not None or k == "contract")}
        return cls(**known)

    def verify_status(self) -> Dict[str, Any]:
        """The verify report's status, one rule for every reader: ``ok`` / ``failed`` /
        ``skipped`` / ``off``; with the largest abs error and the batch sizes verified."""
        report = self.verify or {}
        stage = next((s for s in self.stages if s.get("name") == "verify"), {})
        if "skipped" in report or stage.get("status") == "skipped":
            return {"status": "skipped", "reason": report.get("skipped") or stage.get("detail", "")}
        if stage.get("status") == "failed":
            return {"status": "failed", "reason": stage.get("detail", "")}
        if not report:
            return {"status": "off"}
        cases = [
            o
            for sizes in report.values()
            if isinstance(sizes, dict)
            for case in sizes.values()
            for o in case.values()
            if isinstance(o, dict)
        ]
        errors = [o["max_abs_error"] for o in cases if "max_abs_error" in o]
        ok = all(o.get("ok", False) for o in cases)
        return {
            "status": "ok" if ok else "failed",
            "max_abs_error": max(errors) if errors else None,
            "batch_sizes": {key: sorted({int(s.split(",")[0]) for s in sizes}) for key, sizes in report.items()},
        }


@functools.lru_cache(maxsize=1)
def _installed_versions() -> Dict[str, str]:
    """Asked once per process: installed packages do not change under a running export."""
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def versions() -> Dict[str, str]:
    """Python's and the export's packages' versions, for the manifest."""
    return dict(_installed_versions())


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
    if ctx.serving is None:
        return {}
    record = ctx.serving.to_dict()
    replayed = ctx.verification.warmup_replayed
    if "warmup" in record and replayed is not None:
        record["warmup"] = dict(record["warmup"], replayed=replayed)
    return record


def write(ctx) -> Manifest:
    """Write the manifest of the export staged in ``ctx.run.work_dir`` (an ``ExportContext``)."""
    files = file_hashes(ctx.run.work_dir, ctx.run.hashes)
    manifest = Manifest(
        config=OmegaConf.to_container(ctx.run.cfg, resolve=True),  # type: ignore[arg-type]  # a DictConfig gives a dict
        overrides=list(ctx.run.overrides),
        inputs=input_files(ctx.run.cfg),
        versions=versions(),
        stages=[
            {"name": r.name, "status": r.status, "seconds": round(r.seconds, 4), "detail": r.detail}
            for r in ctx.run.records
        ],
        files=files,
        digest=canonical.content_digest(files),
        fingerprint=fingerprint(ctx.run.work_dir),
        verify=ctx.verify_report,
        verification=ctx.verification.to_dict(),
        contract=contract(ctx.run.work_dir),
        serving=serving_record(ctx),
        conversion=dataclasses.asdict(ctx.conversion) if ctx.conversion is not None else {},
        op_libraries={package: library.to_dict() for package, library in ctx.op_libraries.items()},
        formats={name: dataclasses.asdict(record) for name, record in ctx.formats.items()},
    )
    path = ctx.run.work_dir / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(manifest.to_json())
    return manifest


def read(export_dir) -> Manifest:
    """``Manifest.read(export_dir)``."""
    return Manifest.read(export_dir)
