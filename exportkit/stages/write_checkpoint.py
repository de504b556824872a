"""write_checkpoint: every variable group as one object-based checkpoint under ``variables/``."""
import tensorflow as tf

from exportkit import report
from exportkit.context import ExportContext
from exportkit.stages.base import Stage


class WriteCheckpoint(Stage):
    needs = ("variables",)

    def __call__(self, ctx: ExportContext) -> ExportContext:
        groups = list(ctx.variables)
        count = sum(len(ctx.variables[g]) for g in groups)
        size = sum(v.shape.num_elements() * v.dtype.size for g in groups for v in ctx.variables[g])
        report.progress(f"{count} variables, {size / 2**20:.1f} MiB ({', '.join(groups)})")
        # The root is the same object layout every MetaGraphDef is saved from (see
        # ExportContext.trackable_root), so checkpoint keys match for the TF2 and TF1 loaders.
        checkpoint = tf.train.Checkpoint(ctx.trackable_root(groups))
        checkpoint.write(str(ctx.work_dir / "variables" / "variables"))
        return ctx
