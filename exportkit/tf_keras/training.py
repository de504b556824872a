"""The train and eval steps of a compiled tf_keras model, through the same ``Training`` interface
(and so the same ``train``/``eval`` graphs, inputs and outputs) as Keras 3 models
(``exportkit.keras.training``): the serving inputs plus one ``<output>_target`` per output,
following its loss as for Keras 3: class ids (the output's shape without its last dimension,
``int64``) for a sparse loss (``sparse_categorical_crossentropy``, ``SparseCategoricalCrossentropy``),
else shaped and typed like the output; outputs ``loss`` (this batch's), ``predictions/<output>``
and ``metrics/<name>/value`` (the compiled metrics' running value, their state checkpointed).
"""

from collections import OrderedDict
from typing import Any, Dict, List, Optional

import tensorflow as tf

from exportkit.context import Training
from exportkit.tf_keras.calls import is_compiled, model_inputs, name_outputs, optimizer_variables

TARGET_SUFFIX = "_target"
SPARSE_TARGET_DTYPE = "int64"  # as exportkit.keras.training's (not imported: that module imports Keras 3)


def training_for(model) -> Optional[Training]:
    """The ``Training`` of a compiled tf_keras model with an optimizer, else None (serve only)."""
    if not is_compiled(model):
        return None
    optimizer = model.optimizer
    if hasattr(optimizer, "build"):  # tf_keras's optimizer (the legacy ones create slots when applied)
        optimizer.build(model.trainable_variables)
    feature_names: List[str] = []
    target_names: Dict[str, str] = {}

    def step_specs(inputs, outputs):
        feature_names[:] = list(inputs)
        target_names.clear()
        target_names.update({f"{name}{TARGET_SUFFIX}": name for name in outputs})
        specs = target_specs(model, inputs, outputs)
        targets = OrderedDict((t, tf.TensorSpec(*specs[o], name=t)) for t, o in target_names.items())
        return OrderedDict(list(inputs.items()) + list(targets.items()))

    def split(tensors):
        return ({n: tensors[n] for n in feature_names}, {o: tensors[t] for t, o in target_names.items()})

    def forward(inputs, targets, training: bool):
        x = model_inputs(model, inputs)
        y_pred = model(x, training=training)
        names = list(name_outputs(model, y_pred))
        y = (
            [targets[n] for n in names]
            if isinstance(y_pred, (list, tuple))
            else ({k: targets[k] for k in y_pred} if isinstance(y_pred, dict) else targets[names[0]])
        )
        loss = model.compute_loss(x, y, y_pred, None)
        return x, y, y_pred, loss

    def results(x, y, y_pred, loss) -> Dict[str, Any]:
        metrics = model.compute_metrics(x, y, y_pred, None)
        out = {"loss": loss}
        out.update({f"predictions/{k}": v for k, v in name_outputs(model, y_pred).items()})
        out.update({f"metrics/{k}/value": v for k, v in metrics.items() if k != "loss"})
        return out

    def train_fn(tensors):
        inputs, targets = split(tensors)
        with tf.GradientTape() as tape:
            x, y, y_pred, loss = forward(inputs, targets, training=True)
        weights = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return results(x, y, y_pred, loss)

    def eval_fn(tensors):
        return results(*forward(*split(tensors), training=False))

    def variables():
        return {"optimizer": optimizer_variables(optimizer), "metrics": [v for m in model.metrics for v in m.variables]}

    return Training(step_specs, train_fn, eval_fn, variables, eval_excludes=("optimizer",))


def target_specs(model, inputs: Dict[str, Any], outputs: Dict[str, Any]) -> "OrderedDict[str, tuple]":
    """Output name -> (shape, dtype) of its target: class ids for a sparse loss, else the output's own."""
    sparse = sparse_outputs(model, inputs)
    return OrderedDict(
        (name, (spec.shape[:-1], tf.as_dtype(SPARSE_TARGET_DTYPE)) if name in sparse else (spec.shape, spec.dtype))
        for name, spec in outputs.items()
    )


def sparse_outputs(model, inputs: Dict[str, Any]) -> List[str]:
    """Names of the outputs whose compiled loss takes class ids, resolved by tf_keras' own
    ``LossesContainer`` (a scratch copy: the model's is built by its first step), so every form of
    ``loss`` (one, a list, a dict) maps to outputs as ``fit`` maps it."""
    from tf_keras.src.engine import compile_utils

    compiled = getattr(model, "compiled_loss", None)
    if compiled is None or compiled._user_losses is None:
        return []
    y_pred = (
        tf.function(lambda features: model(model_inputs(model, features), training=False))
        .get_concrete_function(dict(inputs))
        .structured_outputs
    )
    named = list(name_outputs(model, y_pred))
    names = (
        {k: k for k in y_pred}
        if isinstance(y_pred, dict)
        else list(named)
        if isinstance(y_pred, (list, tuple))
        else named[0]
    )
    with tf.init_scope():  # its loss metrics' variables, outside any graph being traced
        scratch = compile_utils.LossesContainer(
            compiled._user_losses, compiled._user_loss_weights, output_names=getattr(model, "output_names", None)
        )
        scratch.build(y_pred)
    return [n for n, loss in zip(tf.nest.flatten(names), scratch._losses) if _is_sparse(loss)]


def _is_sparse(loss) -> bool:
    """tf_keras' sparse categorical cross-entropy, as a name, function or
    ``SparseCategoricalCrossentropy`` (each resolves to a wrapper of the same function)."""
    import tf_keras

    return getattr(loss, "fn", None) is tf_keras.losses.sparse_categorical_crossentropy
