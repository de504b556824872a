"""Exporting a Flax model: ``build`` returns ``(module.apply, variables)``, which is exactly the
``(apply_fn, params)`` pair ``model=jax`` takes (``module.apply(variables, *inputs)``).

    PYTHONPATH=examples python -m exportkit model=jax model.build._target_=flax_mlp.build \\
        '+signatures.serving_default={inputs: {features: {shape: [null, 8], dtype: float32}}}' \\
        export_dir=/tmp/flax_mlp

With trained weights, add ``model.params_path=``: an Orbax checkpoint directory
(``orbax.checkpoint.StandardCheckpointer().save(path, variables)``) or a ``.npz`` written by
``exportkit.jax.params.save_params(path, variables)``. The structure comes from ``build``, the
values from there.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
    """features -> hidden (relu, layer norm) -> class probabilities and the logits."""

    hidden: int = 32
    classes: int = 3

    @nn.compact
    def __call__(self, features):
        x = nn.relu(nn.Dense(self.hidden, name="hidden")(features))
        x = nn.LayerNorm(name="norm")(x)
        logits = nn.Dense(self.classes, name="logits")(x)
        # A dict of outputs: the SavedModel's signature outputs are named after its keys.
        return {"logits": logits, "probabilities": nn.softmax(logits)}


def build(features: int = 8, hidden: int = 32, classes: int = 3, seed: int = 0):
    """``(apply_fn, variables)`` for an ``MLP`` initialised from ``seed``.

    >>> apply_fn, variables = build(features=4)
    >>> apply_fn(variables, jnp.ones((2, 4)))["probabilities"].shape
    (2, 3)
    """
    module = MLP(hidden=hidden, classes=classes)
    variables = module.init(jax.random.key(seed), jnp.zeros((1, features), jnp.float32))
    return module.apply, variables
