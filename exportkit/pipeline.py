"""The pipeline runner: stages in order, each timed and given a status, into a staging directory
that is published at ``export_dir`` only once every required stage has passed.

A model server polling ``export_dir`` never sees a half-written or unverified export: stages
write into a hidden sibling directory, which is swapped into place at the very end, under a
lock that admits one writer per ``export_dir`` (``exportkit.artifact.publish``).

The fresh verification process (``exportkit.verification.process``) is started when the export
starts, so that its imports (TensorFlow, the custom objects' modules) overlap with the build,
trace and write stages; it is handed to the verify stage through the context.

>>> result = Export(cfg).run()           # cfg: a composed, resolved config
>>> result.export_dir, result.records
"""

import contextlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple

from omegaconf import DictConfig, OmegaConf

from exportkit import schema, serving, signatures
from exportkit.artifact import manifest
from exportkit.context import ExportContext, Model, Run, StageRecord
from exportkit.errors import ConfigError, ExportkitError, Interrupted, SignatureError, StageSkipped, first_line
from exportkit.imports import instantiate
from exportkit.report import Reporter
from exportkit.verification.check import require_verified
from exportkit.verification.process import Verifier, current_shared, modules_of

BASE_FIELDS = ("run", "model.instance")
# the stage of the default pipelines that adds a field, for the message when a user disabled it
ADDED_BY = {
    "graphs": "trace",
    "saved_model_file": "write_graphs",
    "verify_report": "verify",
    "model.serving_fn": "build",
    "model.reference": "build",
    "variables": "build",
    "model.custom_objects": "build",
}


class OneAtATime:
    """At most one export at a time in this process. Keras' session, Hydra's global state and the
    build stage's ``reset`` belong to the process, so exports from several threads at once would
    clear each other's models: a second thread is refused with one line (the thread that holds it
    may nest, as the Python API calls ``Export.run``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: Optional[int] = None
        self._owner_name = ""

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        me = threading.current_thread()
        if self._owner == me.ident:
            yield
            return
        if not self._lock.acquire(blocking=False):
            raise ExportkitError(
                f"another export is running in this process (thread {self._owner_name!r}); exports from "
                f"several threads at once are not supported: run them one after another, in separate "
                f"processes, or as a sweep (python -m exportkit -m ...)"
            )
        self._owner, self._owner_name = me.ident, me.name
        try:
            yield
        finally:
            self._owner, self._owner_name = None, ""
            self._lock.release()


EXPORTING = OneAtATime()


@dataclass
class ExportResult:
    """What a finished export gives back: where it is, its stages' records, its manifest, and the
    run's context."""

    export_dir: Path
    records: List[StageRecord]
    manifest: dict
    context: ExportContext


