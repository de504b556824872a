"""What a release for TensorFlow Serving adds to an export (the ``serving.*`` keys).

- Where it is published: ``open_slot`` gives ``export_dir``'s slot, or with ``serving.base_path``
  the next (or the given) numbered version's (``exportkit.artifact.versions``); ``finish`` then
  writes the model config file and applies ``serving.keep``.
- Warmup: ``write_warmup`` (called by the ``write_graphs`` stage) writes
  ``assets.extra/tf_serving_warmup_requests`` from the inputs verify runs; the verify worker
  replays it through the TF1 session loader.
- The contract gate: ``check_contract`` (run by the pipeline once every stage has passed, before
  publishing) compares the new signatures with the previous version's or ``serving.compare_to``'s.

What happened lands in ``ctx.serving`` (``exportkit.context.ServingRecord``), which the manifest
records as ``serving``.
"""

import contextlib
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from omegaconf import DictConfig

from exportkit.artifact.publish import Slot, export_slot
from exportkit.context import ServingRecord
from exportkit.errors import ConfigError

DEFAULT_MODEL_NAME = "default"  # tensorflow_model_server's own --model_name default


def model_name(cfg: DictConfig) -> str:
    """``serving.model_name``, else the base path's last component, else ``default``."""
    if cfg.serving.model_name:
        return str(cfg.serving.model_name)
    if cfg.serving.base_path:
        return Path(cfg.serving.base_path).expanduser().absolute().name
    return DEFAULT_MODEL_NAME


@contextlib.contextmanager
def open_slot(cfg: DictConfig, notify: Callable[[str], None]) -> Iterator[Slot]:
    """The slot this export is written in and published from: ``export_dir``'s, or a new version's."""
    serving = cfg.serving
    if serving.base_path is None:
        with export_slot(Path(cfg.export_dir).expanduser().absolute(), cfg.overwrite, notify=notify) as slot:
            slot.version = None
            yield slot
        return
    from exportkit.artifact import model_config, versions

    check = (
        (lambda: model_config.check(Path(serving.model_config_file).expanduser()))
        if serving.model_config_file
        else (lambda: None)
    )
    with versions.version_slot(
        Path(serving.base_path), serving.version, cfg.overwrite, dict(serving.labels), notify=notify, check=check
    ) as slot:
        notify(
            f"publishing version {slot.version} of {model_name(cfg)} under {slot.base_path}"
            + (f" (previous: {slot.previous})" if slot.previous is not None else "")
        )
        yield slot


def release_info(cfg: DictConfig, slot: Slot) -> ServingRecord:
    """The start of the manifest's ``serving`` record."""
    record = ServingRecord(model_name=model_name(cfg))
    if slot.version is not None:
        record.base_path, record.version, record.previous = str(slot.base_path), slot.version, slot.previous
    return record


def warmup_cases(ctx):
    """The cases the warmup file holds: verify's serving inputs (real examples with ``verify.inputs``;
    else generated from the same seed and hints, so the same arrays)."""
    from exportkit.verification.cases import serve_cases, symbols_of

    return serve_cases(
        ctx.model.signatures, ctx.run.cfg.verify, ctx.run.cfg.seed, ctx.model.input_hints, symbols_of(ctx.run.cfg)
    )


def write_warmup(ctx) -> None:
    """Write the warmup records into the staged export (``serving.warmup``, a ``serve`` graph)."""
    from exportkit.artifact import warmup

    if not ctx.run.cfg.serving.warmup or "serve" not in ctx.graphs:
        return
    cases = warmup_cases(ctx)
    count = warmup.write(ctx.run.work_dir, cases, model_name(ctx.run.cfg))
    size = (ctx.run.work_dir / warmup.WARMUP).stat().st_size
    if ctx.serving is None:
        ctx.serving = ServingRecord(model_name=model_name(ctx.run.cfg))
    ctx.serving.warmup = {"records": count, "bytes": size}
    batches = sorted({batch for _, batch in cases})
    ctx.run.reporter.progress(
        f"warmup: {count} requests ({', '.join(sorted({k for k, _ in cases}))} x batch "
        f"{batches}) in {warmup.WARMUP} ({size} bytes)"
        + (
            f"; {len(cases) - count} more cases left out (TF Serving reads at most {warmup.MAX_RECORDS})"
            if len(cases) > count
            else ""
        )
    )


