"""``python -m exportkit.reproduce EXPORT_DIR --out NEW_DIR``: export again from what the manifest
recorded, and prove the artifact is the same.

The export is re-run from the recorded *composed* config (so later edits of ``conf/`` do not
change it) with the recorded overrides and seed; only ``export_dir`` changes. Then every file
of the two exports is compared byte for byte (the manifest aside, whose timings differ). Exit
status: 0 when they match, 1 when they differ or the export fails, 2 when EXPORT_DIR has no
manifest. Installed package versions that differ from the recorded ones are warned about:
a different TensorFlow may well write different bytes.

Example::

    python -m exportkit.reproduce outputs/2026-11-24/10-00-00/saved_model --out /tmp/again
    # reproduced: 5 files identical (digest 373f3521d51b...)

The model's factory (``model.build._target_``) and custom objects must be importable, as
they were for the export (same PYTHONPATH).
"""

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

if TYPE_CHECKING:
    from exportkit.artifact.manifest import Manifest

# Keys that say where and how the export was written, not what it is. A reproduction is written
# at --out: not as a new version under the recorded serving.base_path (exportkit.serving).
PLACEMENT_KEYS = (
    "export_dir",
    "overwrite",
    "serving.base_path",
    "serving.version",
    "serving.keep",
    "serving.labels",
    "serving.model_config_file",
    "serving.compare_to",
    "serving.model_name",
)


def main(argv: Optional[List[str]] = None, prog: str = "python -m exportkit.reproduce") -> int:
    """Re-export ``argv``'s export at ``--out`` and compare; returns the exit status."""
    # TensorFlow's C++ start-up chatter is not the user's business (as in exportkit.cli).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    told = prog.removeprefix("python -m ")  # what its lines start with: exportkit.reproduce, or exportkit reproduce
    parser.add_argument("export_dir", help="an export written by exportkit (has assets.extra/manifest.json)")
    parser.add_argument("--out", required=True, help="where to write the new export (must not exist or be empty)")
    args = parser.parse_args(argv)

    from exportkit.artifact import manifest
    from exportkit.errors import ExportDirExistsError, ExportkitError, LoadError, print_error, show_traceback

    original = Path(args.export_dir).expanduser().absolute()
    if not (original / manifest.MANIFEST).is_file():
        print(
            f"{told}: error: {original} has no {manifest.MANIFEST}; give the directory "
            f"of an export written by exportkit",
            file=sys.stderr,
        )
        return 2
    new_dir = Path(args.out).expanduser().absolute()
    try:
        recorded = manifest.Manifest.read(original)
        check_out(new_dir)
    except ExportkitError as error:
        print_error(error, prog=told)
        return 1
    for line in version_warnings(recorded.versions, manifest.versions()):
        print(f"{told}: warning: {line}", file=sys.stderr)
    for line in config_drift(recorded):
        print(f"{told}: note: {line}", file=sys.stderr)
    for line in input_changes(recorded.inputs):
        print(f"{told}: warning: {line}", file=sys.stderr)

    try:
        from exportkit.frameworks import import_tensorflow, quiet_frameworks

        quiet_frameworks()
        import_tensorflow()
        rerun(recorded, new_dir)
    except Exception as error:  # noqa: BLE001 - reported as the one-line reason, as the CLI does
        if show_traceback(error):
            raise
        if isinstance(error, ExportDirExistsError):  # another process filled --out meanwhile
            error = LoadError(f"--out {new_dir} is not empty; give a new or empty directory")
        print(f"{told}: error: the export could not be re-run: {error}", file=sys.stderr)
        return 1

    differences = compare(original, new_dir)
    if differences:
        print(f"NOT reproduced: {new_dir} differs from {original}:")
        for line in differences:
            print(f"  {line}")
        return 1
    written = manifest.read(new_dir)  # compare() hashed every file already: no second read
    print(f"reproduced: {len(written.files)} files identical to {original} (digest {written.digest[:12]})")
    return 0


def check_out(new_dir: Path) -> None:
    """``--out`` must be new or empty (reproduce never replaces anything)."""
    from exportkit.errors import ConfigError

    if new_dir.exists() and (not new_dir.is_dir() or any(new_dir.iterdir())):
        raise ConfigError(
            f"--out {new_dir} {'is a file' if not new_dir.is_dir() else 'is not empty'}; "
            f"give a new or empty directory (reproduce never replaces an export)"
        )


