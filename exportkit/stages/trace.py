"""trace: a ``tf.function`` per signature, collected into the ``serve`` graph."""
import tensorflow as tf

from exportkit.context import ExportContext, Graph
from exportkit.stages.base import Stage
from exportkit.tracing import trace


class Trace(Stage):
    needs = ("signatures", "serving_fn", "variables")
    adds = ("graphs",)

    def __call__(self, ctx: ExportContext) -> ExportContext:
        jit = ctx.cfg.target.jit_compile
        functions = {key: trace(ctx.serving_fn, specs, key, jit) for key, specs in ctx.signatures.items()}
        ctx.graphs["serve"] = Graph("serve", functions, list(ctx.variables))
        return ctx
