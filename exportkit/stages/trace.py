"""trace: a ``tf.function`` per signature for the ``serve`` graph, and for a compiled model
(unless ``serving_only``) the ``train`` and ``eval`` steps for the ``train``/``eval`` graphs.

The ``serve`` graph also gets a positional endpoint, ``serve``, as Keras' ``model.export()``
writes one: signature functions take keyword arguments only, and ``keras.layers.TFSMLayer``
(whose default ``call_endpoint`` is ``serve``) passes its inputs as one positional argument.
"""

from exportkit.context import ExportContext, Graph
from exportkit.stages.base import Stage
from exportkit.tracing import trace

ENDPOINT = "serve"  # the attribute Keras' export and TFSMLayer use


class Trace(Stage):
    needs = ("model.signatures", "model.serving_fn", "variables")
    adds = ("graphs",)

    def __call__(self, ctx: ExportContext) -> ExportContext:
        jit = ctx.run.cfg.target.jit_compile
        serving_fn = ctx.model.serving_fn
        assert serving_fn is not None  # in ``needs``: set before this stage runs
        serving = {key: trace(serving_fn, specs, key, jit) for key, specs in ctx.model.signatures.items()}
        key = "serving_default" if "serving_default" in serving else next(iter(serving))
        endpoint = positional_endpoint(serving[key], ctx.model.signatures[key])
        ctx.graphs["serve"] = Graph("serve", serving, list(ctx.variables), {ENDPOINT: endpoint})
        if ctx.training is not None and not ctx.run.cfg.serving_only:
            trace_training(ctx, next(iter(serving.values())), jit)
        return ctx


def positional_endpoint(signature_fn, specs):
    """A ``tf.function`` calling ``signature_fn`` (a concrete signature function) with its inputs
    given positionally: one tensor (a single input), a list in the signature's order or a dict
    by name (any number of inputs); it returns the one output as a tensor, several as the dict by name
    (what the signature returns). Each form is a small wrapper calling the signature's own
    function, so the model's graph is not copied.

    >>> serve = positional_endpoint(fn, {"image": spec_a, "meta": spec_b})  # doctest: +SKIP
    >>> serve([image, meta]) == serve({"image": image, "meta": meta})  # doctest: +SKIP
    """
    import tensorflow as tf

    names = list(specs)

    def serve(inputs):
        if isinstance(inputs, dict):
            named = dict(inputs)
        elif isinstance(inputs, (list, tuple)):
            named = dict(zip(names, inputs))
        else:
            named = {names[0]: inputs}
        outputs = signature_fn(**named)
        return next(iter(outputs.values())) if len(outputs) == 1 else outputs

    function = tf.function(serve)
    function.get_concrete_function({n: specs[n] for n in names})
    function.get_concrete_function([specs[n] for n in names])  # a list, even of one (a model built on [x])
    if len(names) == 1:
        function.get_concrete_function(specs[names[0]])
    return function


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
