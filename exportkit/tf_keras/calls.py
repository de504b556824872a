"""Calling a tf_keras model on named tensors, as every signature does: inputs keyed by input
name (passed in the model's input order), outputs keyed by the model's output names."""

from typing import Any, Dict, List

import numpy as np
import tensorflow as tf

from exportkit.signatures import name_outputs as _name_outputs


def input_names(model) -> List[str]:
    names = list(getattr(model, "input_names", None) or [])
    if not names:
        names = [t.name.split(":")[0] for t in (known_inputs(model) or [])]
    return names


def output_names(model, count: int) -> List[str]:
    names = list(getattr(model, "output_names", None) or [])
    return names if len(names) == count else [f"output_{i}" for i in range(count)]


def known_inputs(model):
    try:
        return model.inputs
    except (AttributeError, ValueError):
        return None


def model_inputs(model, inputs: Dict[str, Any]) -> Any:
    """One input as a tensor; several as a list in the model's input order (a dict otherwise)."""
    if len(inputs) == 1:
        return next(iter(inputs.values()))
    names = input_names(model)
    if set(names) == set(inputs):
        return [inputs[n] for n in names]
    return dict(inputs)


def name_outputs(model, outputs) -> Dict[str, Any]:
    return _name_outputs(outputs, lambda count: output_names(model, count))


def predict(model, inputs: Dict[str, Any]) -> Dict[str, Any]:
    """The model's inference on named inputs, as named outputs (what ``serve`` computes)."""
    return name_outputs(model, model(model_inputs(model, inputs), training=False))


def reference_fn(model):
    """fn(dict of numpy inputs) -> dict of numpy outputs: the tf_keras model, for verify."""

    def reference(inputs):
        return {k: np.asarray(v) for k, v in predict(model, inputs).items()}

    return reference


def build_from_signature(model, specs) -> None:
    """Create a subclassed model's variables by calling it once on zeros shaped like ``specs``."""
    zeros = {
        name: tf.zeros([d if d is not None else 1 for d in spec.shape.as_list()], spec.dtype)
        for name, spec in specs.items()
    }
    model(model_inputs(model, zeros), training=False)


def is_compiled(model) -> bool:
    return bool(getattr(model, "_is_compiled", False)) and getattr(model, "optimizer", None) is not None


def optimizer_variables(optimizer) -> List[Any]:
    """Every variable the optimizer's steps read, in a stable order: its ``variables`` (iterations,
    slots; a method on the legacy optimizers) and, not among them in tf_keras, the learning rate."""
    found = optimizer.variables
    found = list(found() if callable(found) else found)
    for name in ("_iterations", "_learning_rate"):
        extra = getattr(optimizer, name, None)
        if isinstance(extra, tf.Variable) and not any(extra is v for v in found):
            found.append(extra)
    return found
