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


# TensorFlow's refusal of a layer's or variable's name as a graph scope (non-ASCII, spaces, ...)
SCOPE_NAME = re.compile(r"'([^']*)' is not a valid (?:root )?scope name")


def ascii_name(name: str) -> str:
    """``dichte_ü`` -> ``dichte_u``: a name TensorFlow takes (accents dropped, anything else as ``_``)."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", plain) or "layer"
