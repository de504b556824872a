"""The tiny JAX models the tests export: factories returning ``(apply_fn, params)``, importable
as ``_target_``s (``tests.jax_models.mlp``), in a registry that refuses duplicate names."""
import jax
import jax.numpy as jnp
import numpy as np

from tests.registry import Registry

REGISTRY = Registry()
register = REGISTRY.register


def _dense(rng, n_in, n_out):
    return {"kernel": (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype("float32"),
            "bias": rng.standard_normal(n_out).astype("float32") * 0.1}


def mlp_apply(params, x):
    """Returns one unnamed array: exported as ``output_0``."""
    h = jnp.tanh(x @ params["layers"][0]["kernel"] + params["layers"][0]["bias"])
    return h @ params["layers"][1]["kernel"] + params["layers"][1]["bias"]


@register
def mlp(features: int = 6, units: int = 16, outputs: int = 2, seed: int = 0):
    """A pure-JAX MLP whose params are a dict holding a list (key paths layers/0/kernel, ...)."""
    rng = np.random.default_rng(seed)
    return mlp_apply, {"layers": [_dense(rng, features, units), _dense(rng, units, outputs)]}


@register
def mlp_template(features: int = 6, units: int = 16, outputs: int = 2):
    """The same MLP with shape-only params: the values must come from model.params_path."""
    _, params = mlp(features, units, outputs)
    return mlp_apply, jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)


def two_inputs_apply(params, image, meta):
    # Concatenating along features needs image and meta to have the same batch size: this only
    # lowers with one shared batch symbol.
    joined = jnp.concatenate([image, meta], axis=-1)
    hidden = jax.nn.relu(joined @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    return {"score": hidden @ params["score"]["kernel"],
            "label": jax.nn.softmax(hidden @ params["label"]["kernel"], axis=-1)}


@register
def two_inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    return two_inputs_apply, {"hidden": _dense(rng, 8, 8), "score": _dense(rng, 8, 1), "label": _dense(rng, 8, 4)}


def wide_apply(params, x):
    for layer in params:
        x = jnp.tanh(x @ layer)
    return {"y": x}


@register
def wide(width: int = 8192, layers: int = 9, seed: int = 0):
    """``layers`` square float32 matrices: 9 x 8192^2 x 4 bytes = 2.25 GiB of params."""
    rng = np.random.default_rng(seed)
    params = []
    for _ in range(layers):
        w = rng.standard_normal((width, width), dtype=np.float32)
        w *= 1.0 / np.sqrt(width)
        params.append(w)
    return wide_apply, params


@register
def wide_template(width: int = 8192, layers: int = 9):
    """``wide``'s params as shapes only: the values come from model.params_path."""
    return wide_apply, [jax.ShapeDtypeStruct((width, width), jnp.float32) for _ in range(layers)]


_HANDED_OVER = {}


def hand_over(apply_fn, params):
    _HANDED_OVER["model"] = (apply_fn, params)


@register
def handed_over():
    """The ``(apply_fn, params)`` last given to ``hand_over``: a benchmark exports params that are
    already in memory, as orbax-export is given them, instead of making them again."""
    return _HANDED_OVER["model"]


@register
def not_a_pair():
    return np.zeros(3)


class TamperParams:
    """A user stage, placed after write_checkpoint, that rewrites the checkpoint with every param
    doubled: the export no longer computes the JAX function, and verify must say so."""

    needs = ("variables",)
    adds = ()
    required = True

    def __call__(self, ctx):
        import tensorflow as tf

        root = tf.Module()
        root.params_variables = [tf.Variable(v * 2.0) for v in ctx.variables["params"]]
        tf.train.Checkpoint(root).write(str(ctx.work_dir / "variables" / "variables"))
        return ctx
