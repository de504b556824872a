"""jax2tf: a JAX model's params become ``tf.Variable``s and its function a TensorFlow one.

The params are passed to the converted function as arguments, never closed over, so they are
variables in the checkpoint and ``saved_model.pb`` holds only the serialized StableHLO module
(small whatever the weights weigh; a closed-over 2 GiB array would break the protobuf limit).
The conversion is jax2tf's native serialization (an ``XlaCallModule`` op), lowered for
``target.platforms``, with every ``null`` of a signature's shape a symbolic dimension.
"""
from typing import Any, Dict, List, Mapping, Optional

import jax
import numpy as np
import tensorflow as tf
from jax.experimental import jax2tf

from exportkit import host_buffers, jax_versions, report
from exportkit.context import ExportContext
from exportkit.errors import ConfigError
from exportkit.sources.jax import JaxModel, flatten, name_outputs
from exportkit.stages.base import Stage

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
BATCH_SYMBOL = "batch"


class Jax2TF(Stage):
    """Configured in ``conf/pipeline/jax.yaml``::

        jax2tf:
          _target_: exportkit.stages.jax2tf.Jax2TF
          with_gradient: false      # true: the SavedModel carries JAX's VJP, variables trainable
          polymorphic_shapes: null  # input name -> jax2tf shape, e.g. {tokens: "(batch, seq)"}
    """

    needs = ("model", "signatures")
    adds = ("serving_fn", "variables")

    def __init__(self, with_gradient: bool = False, polymorphic_shapes: Optional[Mapping[str, str]] = None,
                 required: bool = True) -> None:
        super().__init__(required)
        self.with_gradient = bool(with_gradient)
        self.polymorphic_shapes = dict(polymorphic_shapes or {})

    def __call__(self, ctx: ExportContext) -> ExportContext:
        model = ctx.model
        if not isinstance(model, JaxModel):
            raise ConfigError(f"pipeline.stages.jax2tf converts JAX models, but model.kind="
                              f"{ctx.cfg.model.kind}; use pipeline={ctx.cfg.model.kind} for it")
        self._check_overrides(ctx.signatures)
        platforms = lowering_platforms(ctx.cfg.target)
        choice = jax_versions.choose()
        if choice.lowered:
            report.progress(f"this TensorFlow's XlaCallModule runs versions up to {choice.tf_max}: "
                            f"serializing with version {choice.version} instead of JAX's {choice.jax_default}")
        variables, tree = make_variables(model, trainable=self.with_gradient)
        ctx.variables["params"] = variables
        ctx.serving_fn = serving_fn(model.apply_fn, tree, platforms, self.with_gradient,
                                    self.polymorphic_shapes, choice.version)
        ctx.extra["jax2tf"] = {"platforms": list(platforms), "calling_convention_version": choice.version,
                               "with_gradient": self.with_gradient}
        size = sum(v.shape.num_elements() * v.dtype.size for v in variables)
        report.progress(f"{len(variables)} params as variables ({size / 2**20:.1f} MiB), lowering for "
                        f"{', '.join(platforms)}, calling convention version {choice.version}")
        return ctx

    def _check_overrides(self, signatures) -> None:
        names = {n for specs in signatures.values() for n in specs}
        unknown = sorted(set(self.polymorphic_shapes) - names)
        if unknown:
            raise ConfigError(f"pipeline.stages.jax2tf.polymorphic_shapes names {unknown}, which no "
                              f"signature has as an input; inputs are {sorted(names)}")


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


def make_variables(model: JaxModel, trainable: bool):
    """One ``tf.Variable`` per params leaf (in pytree order) and the params pytree of them.

    Each leaf is replaced in ``model.params`` by a read-only NumPy view of its variable, so the
    reference the verify stage runs is the JAX function over the very values exported, and the
    weights are held once, not twice: at peak, the params plus at most one leaf (``to_variable``).
    """
    leaves, treedef = flatten(model.params)
    model.params = None  # the pytree's containers hold the source arrays too: let them go leaf by leaf
    variables, views = [], []
    # On the host even where TensorFlow sees a GPU: a variable there would be a second copy of
    # the weights. The SavedModel records no device for them; a server places them itself.
    with tf.device("/CPU:0"):
        for i, (key, leaf) in enumerate(leaves):
            leaves[i] = None  # ours was the last reference: the source array goes once it is copied
            variable = to_variable(leaf, trainable, _variable_name(key, i))
            del leaf
            variables.append(variable)
            views.append(_view(variable))
    model.params = jax.tree_util.tree_unflatten(treedef, views)
    return variables, jax.tree_util.tree_unflatten(treedef, variables)


def to_variable(leaf, trainable: bool, name: str):
    """A ``tf.Variable`` holding ``leaf``'s values, made with at most one copy, often none.

    ``tf.Variable(array)`` goes through an intermediate tensor (two transient copies of the leaf,
    which for multi-GiB params is the peak of the whole export). A leaf TensorFlow can adopt (a
    CPU ``jax.Array``, an aligned NumPy array such as ``.npz`` params are read into) becomes the
    variable's buffer through DLPack; any other is first copied once into an aligned buffer.
    The variable then shares memory with the params given: exportkit writes to neither.
    """
    tensor = _adopt(leaf)
    if tensor is None:
        array = np.asarray(leaf)
        try:
            tensor = _from_dlpack(host_buffers.aligned_copy(array))
        except (BufferError, TypeError, ValueError, tf.errors.OpError):
            tensor = array  # a dtype NumPy's DLPack cannot carry (e.g. bfloat16): the copying way
    return tf.Variable(tensor, trainable=trainable, name=name)


def _adopt(leaf):
    try:
        if isinstance(leaf, jax.Array):
            devices = leaf.devices()
            if len(devices) == 1 and next(iter(devices)).platform == "cpu" and leaf.is_fully_addressable:
                if leaf.unsafe_buffer_pointer() % host_buffers.ALIGNMENT == 0:
                    return _from_dlpack(leaf)
        elif isinstance(leaf, np.ndarray) and leaf.flags.writeable and host_buffers.is_aligned(leaf):
            return _from_dlpack(leaf)
    except (BufferError, TypeError, ValueError, tf.errors.OpError):
        pass
    return None


def _from_dlpack(array):
    return tf.experimental.dlpack.from_dlpack(array.__dlpack__())


def _view(variable) -> np.ndarray:
    """The variable's CPU buffer as a NumPy array, without a copy (TF's ``.numpy()`` copies)."""
    value = variable.read_value()
    array = value._numpy()  # shares the tensor's buffer, and keeps the tensor alive
    array.flags.writeable = False
    return array


def _variable_name(key: str, index: int) -> str:
    name = "".join(c if c.isalnum() or c in "_." else "_" for c in key.replace("/", "."))
    return name or f"param_{index}"


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
        with jax_versions.serialization(version):
            outputs = converted(params_tree, *[inputs[n] for n in names])
        return name_outputs(outputs)

    # AutoGraph must not rewrite jax2tf's Python; the converted function is a graph already.
    return tf.autograph.experimental.do_not_convert(fn)