def rerun(recorded: "Manifest", new_dir: Path):
    """The pipeline, on the recorded composed config with ``export_dir=new_dir``."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from exportkit import pipeline, schema
    from exportkit.errors import ConfigError, first_line

    schema.register()
    config = dict(recorded.config, export_dir=str(new_dir), overwrite=False)
    if "serving" in config:  # the model name the warmup records carry stays the recorded one
        config["serving"] = dict(
            config["serving"],
            base_path=None,
            version="auto",
            keep=None,
            labels={},
            model_config_file=None,
            compare_to=None,
            model_name=recorded.serving.get("model_name"),
        )
    # Through the schema, as Hydra composes it: a value the schema no longer accepts is named.
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(schema.ExportConfig), config)
    except OmegaConfBaseException as e:
        raise ConfigError(
            f"the recorded config does not fit this exportkit's schema "
            f"({first_line(e)}); reproduce with the exportkit version the "
            f"manifest records"
        ) from e
    assert isinstance(cfg, DictConfig)  # merged onto a structured config: a DictConfig
    return pipeline.Export(pipeline.resolved(cfg), overrides=recorded.overrides).run()


def version_warnings(recorded: Dict[str, str], installed: Dict[str, str]) -> List[str]:
    """One line per package whose installed version is not the recorded one."""
    lines = []
    for name in sorted(set(recorded) | set(installed)):
        old, new = recorded.get(name), installed.get(name)
        if old != new:
            lines.append(
                f"{name} {old or 'absent'} was recorded, {new or 'absent'} is installed; "
                f"the bytes may differ for that reason alone"
            )
    return lines


def input_changes(inputs: Dict[str, Dict[str, str]]) -> List[str]:
    """One line per model file (``model.path``...) that is gone or changed since the export."""
    from exportkit.artifact import manifest

    lines = []
    for key, recorded in sorted(inputs.items()):
        path = Path(recorded["path"]).expanduser()
        if not path.exists():
            lines.append(f"{key}={recorded['path']}: the file is gone")
            continue
        now = manifest.sha256(path)
        if now != recorded["sha256"]:
            lines.append(
                f"{key}={recorded['path']}: the file changed since the export (sha256 "
                f"{recorded['sha256'][:12]} then, {now[:12]} now)"
            )
    return lines


def config_drift(recorded: "Manifest") -> List[str]:
    """Keys whose value today's ``conf/`` would give differently for the recorded overrides.

    Informative only: reproduce re-runs the recorded config, not a newly composed one.
    """
    from omegaconf import OmegaConf

    overrides = recorded.overrides
    if overrides is None:
        return ["the manifest records no overrides (written before they were recorded)"]
    try:
        from exportkit.composition import compose

        now = compose([*overrides, "export_dir=unused"])
        today = OmegaConf.to_container(now, resolve=True)
    except Exception as error:  # noqa: BLE001 - a note, never a reason to stop
        return [f"the recorded overrides no longer compose with today's conf/ ({error})".splitlines()[0]]
    assert isinstance(today, dict)  # a composed DictConfig's container
    drift = diff_configs(recorded.config, today)
    if drift:
        return [
            f"today's conf/ composes a different config for the same overrides ({'; '.join(drift)}); "
            f"re-running the recorded one"
        ]
    return []


def diff_configs(old: Dict[Any, Any], new: Dict[Any, Any], prefix: str = "") -> List[str]:
    """Dotted keys whose values differ (placement keys at the top level ignored)."""
    out = []
    for key in sorted(set(old) | set(new)):
        if f"{prefix}{key}" in PLACEMENT_KEYS:
            continue
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += diff_configs(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def compare(original: Path, new: Path) -> List[str]:
    """What differs between two exports, one line each; [] when every file is identical.

    Files are hashed from disk, not taken from the manifests, and the original's files are also
    checked against its own manifest, so a file modified after the export is named as such.
    """
    from exportkit.artifact import manifest

    old_files, new_files = manifest.file_hashes(original), manifest.file_hashes(new)
    old_manifest, new_manifest = manifest.read(original), manifest.read(new)
    lines = []
    for path in sorted(set(old_files) | set(new_files)):
        if path not in new_files:
            lines.append(f"{path}: only in the original")
        elif path not in old_files:
            lines.append(f"{path}: only in the new export")
        elif old_files[path] != new_files[path]:
            recorded = old_manifest.files.get(path)
            tampered = ""
            if recorded is not None and recorded != old_files[path]:
                tampered = (
                    "; the original no longer matches the sha256 its manifest recorded "
                    f"({recorded[:12]}): it was modified after the export"
                )
            lines.append(f"{path}: differs (sha256 {old_files[path][:12]} != {new_files[path][:12]}){tampered}")
    for key in diff_configs(old_manifest.config, new_manifest.config):
        lines.append(f"config {key}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
