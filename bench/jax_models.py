"""The benchmarks' JAX model: ``layers`` square float32 matrices, as wide as asked
(``_target_: bench.jax_models.wide``; the tests import it too)."""

import jax
import jax.numpy as jnp
import numpy as np


def wide_apply(params, x):
    for layer in params:
        x = jnp.tanh(x @ layer)
    return {"y": x}


def wide(width: int = 8192, layers: int = 9, seed: int = 0):
    """``layers`` square float32 matrices: 9 x 8192^2 x 4 bytes = 2.25 GiB of params."""
    rng = np.random.default_rng(seed)
    params = []
    for _ in range(layers):
        w = rng.standard_normal((width, width), dtype=np.float32)
        w *= 1.0 / np.sqrt(width)
        params.append(w)
    return wide_apply, params


def wide_template(width: int = 8192, layers: int = 9):
    """``wide``'s params as shapes only: the values come from model.params_path."""
    return wide_apply, [jax.ShapeDtypeStruct((width, width), jnp.float32) for _ in range(layers)]
