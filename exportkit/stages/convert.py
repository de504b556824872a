"""convert: every deployment format of ``formats`` (``exportkit.formats``) converted from the
staged SavedModel into ``formats/<name>/``, the converter's own output in a log file.

The SavedModel stays what TF Serving and the TF loaders read; the artifacts are published with it
in the same atomic step, hashed into the manifest, and verified by the verify stage with their
own runtimes. Without ``formats`` the runner leaves the stage out.
"""

import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional, Set

from exportkit.context import ExportContext, FormatRecord
from exportkit.errors import ConfigError, ConversionError, ExportkitError, one_line
from exportkit.formats.base import FORMATS_DIR, Format
from exportkit.imports import instantiate
from exportkit.stages.base import Stage


class Convert(Stage):
    needs = ("saved_model_file",)
    adds = ("formats",)

    def wanted(self, cfg) -> bool:
        return bool(cfg.get("formats"))

    def __call__(self, ctx: ExportContext) -> ExportContext:
        for name, node in (ctx.run.cfg.get("formats") or {}).items():
            fmt = load_format(name, node)
            record = FormatRecord(
                target=str(node["_target_"]),
                options=fmt.options(),
                optional=fmt.optional,
                tolerance=fmt.tolerance,
                min_top1=fmt.min_top1,
            )
            out = ctx.run.work_dir / FORMATS_DIR / name
            start = time.perf_counter()
            try:
                missing = fmt.missing()
                if missing:
                    raise ConversionError(f"formats.{name} needs packages that are not installed: {missing}")
                refused = sorted(set(fmt.refused_ops) & serve_ops(ctx))
                if refused:
                    raise ConversionError(f"formats.{name}: {fmt.refused_ops[refused[0]]}")
                out.mkdir(parents=True)
                with converter_log(name) as log:
                    try:
                        fmt.convert(ctx.run.work_dir, out, ctx.model.signatures)
                    except ExportkitError as error:
                        raise type(error)(f"{error} (the converter's output: {log})") from error
            except ExportkitError as error:
                shutil.rmtree(out, ignore_errors=True)
                if not fmt.optional:
                    raise
                record.status, record.reason = "failed", one_line(error)
                ctx.run.reporter.progress(f"{name}: left out (optional): {record.reason}")
                ctx.formats[name] = record
                continue
            record.convert_s = time.perf_counter() - start
            written = sorted(p for p in out.rglob("*") if p.is_file())
            record.files = [p.relative_to(ctx.run.work_dir).as_posix() for p in written]
            record.size_bytes = sum(p.stat().st_size for p in written)
            ctx.run.reporter.progress(
                f"{name}: {', '.join(p.name for p in written)} ({record.size_bytes / 2**20:.2f} MiB, "
                f"{record.convert_s:.2f}s)"
            )
            ctx.formats[name] = record
        return ctx


def serve_ops(ctx: ExportContext) -> Set[str]:
    """The op types of the written serve graph (and its functions), read from the staged export."""
    from exportkit.artifact import files, op_libraries

    saved = files.read_saved_model(ctx.run.work_dir)
    return op_libraries.graph_ops(m for m in saved.meta_graphs if "serve" in m.meta_info_def.tags) if saved else set()


def load_format(name: str, node) -> Format:
    """The ``formats.<name>`` node's plugin; a wrong one is a ``ConfigError`` naming the key."""
    if not hasattr(node, "get") or node.get("_target_") is None:
        raise ConfigError(
            f"formats.{name} has no `_target_`; choose a format with +formats=[{name}] "
            f"(litert, onnx, openvino) or give formats.{name}._target_=pkg.module.MyFormat"
        )
    fmt = instantiate(node, f"formats.{name}._target_", ConfigError, "check the format's options")
    if not isinstance(fmt, Format):
        raise ConfigError(f"formats.{name}._target_={node['_target_']!r} is not an exportkit.formats.base.Format")
    return fmt


@contextlib.contextmanager
def converter_log(name: str) -> Iterator[Path]:
    """Everything written to this process's stdout and stderr (the converters' own logs, Python
    and C++ alike) goes to a log file while the block runs: ``convert-<name>.log`` in the Hydra run
    directory, else a temporary file removed when the block succeeds."""
    from exportkit.verification.check import run_dir

    directory: Optional[Path] = run_dir()
    if directory is not None:
        path = directory / f"convert-{name}.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    else:
        fd, name_ = tempfile.mkstemp(prefix=f"exportkit-convert-{name}-", suffix=".log")
        path = Path(name_)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    failed = True
    try:
        yield path
        failed = False
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for descriptor in (*saved, fd):
            os.close(descriptor)
        if directory is None and not failed:
            path.unlink(missing_ok=True)
