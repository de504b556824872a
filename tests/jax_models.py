"""The tiny JAX models the tests export: factories returning ``(apply_fn, params)``, importable
as ``_target_``s (``tests.jax_models.mlp``), in a registry that refuses duplicate names."""

import jax
import jax.numpy as jnp
import numpy as np

from bench.jax_models import wide, wide_apply, wide_template  # noqa: F401
from tests.registry import Registry

register = Registry().register  # refuses a second factory of the same name


def misaligned(array):
    """``array``'s values 16 bytes past a 64-byte boundary, as NumPy may place any array."""
    raw = np.empty(array.nbytes + 64, np.uint8)
    start = (16 - raw.ctypes.data) % 64
    out = raw[start : start + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    assert out.ctypes.data % 64 == 16
    return out


def _dense(rng, n_in, n_out):
    return {
        "kernel": (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype("float32"),
        "bias": rng.standard_normal(n_out).astype("float32") * 0.1,
    }


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
    return {
        "score": hidden @ params["score"]["kernel"],
        "label": jax.nn.softmax(hidden @ params["label"]["kernel"], axis=-1),
    }


@register
def two_inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    return two_inputs_apply, {"hidden": _dense(rng, 8, 8), "score": _dense(rng, 8, 1), "label": _dense(rng, 8, 4)}


# The benchmarks' wide model (bench/jax_models.py): importable here as tests.jax_models.wide too.
wide = register(wide)
wide_template = register(wide_template)


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
        tf.train.Checkpoint(root).write(str(ctx.run.work_dir / "variables" / "variables"))
        return ctx
