"""The train and eval steps of a compiled Keras model, as the ``train``/``eval`` graphs run them.

The steps take the serving signature's inputs plus one ``<output>_target`` per output that has a
loss or a metric. A target follows its loss: a sparse loss (``sparse_categorical_crossentropy``,
``SparseCategoricalCrossentropy``) takes integer class ids, the output's shape without its last
dimension (``int64``); any other loss the output's own shape and dtype; ``compile.targets``
overrides either. Outputs follow TF 1.14's export: ``loss`` (this batch's loss, weighted as
compiled), ``predictions/<output>`` and ``metrics/<name>/value``.

The metric state is exported reset (the model and optimizer state as they are), so after a graph
is loaded its first call reports the metrics of the batch given, as TF 1.14's did; each further
call in the same session accumulates over every batch since loading, as ``model.evaluate`` does
over its batches. ``eval`` never touches the optimizer's variables.
"""

from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional

import keras
import tensorflow as tf

from exportkit.context import Training
from exportkit.errors import ConfigError
from exportkit.keras.calls import model_inputs, name_outputs

TARGET_SUFFIX = "_target"
SPARSE_TARGET_DTYPE = "int64"  # what integer labels are in NumPy and tf.data


def training_for(model, targets: Optional[Mapping[str, Any]] = None) -> Optional[Training]:
    """The ``Training`` of a compiled model with an optimizer, else None (serve only).

    ``targets``: output name -> ``{shape, dtype}`` (``compile.targets``), overriding the target
    spec the loss implies."""
    if not getattr(model, "compiled", False) or getattr(model, "optimizer", None) is None:
        return None
    model.optimizer.build(model.trainable_variables)
    # filled by step_specs, before either step is traced
    feature_names: List[str] = []
    target_names: Dict[str, str] = {}

    def step_specs(inputs, outputs):
        feature_names[:] = list(inputs)
        target_names.clear()
        specs = target_specs(model, inputs, outputs, targets or {})
        target_names.update({f"{name}{TARGET_SUFFIX}": name for name in specs})
        targets_in = OrderedDict(
            (f"{name}{TARGET_SUFFIX}", tf.TensorSpec(shape, dtype, name=f"{name}{TARGET_SUFFIX}"))
            for name, (shape, dtype) in specs.items()
        )
        return OrderedDict(list(inputs.items()) + list(targets_in.items()))

    def split(tensors):
        return ({n: tensors[n] for n in feature_names}, {o: tensors[t] for t, o in target_names.items()})

    def forward(inputs, targets_by_output, training: bool):
        x = model_inputs(inputs)
        y_pred = model(x, training=training)
        y = _like(y_pred, targets_by_output, model)
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
        inputs, targets_by_output = split(tensors)
        with tf.GradientTape() as tape:
            x, y, y_pred, loss = forward(inputs, targets_by_output, training=True)
            scaled = model.optimizer.scale_loss(loss)
        weights = model.trainable_variables
        model.optimizer.apply_gradients(zip(tape.gradient(scaled, weights), weights))
        return results(x, y, y_pred, loss)

    def eval_fn(tensors):
        return results(*forward(*split(tensors), training=False))

    def variables():
        # Exported at their reset state, so a loaded graph's first call reports its batch's
        # metrics (Keras resets them at every fit/evaluate too; the model's weights are untouched).
        model.reset_metrics()
        return {
            "optimizer": [v.value for v in model.optimizer.variables],
            "metrics": [v.value for v in model.metrics_variables],
        }

    return Training(step_specs, train_fn, eval_fn, variables, eval_excludes=("optimizer",))


def target_specs(
    model, inputs: Dict[str, Any], outputs: Dict[str, Any], overrides: Mapping[str, Any]
) -> "OrderedDict[str, tuple]":
    """Output name -> (shape, dtype) of its target, for the outputs that have a loss or a metric,
    in the model's output order."""
    unknown = sorted(set(overrides) - set(outputs))
    if unknown:
        raise ConfigError(
            f"compile.targets names {', '.join(unknown)}, which the model does not output; "
            f"its outputs are {', '.join(outputs)}"
        )
    y_pred = _symbolic_outputs(model, inputs)
    losses = _losses_by_output(model, y_pred)
    with_metrics = _outputs_with_metrics(model, y_pred)
    specs = OrderedDict()
    for name, spec in outputs.items():
        if name in overrides:
            given = overrides[name]
            specs[name] = (list(given["shape"]), tf.as_dtype(given.get("dtype", "float32")))
        elif name in losses and _is_sparse(losses[name]):
            specs[name] = (spec.shape[:-1], tf.as_dtype(SPARSE_TARGET_DTYPE))
        elif name in losses or name in with_metrics:
            specs[name] = (spec.shape, spec.dtype)
    return specs


