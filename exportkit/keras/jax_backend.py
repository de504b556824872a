"""Keras 3 on the JAX backend: the model as a pure function of its variables, converted by jax2tf.

On the TensorFlow backend the ``serve`` graph calls the Keras model itself. On the JAX backend a
Keras model cannot be called on TensorFlow tensors, so the Keras source (``exportkit.keras.source``)
exports it the way the ``jax2tf`` stage exports a JAX model (``exportkit.jax.convert``): each of
the model's variables becomes a ``tf.Variable`` named by its Keras path (in ``model.variables``
order, the ``model`` group, as on the TensorFlow backend), and the graph calls the model
(``training=False``) in a ``keras.StatelessScope`` mapping each variable to its value, converted by
jax2tf's native serialization, as Keras' own ``model.export()`` does on JAX. The weights are in
the checkpoint, never in the graph.

Serving only: the ``train``/``eval`` graphs of a compiled model need the TensorFlow backend.
The torch backend is refused with one line (Keras' own ``model.export()`` needs torch_xla there).
"""

import re
from typing import Any, Dict, Tuple

import keras

from exportkit.context import Conversion, ExportContext
from exportkit.errors import ModelSourceError
from exportkit.keras import stateful

# What TensorFlow takes as an op (and so a variable) name.
_TF_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*")


def backend() -> str:
    return keras.backend.backend()


def check(model, cfg) -> None:
    """One ``ModelSourceError`` line for what this backend cannot export: anything on torch; on
    JAX, the ``train``/``eval`` graphs of a compiled model (unless ``serving_only=true``)."""
    name = backend()
    if name == "torch":
        raise ModelSourceError(
            "exportkit does not export Keras models on the torch backend (Keras' own model.export() goes "
            "through torch_xla there); run the export with KERAS_BACKEND=tensorflow (or jax) on the same "
            "model, e.g. saved as a .keras file: model=keras_file model.path=..."
        )
    if name == "jax" and stateful.stateful_layers(model):
        layer = stateful.stateful_layers(model)[0][0]
        raise ModelSourceError(
            f"layer {layer.name!r} ({type(layer).__name__}) is stateful, and on the JAX backend its state would "
            f"be fixed at export time rather than carried from call to call; run the export with "
            f"KERAS_BACKEND=tensorflow (the model saved as a .keras file: model=keras_file model.path=...)"
        )
    if name == "jax" and compiled(model) and not cfg.serving_only:
        raise ModelSourceError(
            f"the {model.name!r} model ({type(model).__name__}) is compiled, and its train/eval graphs need the TensorFlow "
            f"backend (on the JAX backend the serve graph alone is exported, through jax2tf); give "
            f"serving_only=true to export the serve graph, or run with KERAS_BACKEND=tensorflow for all three"
        )


def compiled(model) -> bool:
    return bool(getattr(model, "compiled", False)) and getattr(model, "optimizer", None) is not None


def convert(ctx: ExportContext, model) -> None:
    """Set ``ctx.variables["model"]``, ``ctx.model.serving_fn`` and ``ctx.conversion`` for a Keras
    model on the JAX backend (``ctx.model.signatures`` is resolved and the model built)."""
    import tensorflow as tf

    from exportkit.jax import versions
    from exportkit.jax.convert import lowering_platforms, serving_fn
    from exportkit.jax.variables import to_variable

    platforms = lowering_platforms(ctx.run.cfg.target)
    choice = versions.choose(notify=ctx.run.reporter.progress)
    names = variable_names(model)
    with tf.device("/CPU:0"):  # on the host, as the jax2tf stage keeps a JAX model's params
        variables = [to_variable(v.value, bool(v.trainable), name) for v, name in zip(model.variables, names.values())]
    ctx.variables["model"] = variables
    converted: Dict[Tuple[str, ...], Any] = {}

    def fn(inputs: Dict[str, Any]) -> Dict[str, Any]:
        order = tuple(inputs)
        if order not in converted:
            converted[order] = serving_fn(apply_fn(model, order), variables, platforms, False, {}, choice.version)
        return converted[order](inputs)

    ctx.model.serving_fn = tf.autograph.experimental.do_not_convert(fn)
    renamed = {path: name for path, name in names.items() if path != name}
    ctx.conversion = Conversion(list(platforms), choice.version, False, renamed)
    ctx.run.reporter.progress(
        f"Keras on the JAX backend: {len(variables)} variables, the serve graph through jax2tf lowered for "
        f"{', '.join(platforms)}, calling convention version {choice.version}"
    )


def variable_names(model) -> Dict[str, str]:
    """Keras variable path -> its ``tf.Variable``'s name, in ``model.variables`` order: the path
    itself where TensorFlow takes it (``hidden/kernel``), else ``exportkit.jax.variables.variable_name``.
    A variable whose path an earlier one has (possible in a subclassed model) is keyed ``<path>_<index>``."""
    from exportkit.jax.variables import variable_name

    names: Dict[str, str] = {}
    for i, variable in enumerate(model.variables):
        path = str(getattr(variable, "path", None) or variable.name)
        key = path if path not in names else f"{path}_{i}"
        names[key] = path if _TF_NAME.fullmatch(path) else variable_name(path, i)
    return names


def apply_fn(model, names: Tuple[str, ...]):
    """``apply(values, *inputs)`` -> dict of named outputs: the model's inference as a pure JAX
    function of its variables' values (in ``model.variables`` order) and the inputs in ``names``'s
    order. The model is called as the reference calls it (``__call__``, which passes ``training``
    only to a ``call`` that takes it), each variable reading its value from the scope."""
    from exportkit.keras.calls import model_inputs, name_outputs

    def apply(values, *inputs):
        with keras.StatelessScope(state_mapping=list(zip(model.variables, values))):
            outputs = model(model_inputs(dict(zip(names, inputs))), training=False)
        return name_outputs(model, outputs)

    return apply
