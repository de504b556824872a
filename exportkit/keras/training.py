"""The train and eval steps of a compiled Keras model, as the ``train``/``eval`` graphs run them.

The steps take the serving signature's inputs plus one ``<output>_target`` per output. Outputs
follow TF 1.14's export: ``loss`` (this batch's loss), ``predictions/<output>`` and
``metrics/<name>/value`` (the compiled metrics' running value, whose state is checkpointed).
``eval`` never touches the optimizer's variables.
"""
from collections import OrderedDict
from typing import Any, Dict, Optional

import tensorflow as tf

from exportkit.context import Training
from exportkit.keras.calls import model_inputs, name_outputs

TARGET_SUFFIX = "_target"


def training_for(model) -> Optional[Training]:
    """The ``Training`` of a compiled model with an optimizer, else None (serve only)."""
    if not getattr(model, "compiled", False) or getattr(model, "optimizer", None) is None:
        return None
    model.optimizer.build(model.trainable_variables)
    feature_names, target_names = [], {}  # filled by step_specs, before either step is traced

    def step_specs(inputs, outputs):
        feature_names[:] = list(inputs)
        target_names.clear()
        target_names.update({f"{name}{TARGET_SUFFIX}": name for name in outputs})
        targets = OrderedDict((t, tf.TensorSpec(outputs[o].shape, outputs[o].dtype, name=t))
                              for t, o in target_names.items())
        return OrderedDict(list(inputs.items()) + list(targets.items()))

    def split(tensors):
        return ({n: tensors[n] for n in feature_names},
                {o: tensors[t] for t, o in target_names.items()})

    def forward(inputs, targets, training: bool):
        x = model_inputs(inputs)
        y_pred = model(x, training=training)
        y = _like(y_pred, targets, model)
        loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=training)
        return x, y, y_pred, loss

    def results(x, y, y_pred, loss) -> Dict[str, Any]:
        batch = tf.shape(tf.nest.flatten(x)[0])[0]
        model._loss_tracker.update_state(loss, sample_weight=batch)
        metrics = model.compute_metrics(x, y, y_pred, sample_weight=None)
        out = {"loss": loss}
        out.update({f"predictions/{k}": v for k, v in name_outputs(model, y_pred).items()})
        out.update({f"metrics/{k}/value": v for k, v in metrics.items() if k != "loss"})
        return out

    def train_fn(tensors):
        inputs, targets = split(tensors)
        with tf.GradientTape() as tape:
            x, y, y_pred, loss = forward(inputs, targets, training=True)
            scaled = model.optimizer.scale_loss(loss)
        weights = model.trainable_variables
        model.optimizer.apply_gradients(zip(tape.gradient(scaled, weights), weights))
        return results(x, y, y_pred, loss)

    def eval_fn(tensors):
        return results(*forward(*split(tensors), training=False))

    def variables():
        return {"optimizer": [v.value for v in model.optimizer.variables],
                "metrics": [v.value for v in model.metrics_variables]}

    return Training(step_specs, train_fn, eval_fn, variables, eval_excludes=("optimizer",))


def _like(y_pred, targets: Dict[str, Any], model):
    """Targets (keyed by output name) in the structure the model's outputs have."""
    if isinstance(y_pred, dict):
        return {k: targets[k] for k in y_pred}
    names = list(name_outputs(model, y_pred))
    if isinstance(y_pred, (list, tuple)):
        return [targets[n] for n in names]
    return targets[names[0]]