def check_contract(ctx) -> Optional[Dict[str, Any]]:
    """Compare the staged export's contract with the previous version's (or ``serving.compare_to``'s).

    Raises ``ContractError`` for a breaking change unless ``serving.allow_breaking``; records and
    reports the result either way. Nothing to compare with: returns None.
    """
    from exportkit.artifact import contract, files

    serving = ctx.run.cfg.serving
    if ctx.serving is None:
        ctx.serving = ServingRecord(model_name=model_name(ctx.run.cfg))
    record = ctx.serving
    if files.saved_model_file(ctx.run.work_dir) is None:
        return None
    if serving.compare_to:
        old, read_from = reference_contract(Path(serving.compare_to))
    elif record.base_path is not None and record.version is not None:
        compared = newest_before(Path(record.base_path), record.version)
        if compared is None:
            return None
        old, read_from = compared
    else:
        return None
    found = contract.diff(old, contract.read(ctx.run.work_dir))
    record.contract_check = {
        "against": str(read_from),
        "status": found.status,
        "breaking": found.breaking,
        "compatible": found.compatible,
    }
    if found.breaking and not serving.allow_breaking:
        raise contract.ContractError(
            f"the new signatures break the contract of {read_from}: {found.summary()}; keep the names, dtypes "
            f"and shapes clients use, or pass serving.allow_breaking=true to publish anyway"
        )
    for line in found.breaking:
        ctx.run.reporter.progress(f"contract: BREAKING (serving.allow_breaking=true): {line}")
    for line in found.compatible:
        ctx.run.reporter.progress(f"contract: {line}")
    ctx.run.reporter.progress(f"contract: {found.status} with {read_from}")
    return record.contract_check


def newest_before(base: Path, version: int) -> Optional[Tuple[Dict[str, Any], Path]]:
    """The contract of the newest version below ``version`` that is on disk when it is read, and
    that version's directory; None when there is none. Read under the base path's lock, which
    ``serving.keep`` removes versions under: another export's ``keep`` never takes the version
    compared with from under the comparison."""
    from exportkit.artifact import versions

    with versions.base_lock(base):
        older = {n: p for n, p in versions.list_versions(base).items() if n < version}
        return reference_contract(older[max(older)]) if older else None


def reference_contract(path: Path) -> Tuple[Dict[str, Any], Path]:
    """The contract to compare with, from ``path``: an export (its manifest's contract, else its
    saved_model.pb), or a base path (its highest version). Returns (contract, the export read)."""
    from exportkit.artifact import contract, files, manifest
    from exportkit.artifact.versions import list_versions

    path = Path(path).expanduser().absolute()
    if files.saved_model_file(path) is None:
        versions = list_versions(path)
        if not versions:
            raise ConfigError(
                f"serving.compare_to={path} is neither an export (no saved_model.pb) nor a "
                f"base path with numbered versions; give one of those, or null"
            )
        path = versions[max(versions)]
    recorded = None
    if (path / manifest.MANIFEST).is_file():
        recorded = manifest.read(path).contract
    return (recorded if recorded is not None else contract.read(path)), path


def finish(cfg: DictConfig, slot: Slot, notify: Callable[[str], None]) -> Optional[Dict[str, Any]]:
    """After publishing a version: the model config file, then ``serving.keep``."""
    if slot.version is None or not slot.published:
        return None
    from exportkit.artifact import versions

    serving = cfg.serving
    config_file = Path(serving.model_config_file).expanduser() if serving.model_config_file else None
    return versions.finish(
        slot,
        keep=serving.keep,
        labels=dict(serving.labels),
        model_name=model_name(cfg),
        model_config_file=config_file,
        notify=notify,
    )
