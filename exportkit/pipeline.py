"""The pipeline runner: stages in order, each timed and given a status, into a staging directory
that is published at ``export_dir`` only once every required stage has passed.

A model server polling ``export_dir`` never sees a half-written or unverified export: stages
write into a hidden sibling directory, which is renamed into place at the very end (an old
export is replaced only then, with ``overwrite=true``).
"""
import contextlib
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

from omegaconf import DictConfig, OmegaConf

from exportkit import hashing, manifest, report, schema
from exportkit.context import ExportContext, StageRecord
from exportkit.errors import ConfigError, ExportDirExistsError, StageSkipped, first_line


@dataclass
class ExportResult:
    export_dir: Path
    records: List[StageRecord]
    manifest: dict
    context: ExportContext


def run(cfg: DictConfig, model: Any = None, custom_objects: Optional[dict] = None) -> ExportResult:
    """Run every enabled stage of ``cfg.pipeline`` and publish the export at ``cfg.export_dir``.

    ``model`` and ``custom_objects`` hand in-memory objects to the build stage (the Python API
    does this); the CLI builds them from ``cfg.model`` and ``cfg.custom_objects``.
    Raises an ``ExportkitError`` for a user's mistake.
    """
    schema.validate(cfg)
    if (cfg.model.kind == "in_memory") != (model is not None):
        raise ConfigError("model=in_memory is for a model handed over by the Python API "
                          "(exportkit.export_saved_model); from the CLI use model=keras or model=keras_file")
    export_dir = Path(cfg.export_dir).expanduser().absolute()
    check_export_dir(export_dir, cfg.overwrite)
    stages = instantiate_stages(cfg)
    with staging_dir(export_dir) as work_dir, hashing.reuse_hashes():
        ctx = ExportContext(cfg=cfg, export_dir=export_dir, work_dir=work_dir, model=model,
                            custom_objects=dict(custom_objects or {}))
        try:
            for name, stage in stages:
                ctx = run_stage(name, stage, ctx)
        except BaseException as error:
            report.summary(ctx.records, export_dir, published=False)
            with contextlib.suppress(AttributeError):  # a sweep's summary names the failed stage
                error.stage_records = list(ctx.records)
            raise
        written = manifest.write(ctx)
        publish(work_dir, export_dir)
    report.summary(ctx.records, export_dir, published=True)
    return ExportResult(export_dir, ctx.records, written, ctx)


def check_export_dir(export_dir: Path, overwrite: bool) -> None:
    if export_dir.exists() and not export_dir.is_dir():
        raise ExportDirExistsError(f"export_dir {export_dir} exists and is a file; choose another export_dir")
    if export_dir.is_dir() and any(export_dir.iterdir()) and not overwrite:
        raise ExportDirExistsError(
            f"export_dir {export_dir} already exists and is not empty; pass overwrite=true to "
            f"replace it (the old export stays until the new one is complete), or choose another export_dir")


def instantiate_stages(cfg: DictConfig) -> List[Tuple[str, Any]]:
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from exportkit.stages.base import Stage

    stages = []
    for name, node in cfg.pipeline.stages.items():
        if node is None:
            continue
        target = node.get("_target_") if isinstance(node, DictConfig) else None
        if target is None:
            raise ConfigError(f"pipeline.stages.{name} has no `_target_`; give a stage class "
                              f"(pipeline.stages.{name}._target_=pkg.module.MyStage) or null to disable it")
        try:
            stage = instantiate(node)
        except InstantiationException as e:
            raise ConfigError(f"pipeline.stages.{name}._target_={target!r} could not be "
                              f"instantiated: {first_line(e)}") from e
        if not callable(stage):
            raise ConfigError(f"pipeline.stages.{name}._target_={target!r} is not callable; a stage "
                              f"takes the export context and returns it (see exportkit.stages.base.Stage)")
        if not isinstance(stage, Stage):
            stage.needs, stage.adds, stage.required = (), (), True
        stages.append((name, stage))
    if not stages:
        raise ConfigError("pipeline.stages is empty or all null; enable at least one stage")
    _check_dependencies(stages)
    return stages


def _check_dependencies(stages) -> None:
    added = {"cfg", "export_dir", "work_dir", "model"}
    for name, stage in stages:
        for need in stage.needs:
            if need not in added:
                raise ConfigError(f"pipeline.stages.{name} needs `{need}` from an earlier stage, "
                                  f"but no enabled stage before it adds it; re-enable that stage")
        added.update(stage.adds)


def run_stage(name: str, stage: Any, ctx: ExportContext) -> ExportContext:
    report.stage_started(name)
    start = time.perf_counter()
    status, detail, error = "ok", "", None
    try:
        result = stage(ctx)
        if result is not None:
            ctx = result
    except StageSkipped as e:
        status, detail = "skipped", str(e)
    except Exception as e:
        status, detail, error = "failed", first_line(e), e
    record = StageRecord(name, status, time.perf_counter() - start, detail)
    ctx.records.append(record)
    report.stage_ended(record)
    if error is not None and getattr(stage, "required", True):
        raise error
    return ctx


@contextlib.contextmanager
def staging_dir(export_dir: Path) -> Iterator[Path]:
    """A hidden sibling of ``export_dir`` (same filesystem, so publishing is a rename).

    Removed on any failure, together with the parent directories this run created.
    """
    created = [p for p in [export_dir.parent, *export_dir.parent.parents] if not p.exists()]
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{export_dir.name}.staging-", dir=export_dir.parent))
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        for parent in created:  # deepest first
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise


def publish(work_dir: Path, export_dir: Path) -> None:
    """Move the finished export into place; an old export is moved aside, then removed."""
    os.chmod(work_dir, 0o755)  # mkdtemp makes it 0700
    old = None
    if export_dir.exists():
        old = export_dir.parent / f".{export_dir.name}.old-{uuid.uuid4().hex[:8]}"
        export_dir.rename(old)
    work_dir.rename(export_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def resolved(cfg: DictConfig) -> DictConfig:
    """A resolved, read-only copy of ``cfg`` (interpolations such as the Hydra job dir filled in)."""
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    OmegaConf.set_readonly(out, True)
    return out
