"""write_checkpoint: every variable group as one object-based checkpoint under ``variables/``,
written by TensorFlow's own save (``tf.train.Checkpoint.write``), beside the stages that follow
until one reads the export's files (``exportkit.background``)."""

import functools

import tensorflow as tf

from exportkit.context import ExportContext
from exportkit.stages.base import Stage
from exportkit.variables import all_graph_resources, mib, nbytes, trackable_root


class WriteCheckpoint(Stage):
    needs = ("variables",)

    def __call__(self, ctx: ExportContext) -> ExportContext:
        groups = list(ctx.variables)
        count = sum(len(ctx.variables[g]) for g in groups)
        size = nbytes(v for g in groups for v in ctx.variables[g])
        resources = all_graph_resources(ctx.graphs)
        ctx.run.reporter.progress(
            f"{count} variables, {mib(size)} ({', '.join(groups)})"
            + (f", {len(resources)} other resources" if resources else "")
        )
        # The root is the same object layout every MetaGraphDef is saved from (see
        # exportkit.variables.trackable_root), so checkpoint keys match for the TF2 and TF1 loaders.
        ctx.checkpointed_resources = list(resources)
        checkpoint = tf.train.Checkpoint(trackable_root(ctx.variables, groups, resources))
        (ctx.run.work_dir / "variables").mkdir(exist_ok=True)  # there for the graphs' links at once
        # TensorFlow's save op writes on while the next stages build the graphs (exportkit.background)
        ctx.run.background.start(functools.partial(checkpoint.write, str(ctx.run.work_dir / "variables" / "variables")))
        return ctx
