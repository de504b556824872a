"""The built-in JAX example (``+experiment=jax_mlp``): a pure-JAX MLP, no neural-network library."""

import numpy as np


def build_example_jax_model(features: int = 8, units: int = 16, classes: int = 3, seed: int = 0):
    """``(apply_fn, params)`` for a tiny MLP classifier, as ``model=jax`` factories return.

    >>> apply_fn, params = build_example_jax_model(features=4)
    >>> apply_fn(params, np.ones((2, 4), "float32"))["probabilities"].shape
    (2, 3)
    """
    import jax

    rng = np.random.default_rng(seed)
    params = {
        "hidden": {
            "kernel": (rng.standard_normal((features, units)) / np.sqrt(features)).astype("float32"),
            "bias": np.zeros(units, "float32"),
        },
        "probabilities": {
            "kernel": (rng.standard_normal((units, classes)) / np.sqrt(units)).astype("float32"),
            "bias": np.zeros(classes, "float32"),
        },
    }

    def apply_fn(params, features):
        hidden = jax.nn.relu(features @ params["hidden"]["kernel"] + params["hidden"]["bias"])
        logits = hidden @ params["probabilities"]["kernel"] + params["probabilities"]["bias"]
        return {"probabilities": jax.nn.softmax(logits, axis=-1)}

    return apply_fn, params
