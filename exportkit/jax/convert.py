"""jax2tf: a JAX function as a TensorFlow one, by native serialization (an ``XlaCallModule`` op)
lowered for ``target.platforms``, with every ``null`` of a signature's shape a symbolic dimension."""
from typing import Any, Dict, List, Optional

import tensorflow as tf
from jax.experimental import jax2tf

from exportkit.errors import ConfigError
from exportkit.jax import versions
from exportkit.signatures import name_outputs

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
BATCH_SYMBOL = "batch"


def lowering_platforms(target) -> List[str]:
    """``target.platforms`` checked against what JAX can lower for (``cpu``, ``cuda``, ...)."""
    platforms = [str(p).lower() for p in target.platforms]
    bad = [p for p in platforms if p not in PLATFORMS]
    if not platforms or bad:
        hint = " ('gpu' is spelt 'cuda' or 'rocm')" if "gpu" in bad else ""
        raise ConfigError(f"target.platforms={list(target.platforms)}: each must be one of "
                          f"{', '.join(PLATFORMS)}{hint}, and at least one is needed; e.g. target=gpu "
                          f"gives [cpu, cuda]")
    return list(dict.fromkeys(platforms))


def polymorphic_shape(name: str, shape: tf.TensorShape, override: Optional[str] = None) -> Optional[str]:
    """jax2tf's shape spec for one input: every unknown dimension a symbol; a leading unknown
    dimension is ``batch``, shared by all inputs, the others ``<input>_<axis>``.

    >>> polymorphic_shape("x", tf.TensorShape([None, 8]))
    '(batch, 8)'
    >>> polymorphic_shape("tokens", tf.TensorShape([None, None]))
    '(batch, tokens_1)'
    """
    if override is not None:
        return override
    dims = shape.as_list()
    if all(d is not None for d in dims):
        return None
    symbols = [str(d) if d is not None else (BATCH_SYMBOL if axis == 0 else f"{name}_{axis}")
               for axis, d in enumerate(dims)]
    return "(" + ", ".join(symbols) + ("," if len(symbols) == 1 else "") + ")"


def serving_fn(apply_fn, params_tree, platforms, with_gradient: bool, overrides: Dict[str, str], version: int):
    """fn(dict of input tensors) -> dict of named outputs, for the generic trace stage.

    Converted anew for each signature it is traced for, as the symbolic shapes come from that
    signature's input specs.
    """

    def fn(inputs: Dict[str, Any]) -> Dict[str, Any]:
        names = list(inputs)
        shapes = [None] + [polymorphic_shape(n, inputs[n].shape, overrides.get(n)) for n in names]
        converted = jax2tf.convert(apply_fn, polymorphic_shapes=shapes, with_gradient=with_gradient,
                                   native_serialization_platforms=tuple(platforms))
        with versions.serialization(version):
            outputs = converted(params_tree, *[inputs[n] for n in names])
        return name_outputs(outputs)

    # AutoGraph must not rewrite jax2tf's Python; the converted function is a graph already.
    return tf.autograph.experimental.do_not_convert(fn)
