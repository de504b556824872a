"""Turning a Python function over named tensors into a TensorFlow signature function."""

import inspect
import re
import unicodedata
from typing import Any, Callable, Dict

import tensorflow as tf

from exportkit.errors import ModelSourceError, SignatureError


def trace(
    fn: Callable[[Dict[str, Any]], Dict[str, Any]],
    specs: Dict[str, tf.TensorSpec],
    name: str,
    jit_compile: bool = False,
):
    """A concrete ``tf.function`` whose arguments, and so its SignatureDef inputs, are named
    after ``specs``; ``fn`` takes a dict of those tensors and returns a dict of named outputs."""
    names = list(specs)

    def signature_fn(*args):
        outputs = fn(dict(zip(names, args)))
        if not isinstance(outputs, dict) or not all(isinstance(k, str) for k in outputs):
            raise SignatureError(
                f"signature {name!r} must return a dict of named outputs, got {type(outputs).__name__}"
            )
        return outputs

    signature_fn.__signature__ = inspect.Signature(  # type: ignore[attr-defined]  # read by inspect.signature
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
    )
    signature_fn.__name__ = f"{name}_fn"
    function = tf.function(
        signature_fn, input_signature=[specs[n] for n in names], jit_compile=True if jit_compile else None
    )
    try:
        return function.get_concrete_function()
    except ValueError as error:
        bad = SCOPE_NAME.search(str(error))
        if bad is None:
            raise
        raise ModelSourceError(
            f"signature {name!r}: the model names a layer or variable {bad.group(1)!r}, which TensorFlow does not "
            f"take as a name (ASCII letters, digits and _ . - / only; Keras' own model.export() fails on it too); "
            f"rename it (e.g. name={ascii_name(bad.group(1))!r})"
        ) from None


ENDPOINT = "serve"  # the attribute Keras' export and TFSMLayer call


def positional_endpoint(signature_fn, specs):
    """A ``tf.function`` calling ``signature_fn`` (a concrete signature function) with its inputs
    given positionally: one tensor (a single input), a list in the signature's order or a dict
    by name (any number of inputs); it returns the one output as a tensor, several as the dict by name
    (what the signature returns). Each form is a small wrapper calling the signature's own
    function, so the model's graph is not copied.

    >>> serve = positional_endpoint(fn, {"image": spec_a, "meta": spec_b})  # doctest: +SKIP
    >>> serve([image, meta]) == serve({"image": image, "meta": meta})  # doctest: +SKIP
    """
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

    function = tf.function(serve, autograph=False)  # plain Python over the inputs' structure
    function.get_concrete_function({n: specs[n] for n in names})
    function.get_concrete_function([specs[n] for n in names])  # a list, even of one (a model built on [x])
    if len(names) == 1:
        function.get_concrete_function(specs[names[0]])
    return function


# TensorFlow's refusal of a layer's or variable's name as a graph scope (non-ASCII, spaces, ...)
SCOPE_NAME = re.compile(r"'([^']*)' is not a valid (?:root )?scope name")


def ascii_name(name: str) -> str:
    """``dichte_ü`` -> ``dichte_u``: a name TensorFlow takes (accents dropped, anything else as ``_``)."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", plain) or "layer"