class Export:
    """One export of ``cfg``: its stages' records stay readable here when it fails.

    ``model`` and ``custom_objects`` hand in-memory objects to the build stage (the Python API
    does this); the CLI builds them from ``cfg.model`` and ``cfg.custom_objects``. ``overrides``
    are recorded in the manifest (the command line the export was asked for). ``verifier`` is a
    running ``exportkit.verification.process.Verifier`` to verify with (a sweep shares one across its
    jobs; this export does not end it); without one, the ``exportkit.shared_verifier()`` block's,
    else the export starts its own and ends it.
    """

    def __init__(
        self,
        cfg: DictConfig,
        model: Any = None,
        custom_objects: Optional[dict] = None,
        reporter: Optional[Reporter] = None,
        overrides: Sequence[str] = (),
        verifier: Optional[Verifier] = None,
    ) -> None:
        self.cfg = cfg
        self.model = model
        self.custom_objects = dict(custom_objects or {})
        self.reporter = reporter or Reporter()
        self.overrides = list(overrides)
        self.records: List[StageRecord] = []
        if verifier is None:  # inside exportkit.shared_verifier(): that block's process
            verifier = current_shared()
        self.verifier, self._owns_verifier = verifier, verifier is None
        self.published = False

    def start_verifier(self) -> Optional[Verifier]:
        """Start the verification process now if the pipeline verifies (idempotent), so that its
        start-up runs beside this process's own; the CLI calls it before importing TensorFlow.
        None without a verify stage, or with ``verify.early_start=false``."""
        if self.cfg.pipeline.stages.get("verify") is None or not self.cfg.verify.early_start:
            return None
        imports = modules_of(self.cfg.custom_objects.values())
        if self.verifier is None:
            self.verifier = Verifier(imports)
        return self.verifier.start(imports)

    def close(self) -> None:
        """End the verification process this export started (not one handed in); idempotent."""
        if self._owns_verifier and self.verifier is not None:
            self.verifier.close()
            self.verifier = None

    def run(self) -> ExportResult:
        """Run every enabled stage and publish; raises an ``ExportkitError`` for a user's mistake,
        ``Interrupted`` (saying whether it had published) for a signal."""
        try:
            with EXPORTING.held():
                return self._run()
        except KeyboardInterrupt as stop:  # the staging directory and the lock are gone already
            raise Interrupted(getattr(stop, "signal_name", "SIGINT"), published=self.published) from None
        finally:
            self.close()

    def _run(self) -> ExportResult:
        cfg = self.cfg
        schema.validate(cfg)
        verifier = self.start_verifier()
        parsed = signatures.parse(cfg.signatures)
        source = instantiate_source(cfg)
        if source.takes_object != (self.model is not None):
            raise ConfigError(
                f"{schema.model_option(cfg.model._target_)} takes a model object handed over by "
                f"the Python API (exportkit.export_saved_model); from the CLI use model=keras, "
                f"model=keras_file, model=jax or model=tf_keras"
            )
        if source.signatures_required and not parsed:
            raise SignatureError(source.signatures_required)
        stages = instantiate_stages(cfg, source)
        # export_dir, or with serving.base_path the version chosen (exportkit.serving)
        with serving.open_slot(cfg, notify=self.reporter.progress) as slot:
            export_dir = slot.export_dir
            run = Run(
                cfg=cfg,
                export_dir=export_dir,
                work_dir=slot.work_dir,
                source=source,
                reporter=self.reporter,
                overrides=self.overrides,
                records=self.records,
                verifier=verifier,
            )
            model = Model(self.model, self.custom_objects, signatures.to_specs(parsed))
            ctx = ExportContext(run, model)
            ctx.serving = serving.release_info(cfg, slot)
            try:
                for name, stage in stages:
                    ctx = run_stage(name, stage, ctx)
                ctx.run.background.finish(ctx.run.reporter)
                require_verified(ctx)  # nothing unverified is published unless the user said so
                serving.check_contract(ctx)
            except BaseException:
                ctx.run.background.abandon(self.reporter.progress)  # before the staging directory goes
                self.reporter.summary(ctx.run.records, export_dir, published=False)
                raise
            written = manifest.write(ctx)
            slot.publish()
            self.published = True
        serving.finish(cfg, slot, notify=self.reporter.progress)
        self.reporter.summary(ctx.run.records, export_dir, published=True)
        return ExportResult(export_dir, ctx.run.records, written.to_dict(), ctx)


def run(cfg: DictConfig, model: Any = None, custom_objects: Optional[dict] = None, **kwargs) -> ExportResult:
    """``Export(cfg, ...).run()``: run every enabled stage of ``cfg.pipeline`` and publish."""
    return Export(cfg, model, custom_objects, **kwargs).run()


def instantiate_source(cfg: DictConfig):
    """The model source named by ``model._target_`` (its other fields are its arguments)."""
    from exportkit.sources.base import Source

    source = instantiate(
        cfg.model,
        "model._target_",
        ConfigError,
        "give a model source class (see exportkit.sources.base.Source)",
        _recursive_=False,
    )
    if not isinstance(source, Source):
        raise ConfigError(
            f"model._target_={cfg.model._target_!r} is not a model source; give a subclass "
            f"of exportkit.sources.base.Source"
        )
    return source


PLACEMENT = ("before", "after")  # a stage node's keys that place it, not its constructor's arguments


def stage_order(nodes) -> List[str]:
    """The enabled stages' names in the order they run: the config's order, except that a node
    with ``before: NAME`` or ``after: NAME`` runs right before or after stage NAME (so
    ``+pipeline.stages.mine={_target_: pkg.Mine, after: trace}`` goes anywhere)."""
    enabled = {name: node for name, node in nodes.items() if node is not None}
    placed = {}
    for name, node in enabled.items():
        keys = [k for k in PLACEMENT if isinstance(node, DictConfig) and node.get(k) is not None]
        if len(keys) > 1:
            raise ConfigError(f"pipeline.stages.{name} has both `before` and `after`; give one of them")
        if keys:
            placed[name] = (keys[0], str(node[keys[0]]))
    order = [name for name in enabled if name not in placed]
    while placed:
        ready = [name for name, (_, anchor) in placed.items() if anchor in order]
        if not ready:
            name, (where, anchor) = next(iter(placed.items()))
            if anchor in enabled:
                raise ConfigError(
                    f"pipeline.stages.{name}.{where}={anchor!r}: {anchor} is placed relative to {name} in turn; "
                    f"place one of them by a stage that is not placed itself"
                )
            raise ConfigError(
                f"pipeline.stages.{name}.{where}={anchor!r} names no enabled stage; the stages are {', '.join(enabled)}"
            )
        for name in ready:
            where, anchor = placed.pop(name)
            at = order.index(anchor)
            order.insert(at if where == "before" else at + 1, name)
    return order


