"""``load_from_saved_model`` for an export of a tf_keras model: the ``tf_keras.Model`` back from
``assets/saved_model.json`` (its Keras 2 JSON, ``tf_keras.models.model_from_json``) and the
checkpoint's weights, compiled with its optimizer state when the export has a ``train`` graph.
TensorFlow and tf_keras are imported when a model is loaded: asking ``is_keras2_config`` is cheap."""

import json
from pathlib import Path
from typing import Any, Dict

from exportkit.errors import LoadError, first_line
from exportkit.tf_keras import INSTALL_HINT
from exportkit.variables import assign, group_values


def is_keras2_config(config_json: str) -> bool:
    """Whether ``assets/saved_model.json`` holds a Keras 2 model (tf_keras's, or TF 1.14's tf.keras)."""
    try:
        version = str(json.loads(config_json).get("keras_version", ""))
    except (ValueError, AttributeError):
        return False
    return version.startswith("2.")


def load(path: Path, custom_objects: Dict[str, Any], compile: bool):
    import tensorflow as tf

    from exportkit.tf_keras.calls import optimizer_variables

    try:
        import tf_keras
    except ImportError:
        raise LoadError(
            f"{path} holds a Keras 2 (tf_keras) model; rebuilding it needs tf-keras: "
            f"{INSTALL_HINT}, or serve the SavedModel as it is (tf.saved_model.load)"
        ) from None
    config_json = (path / "assets" / "saved_model.json").read_text()
    try:
        model = tf_keras.models.model_from_json(config_json, custom_objects=custom_objects)
    except (TypeError, ValueError) as e:
        raise LoadError(
            f"tf_keras could not rebuild the model from {path}/assets/saved_model.json: "
            f"{first_line(e)}; a custom layer needs custom_objects={{'Name': Name}}"
        ) from e
    reader = tf.train.load_checkpoint(str(path / "variables" / "variables"))
    assign(model.variables, group_values(reader, "model"), "model")
    training_config = path / "assets" / "training_config.json"
    if compile and training_config.exists():
        with tf_keras.utils.custom_object_scope(custom_objects):
            model.compile_from_config(json.loads(training_config.read_text()))
        optimizer = model.optimizer
        if hasattr(optimizer, "build"):
            optimizer.build(model.trainable_variables)
        assign(optimizer_variables(optimizer), group_values(reader, "optimizer"), "optimizer")
    return model