def _symbolic_outputs(model, inputs: Dict[str, Any]):
    """The model's outputs as ``KerasTensor``s, in the structure the model returns them."""
    from keras.src import backend

    x = model_inputs({n: keras.KerasTensor(s.shape.as_list(), s.dtype.name, name=n) for n, s in inputs.items()})
    return backend.compute_output_spec(model, x, training=False)


def _names_by_path(model, y_pred) -> Dict[tuple, str]:
    """Each output's path in ``y_pred`` (as Keras' loss config addresses it) -> its name."""
    named = name_outputs(model, y_pred)
    if isinstance(y_pred, dict):
        return {(k,): k for k in named}
    if isinstance(y_pred, (list, tuple)):
        return {(i,): k for i, k in enumerate(named)}
    return {(): next(iter(named))}


def _losses_by_output(model, y_pred) -> Dict[str, Any]:
    """Output name -> the ``keras.losses.Loss`` compiled for it (outputs without one are absent),
    resolved by Keras' own ``CompileLoss`` so every form of ``loss`` maps as ``fit`` maps it."""
    from keras.src.trainers.compile_utils import CompileLoss

    compiled = getattr(model, "_compile_loss", None)
    if compiled is None:
        return {}
    if not compiled.built:
        compiled = CompileLoss(compiled._user_loss, compiled._user_loss_weights, output_names=compiled.output_names)
        compiled.build(y_pred, y_pred)  # a scratch copy: the model's own is built by the first step
    names = _names_by_path(model, y_pred)
    by_output = {}
    for entry in compiled._flat_losses:
        path = tuple(entry.path)
        name = names.get(path)
        if name is None and len(path) == 1 and path[0] in names.values():
            name = path[0]  # a dict loss over a list of outputs is keyed by output name
        if name is None and len(names) == 1:
            name = next(iter(names.values()))
        if name is not None:
            by_output[name] = entry.loss
    return by_output


def _outputs_with_metrics(model, y_pred) -> List[str]:
    """Names of the outputs that a compiled metric reads, as Keras' ``CompileMetrics`` maps
    ``metrics``/``weighted_metrics`` (one list for all outputs, one entry per output, or a dict)."""
    compiled = getattr(model, "_compile_metrics", None)
    names = list(_names_by_path(model, y_pred).values())
    if compiled is None:
        return []
    found = set()
    for metrics in (compiled._user_metrics, compiled._user_weighted_metrics):
        if not metrics:
            continue
        if len(names) == 1:
            found.update(names)
        elif isinstance(metrics, dict):
            found.update(k for k, v in metrics.items() if v)
        elif isinstance(metrics, (list, tuple)) and len(metrics) == len(names):
            order = names
            if isinstance(y_pred, dict):  # CompileMetrics' order for a dict of outputs
                declared = list(compiled.output_names or [])
                order = declared if set(declared) == set(names) else sorted(names)
            found.update(n for n, m in zip(order, metrics) if m)
        else:
            found.update(names)
    return [n for n in names if n in found]


def _is_sparse(loss) -> bool:
    """A loss that takes class ids: Keras' sparse categorical cross-entropy, as a name, function
    or ``SparseCategoricalCrossentropy`` (all resolve to a wrapper of the same function)."""
    fn = getattr(loss, "fn", None)
    return fn is keras.losses.sparse_categorical_crossentropy or isinstance(
        loss, keras.losses.SparseCategoricalCrossentropy
    )


def _like(y_pred, targets: Dict[str, Any], model):
    """Targets (keyed by output name) in the structure the model's outputs have; an output
    without a target (no loss, no metric) gets its own prediction, which nothing reads."""
    named = name_outputs(model, y_pred)
    filled = {k: targets[k] if k in targets else tf.stop_gradient(v) for k, v in named.items()}
    if isinstance(y_pred, dict):
        return {k: filled[k] for k in y_pred}
    if isinstance(y_pred, (list, tuple)):
        return [filled[n] for n in named]
    return filled[next(iter(named))]
