"""``load_from_saved_model``: the Keras model back from ``assets/saved_model.json`` and the
checkpoint, compiled with its optimizer state when the export has a ``train`` graph.

The model's variables are assigned from the checkpoint, then Keras' own per-layer state loading
runs on ``assets/keras_state.json`` (``exportkit.keras.state``): ``load_own_variables`` and
``load_assets`` restore what variables alone do not (an adapted ``Normalization``'s statistics,
a lookup layer's vocabulary), as ``keras.saving.load_model`` does. Compiling comes last, as in
Keras' own loader order: the state is the uncompiled model's.
"""
import json
from pathlib import Path
from typing import Any, Dict, List

import keras
import tensorflow as tf

from exportkit.artifact import files
from exportkit.errors import LoadError, first_line
from exportkit.keras import state

VALUE = ".ATTRIBUTES/VARIABLE_VALUE"


def load(path: Path, custom_objects: Dict[str, Any], safe_mode: bool, compile: bool):
    if files.saved_model_file(path) is None:
        raise LoadError(f"{path} is not a SavedModel directory (no saved_model.pb or saved_model.pbtxt)")
    json_path = path / "assets" / "saved_model.json"
    if not json_path.exists():
        raise LoadError(
            f"{path} has no assets/saved_model.json: the exported model had no get_config() (a "
            f"subclassed model), so it cannot be rebuilt as a Keras model. Implement get_config() "
            f"(and from_config() if needed) and export again, or serve the SavedModel as it is "
            f"(tf.saved_model.load or keras.layers.TFSMLayer)")
    config = json.loads(json_path.read_text())
    compile_config = config.pop("compile_config", None)  # compiled below, once the state is in
    missing = missing_classes(config, custom_objects)
    if missing:
        names = ", ".join(missing)
        raise LoadError(f"the model uses {names}, which is not among custom_objects; pass "
                        f"custom_objects={{{', '.join(f'{n!r}: {n}' for n in missing)}}}")
    try:
        model = keras.saving.deserialize_keras_object(config, custom_objects=custom_objects, safe_mode=safe_mode)
    except ValueError as e:
        if "safe_mode" not in str(e):
            raise
        raise LoadError(f"{first_line(e)} Keras safe mode refused it; if you trust this export, "
                        f"call load_from_saved_model(..., safe_mode=False)") from e
    reader = tf.train.load_checkpoint(str(path / "variables" / "variables"))
    weights = group_values(reader, "model")
    if not model.built or len(model.variables) != len(weights):
        _build_from_serving_signature(model, path)
    assign(model.variables, weights, "model")
    state_path = path / "assets" / state.STATE_ASSET
    if state_path.exists():
        failures = state.restore(model, state_path.read_text(), weights)
        if failures:
            raise LoadError(f"the rebuilt model refused the exported state of its layers: "
                            f"{'; '.join(failures)}; was the export written from a different model?")
    training_config = path / "assets" / "training_config.json"
    if compile and training_config.exists():
        model.compile_from_config(json.loads(training_config.read_text()))
        model.optimizer.build(model.trainable_variables)
        assign(model.optimizer.variables, group_values(reader, "optimizer"), "optimizer")
    elif compile and compile_config:
        model.compile_from_config(compile_config)
    return model


def group_values(reader, group: str) -> List[Any]:
    """The checkpoint values of one variable group, in the order they were exported."""
    prefix = f"{group}_variables/"
    keys = {k for k in reader.get_variable_to_shape_map() if k.startswith(prefix) and k.endswith(VALUE)}
    return [reader.get_tensor(f"{prefix}{i}/{VALUE}") for i in range(len(keys))]


def assign(variables, values, group: str) -> None:
    if len(variables) != len(values):
        raise LoadError(f"the checkpoint holds {len(values)} {group} variables but the rebuilt model has "
                        f"{len(variables)}; was the export written from a different model?")
    for variable, value in zip(variables, values):
        if tuple(variable.shape) != tuple(value.shape):
            raise LoadError(f"{group} variable {variable.path} has shape {tuple(variable.shape)} but the "
                            f"checkpoint holds {tuple(value.shape)}")
        variable.assign(value)


def missing_classes(config, custom_objects) -> List[str]:
    """Classes in the JSON config that are neither Keras's, registered, nor in custom_objects."""
    known = set(custom_objects) | set(keras.saving.get_custom_objects())
    missing = []

    def walk(node):
        if isinstance(node, dict):
            module, name = node.get("module"), node.get("class_name")
            registered = node.get("registered_name") or name
            if (isinstance(name, str) and isinstance(module, str) and not module.startswith("keras")
                    and name not in known and registered not in known and name not in missing):
                missing.append(name)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return missing


def _build_from_serving_signature(model, path: Path) -> None:
    from exportkit.keras.calls import build_from_signature

    serving = tf.saved_model.load(str(path), tags=["serve"]).signatures["serving_default"]
    build_from_signature(model, serving.structured_input_signature[1])
