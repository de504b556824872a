"""trace: a ``tf.function`` per signature for the ``serve`` graph, and for a compiled model
(unless ``serving_only``) the ``train`` and ``eval`` steps for the ``train``/``eval`` graphs."""
from collections import OrderedDict

import tensorflow as tf

from exportkit.context import ExportContext, Graph
from exportkit.stages.base import Stage
from exportkit.tracing import trace


class Trace(Stage):
    needs = ("signatures", "serving_fn", "variables")
    adds = ("graphs",)

    def __call__(self, ctx: ExportContext) -> ExportContext:
        jit = ctx.cfg.target.jit_compile
        serving = {key: trace(ctx.serving_fn, specs, key, jit) for key, specs in ctx.signatures.items()}
        ctx.graphs["serve"] = Graph("serve", serving, list(ctx.variables))
        if ctx.training is not None and not ctx.cfg.serving_only:
            trace_training(ctx, next(iter(serving.values())), jit)
        return ctx


def trace_training(ctx: ExportContext, serving_fn, jit: bool) -> None:
    """``train``/``eval`` take the first signature's inputs plus a ``<output>_target`` per output."""
    inputs = next(iter(ctx.signatures.values()))
    targets = OrderedDict(
        (f"{name}_target", tf.TensorSpec(out.shape, out.dtype, name=f"{name}_target"))
        for name, out in serving_fn.structured_outputs.items())

    def step(fn):
        def call(tensors):
            return fn({n: tensors[n] for n in inputs}, {t[: -len("_target")]: tensors[t] for t in targets})
        return call

    specs = OrderedDict(list(inputs.items()) + list(targets.items()))
    train = trace(step(ctx.training.train_fn), specs, "train", jit)
    evaluate = trace(step(ctx.training.eval_fn), specs, "eval", jit)
    ctx.variables.update(ctx.training.variables())  # optimizer slots, metric state: built by tracing
    ctx.graphs["train"] = Graph("train", {"train": train}, list(ctx.variables))
    ctx.graphs["eval"] = Graph("eval", {"eval": evaluate}, [g for g in ctx.variables if g != "optimizer"])
