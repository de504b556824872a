"""trace: a ``tf.function`` per signature for the ``serve`` graph, and for a compiled model
(unless ``serving_only``) the ``train`` and ``eval`` steps for the ``train``/``eval`` graphs.
(``write_graphs`` adds the ``serve`` graph's positional endpoint: ``exportkit.tracing.positional_endpoint``.)
"""

from exportkit.context import ExportContext, Graph
from exportkit.stages.base import Stage
from exportkit.tracing import trace


class Trace(Stage):
    needs = ("model.signatures", "model.serving_fn", "variables")
    adds = ("graphs",)

    def __call__(self, ctx: ExportContext) -> ExportContext:
        jit = ctx.run.cfg.target.jit_compile
        serving_fn = ctx.model.serving_fn
        assert serving_fn is not None  # in ``needs``: set before this stage runs
        serving = {key: trace(serving_fn, specs, key, jit) for key, specs in ctx.model.signatures.items()}
        ctx.graphs["serve"] = Graph("serve", serving, list(ctx.variables))
        if ctx.training is not None and not ctx.run.cfg.serving_only:
            trace_training(ctx, next(iter(serving.values())), jit)
        return ctx


def trace_training(ctx: ExportContext, serving_fn, jit: bool) -> None:
    """``train``/``eval`` take the inputs the source's ``Training.step_specs`` gives for the
    first signature's inputs and outputs."""
    training = ctx.training
    assert training is not None  # called only for a context with one
    specs = training.step_specs(next(iter(ctx.model.signatures.values())), serving_fn.structured_outputs)
    train = trace(training.train_fn, specs, "train", jit)
    evaluate = trace(training.eval_fn, specs, "eval", jit)
    ctx.variables.update(training.variables())  # optimizer slots, metric state: built by tracing
    ctx.graphs["train"] = Graph("train", {"train": train}, list(ctx.variables))
    ctx.graphs["eval"] = Graph(
        "eval", {"eval": evaluate}, [g for g in ctx.variables if g not in training.eval_excludes]
    )
