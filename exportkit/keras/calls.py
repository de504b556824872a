"""Calling a Keras model on named tensors, as every signature does: inputs keyed by input name,
outputs keyed by the model's output names."""

from typing import Any, Dict

import keras

from exportkit.signatures import name_outputs as _name_outputs
from exportkit.signatures import tensor_spec


def known_inputs(model):
    """The model's input tensors, or None for a model never built or called."""
    try:
        return model.inputs
    except (AttributeError, ValueError):
        return None


def input_name(tensor) -> str:
    return tensor.name.split(":")[0]


def input_specs(model) -> Dict[str, Any]:
    """``{input name: tf.TensorSpec}`` with a dynamic batch dimension; {} for an unbuilt model."""
    return {
        input_name(t): tensor_spec([None, *t.shape[1:]], t.dtype, input_name(t)) for t in (known_inputs(model) or [])
    }


def model_inputs(inputs: Dict[str, Any]) -> Any:
    """One input is passed as a tensor, several as a dict keyed by input name."""
    return next(iter(inputs.values())) if len(inputs) == 1 else dict(inputs)


def output_names(model, count: int):
    functional = getattr(model, "_functional", None) or model  # a Sequential wraps a Functional
    names = list(getattr(functional, "output_names", None) or [])
    return names if len(names) == count else [f"output_{i}" for i in range(count)]


def name_outputs(model, outputs) -> Dict[str, Any]:
    """Outputs keyed by the model's output names (``output_0``... when it has none)."""
    return _name_outputs(outputs, lambda count: output_names(model, count))


def predict(model, inputs: Dict[str, Any]) -> Dict[str, Any]:
    """The model's inference on named inputs, as named outputs (what ``serve`` computes)."""
    return name_outputs(model, model(model_inputs(inputs), training=False))


def reference_fn(model):
    """fn(dict of numpy inputs) -> dict of numpy outputs: the source model, for verify."""

    def reference(inputs):
        return {k: keras.ops.convert_to_numpy(v) for k, v in predict(model, inputs).items()}

    return reference


def build_from_signature(model, specs) -> None:
    """Create a subclassed model's variables by calling it once on zeros shaped like ``specs``
    (variables must exist before tracing, so the checkpoint and the graphs can track them)."""
    import tensorflow as tf

    zeros = {
        name: tf.zeros([d if d is not None else 1 for d in spec.shape.as_list()], spec.dtype)
        for name, spec in specs.items()
    }
    model(model_inputs(zeros), training=False)