def instantiate_stages(cfg: DictConfig, source) -> List[Tuple[str, Any]]:
    from exportkit.stages.base import CallableStage, Stage

    stages = []
    for name in stage_order(cfg.pipeline.stages):
        node = cfg.pipeline.stages[name]
        if isinstance(node, DictConfig) and any(k in node for k in PLACEMENT):
            arguments = OmegaConf.to_container(node)
            assert isinstance(arguments, dict)  # a DictConfig's container
            node = OmegaConf.create({k: v for k, v in arguments.items() if k not in PLACEMENT})
        target = node.get("_target_") if isinstance(node, DictConfig) else None
        if target is None:
            raise ConfigError(
                f"pipeline.stages.{name} has no `_target_`; give a stage class "
                f"(pipeline.stages.{name}._target_=pkg.module.MyStage) or null to disable it"
            )
        stage = instantiate(
            node, f"pipeline.stages.{name}._target_", ConfigError, "check the dotted path and the stage's arguments"
        )
        if not callable(stage):
            raise ConfigError(
                f"pipeline.stages.{name}._target_={target!r} is not callable; a stage "
                f"takes the export context and returns it (see exportkit.stages.base.Stage)"
            )
        if not isinstance(stage, Stage):
            stage = CallableStage(stage)
        if stage.wanted(cfg):
            stages.append((name, stage))
    if not stages:
        raise ConfigError("pipeline.stages is empty or all null; enable at least one stage")
    check_dependencies(stages, source)
    return stages


def check_dependencies(stages, source) -> None:
    """Every stage's ``needs`` is added by an earlier stage (the build stage adds its source's)."""
    added = set(BASE_FIELDS) | {"model.signatures"}  # signatures: from the config, or inferred by the source
    for name, stage in stages:
        for need in stage.needs:
            if need not in added:
                hint = source.missing_hint(need) or (
                    f"re-enable pipeline.stages.{ADDED_BY[need]}, which adds it"
                    if need in ADDED_BY
                    else "re-enable the stage that adds it"
                )
                raise ConfigError(
                    f"pipeline.stages.{name} needs `{need}` from an earlier stage, "
                    f"but no enabled stage before it adds it; {hint}"
                )
        added.update(stage.adds)
        if stage.loads_source:
            added.update(source.adds)


def run_stage(name: str, stage: Any, ctx: ExportContext) -> ExportContext:
    """Run one stage, timed, and record it: ok, skipped (``StageSkipped``) or failed (a required
    stage's failure is raised; an optional one's is recorded and the export goes on)."""
    if stage.reads_files:
        ctx.run.background.finish(ctx.run.reporter)
    ctx.run.reporter.stage_started(name)
    start = time.perf_counter()
    status, detail, error = "ok", "", None
    try:
        result = stage(ctx)
        if result is not None:
            ctx = result
    except StageSkipped as e:
        status, detail = "skipped", str(e)
    except Exception as e:  # noqa: BLE001 - recorded as the stage's failure; a required stage's raised
        if e is ctx.run.background.failed:
            # an earlier stage's work failed while this stage ran beside it: that stage's failure
            # (recorded as such), not this one's, which is left unrecorded as if it had not run
            raise
        status, detail, error = "failed", first_line(e), e
    record = StageRecord(name, status, time.perf_counter() - start, detail)
    ctx.run.records.append(record)
    if not ctx.run.background.left_by(record, stage.required, start):
        ctx.run.reporter.stage_ended(record)  # else once the work it left running ends
    if error is not None and stage.required:
        raise error
    return ctx


def resolved(cfg: DictConfig) -> DictConfig:
    """A resolved, read-only copy of ``cfg`` (interpolations such as the Hydra job dir filled in)."""
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    assert isinstance(out, DictConfig)  # a DictConfig's container is a dict
    OmegaConf.set_readonly(out, True)
    return out
