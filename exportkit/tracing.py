"""Turning a Python function over named tensors into a TensorFlow signature function."""

import inspect
from typing import Any, Callable, Dict

import tensorflow as tf

from exportkit.errors import SignatureError


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
    return function.get_concrete_function()
