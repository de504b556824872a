"""write_checkpoint: every variable group as one object-based checkpoint under ``variables/``."""

import tensorflow as tf

from exportkit import background
from exportkit.artifact import bundle
from exportkit.context import ExportContext
from exportkit.stages.base import Stage
from exportkit.variables import all_graph_resources, fill, mib, nbytes, trackable_root


class WriteCheckpoint(Stage):
    needs = ("variables",)
    reads_variables = False  # what it writes of a variable made without values: its array

    def __call__(self, ctx: ExportContext) -> ExportContext:
        groups = list(ctx.variables)
        count = sum(len(ctx.variables[g]) for g in groups)
        size = nbytes(v for g in groups for v in ctx.variables[g])
        resources = all_graph_resources(ctx.graphs)
        ctx.reporter.progress(
            f"{count} variables, {mib(size)} ({', '.join(groups)})"
            + (f", {len(resources)} other resources" if resources else "")
        )
        # The root is the same object layout every MetaGraphDef is saved from (see
        # exportkit.variables.trackable_root), so checkpoint keys match for the TF2 and TF1 loaders.
        ctx.checkpointed_resources = list(resources)
        checkpoint = tf.train.Checkpoint(trackable_root(ctx.variables, groups, resources))
        prefix = ctx.work_dir / "variables" / "variables"
        items = bundle.entries(checkpoint, ctx.unfilled)
        if items is None:  # a checkpoint only TensorFlow's save writes (exportkit.artifact.bundle)
            fill(ctx)
            checkpoint.write(str(prefix))
            # the fingerprint and the manifest hash these files: begun now, beside the graphs' writing
            ctx.hashes.prefetch(sorted(p for p in prefix.parent.iterdir() if p.is_file()))
        else:  # the same bytes, hashed as they are written, on a thread while the graphs are saved
            prefix.parent.mkdir(exist_ok=True)
            background.start(ctx, lambda stop: ctx.hashes.remember(bundle.write(prefix, items, stop)))
        return ctx
