"""The train and eval steps of a compiled tf_keras model, through the same ``Training`` interface
(and so the same ``train``/``eval`` graphs, inputs and outputs) as Keras 3 models
(``exportkit.keras.training``): the serving inputs plus one ``<output>_target`` per output, shaped
and typed like the output; outputs ``loss`` (this batch's), ``predictions/<output>`` and
``metrics/<name>/value`` (the compiled metrics' running value, their state checkpointed).
"""
from collections import OrderedDict
from typing import Any, Dict, Optional

import tensorflow as tf

from exportkit.context import Training
from exportkit.tf_keras.calls import is_compiled, model_inputs, name_outputs, optimizer_variables

TARGET_SUFFIX = "_target"


def training_for(model) -> Optional[Training]:
    """The ``Training`` of a compiled tf_keras model with an optimizer, else None (serve only)."""
    if not is_compiled(model):
        return None
    optimizer = model.optimizer
    if hasattr(optimizer, "build"):  # tf_keras's optimizer (the legacy ones create slots when applied)
        optimizer.build(model.trainable_variables)
    feature_names, target_names = [], {}

    def step_specs(inputs, outputs):
        feature_names[:] = list(inputs)
        target_names.clear()
        target_names.update({f"{name}{TARGET_SUFFIX}": name for name in outputs})
        targets = OrderedDict((t, tf.TensorSpec(outputs[o].shape, outputs[o].dtype, name=t))
                              for t, o in target_names.items())
        return OrderedDict(list(inputs.items()) + list(targets.items()))

    def split(tensors):
        return ({n: tensors[n] for n in feature_names}, {o: tensors[t] for t, o in target_names.items()})

    def forward(inputs, targets, training: bool):
        x = model_inputs(model, inputs)
        y_pred = model(x, training=training)
        names = list(name_outputs(model, y_pred))
        y = [targets[n] for n in names] if isinstance(y_pred, (list, tuple)) else (
            {k: targets[k] for k in y_pred} if isinstance(y_pred, dict) else targets[names[0]])
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
