"""``load_from_saved_model``: the Keras model back from ``assets/saved_model.json`` and the
checkpoint, compiled with its optimizer state when the export has a ``train`` graph.

Both layouts (``exportkit.artifact.files``) keep the one checkpoint in ``variables/`` and the
JSON configs in ``assets/`` at the export's root; only the graphs move (``layout=serving`` puts
``train``/``eval`` under ``graphs/``), and ``files.graph_dir`` finds the ``serve`` graph in either.

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
from exportkit.keras import state, stateful
from exportkit.variables import assign, group_values


def load(path: Path, custom_objects: Dict[str, Any], safe_mode: bool, compile: bool):
    if not path.exists():
        raise LoadError(f"{path}: no such directory; give the directory of an export")
    if not path.is_dir():
        raise LoadError(f"{path} is a file, not a SavedModel directory; give the export's directory")
    if files.saved_model_file(path) is None:
        raise LoadError(f"{path} is not a SavedModel directory (no saved_model.pb or saved_model.pbtxt)")
    json_path = path / "assets" / "saved_model.json"
    if not json_path.exists():
        raise LoadError(
            f"{path} has no assets/saved_model.json: the exported model had no get_config() (a "
            f"subclassed model), so it cannot be rebuilt as a Keras model. Implement get_config() "
            f"(and from_config() if needed) and export again, or serve the SavedModel as it is "
            f"(tf.saved_model.load or keras.layers.TFSMLayer)"
        )
    config = read_json(json_path, dict)
    refused = refused_class_paths(config, custom_objects)
    if refused:
        raise LoadError(
            f"{json_path} names {', '.join(refused)}, which is not a Keras class, not registered "
            f"and not in custom_objects: refused (exportkit never imports what an export names; "
            f"the file may have been tampered with)"
        )
    missing = missing_classes(config, custom_objects)  # the compile config's functions too
    compile_config = config.pop("compile_config", None)  # compiled below, once the state is in
    if missing:
        names = ", ".join(missing)
        raise LoadError(
            f"the model uses {names}, which is not among custom_objects; pass "
            f"custom_objects={{{', '.join(f'{n!r}: {n}' for n in missing)}}}"
        )
    try:
        model = keras.saving.deserialize_keras_object(config, custom_objects=custom_objects, safe_mode=safe_mode)
    except ValueError as e:
        if "safe_mode" not in str(e):
            raise LoadError(f"{json_path} does not describe a Keras model Keras can rebuild ({first_line(e)})") from e
        raise LoadError(
            f"{first_line(e)} Keras safe mode refused it; if you trust this export, "
            f"call load_from_saved_model(..., safe_mode=False)"
        ) from e
    except (TypeError, KeyError, AttributeError, IndexError) as e:  # a tampered or foreign config
        raise LoadError(
            f"{json_path} does not describe a Keras model Keras can rebuild ({type(e).__name__}: {first_line(e)})"
        ) from e
    if not isinstance(model, keras.Model):
        raise LoadError(f"{json_path} describes a {type(model).__name__}, not a Keras model")
    try:
        return _restore(model, path, compile, custom_objects, compile_config)
    except tf.errors.OpError as e:  # NotFoundError, DataLossError...: a missing or damaged checkpoint
        raise LoadError(
            f"{path / 'variables'}: the checkpoint cannot be read ({type(e).__name__}: {first_line(e)})"
        ) from e


def read_json(path: Path, kind: type) -> Any:
    """The JSON document at ``path``, of type ``kind``; ``LoadError`` naming the file otherwise."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise LoadError(
            f"{path} cannot be read as JSON ({type(e).__name__}: {first_line(e)}); the export is "
            f"truncated or damaged: export it again"
        ) from e
    if not isinstance(value, kind):
        raise LoadError(
            f"{path} holds a JSON {type(value).__name__}, expected a {kind.__name__}; the file "
            f"was not written by exportkit or has been altered"
        )
    return value


def refused_class_paths(config, custom_objects) -> List[str]:
    """Class paths in the JSON config that cannot be a serialized Keras object: a module or
    class name that is not a dotted identifier, or an object that is not a class in a module
    already imported (``os.system``). Nothing is imported to find out."""
    import sys

    known = set(custom_objects) | set(keras.saving.get_custom_objects())
    refused: List[str] = []

    for node in _objects(config):
        module, name = node.get("module"), node.get("class_name")
        if (
            isinstance(name, str)
            and isinstance(module, str)
            and not module.startswith("keras")
            and name not in known
            and (node.get("registered_name") or name) not in known
        ):
            path = f"{module}.{name}"
            well_formed = name.isidentifier() and all(p.isidentifier() for p in module.split("."))
            target = getattr(sys.modules.get(module), name, None) if well_formed else None
            if (not well_formed or (target is not None and not isinstance(target, type))) and path not in refused:
                refused.append(path)
    return refused


def _restore(model, path: Path, compile: bool, custom_objects, compile_config):
    reader = tf.train.load_checkpoint(str(path / "variables" / "variables"))
    weights = group_values(reader, "model")
    if not model.built or len(model.variables) != len(weights):
        _build_from_serving_signature(model, path)
    assign(model.variables, weights, "model")
    stateful.restore(model, group_values(reader, stateful.GROUP))  # stateful RNNs' states, if any
    state_path = path / "assets" / state.STATE_ASSET
    if state_path.exists():
        failures = state.restore(model, state_path.read_text(), weights)
        if failures:
            raise LoadError(
                f"the rebuilt model refused the exported state of its layers: "
                f"{'; '.join(failures)}; was the export written from a different model?"
            )
    training_config = path / "assets" / "training_config.json"
    if compile and training_config.exists():
        with keras.saving.custom_object_scope(custom_objects):  # a function loss or metric
            model.compile_from_config(read_json(training_config, dict))
        model.optimizer.build(model.trainable_variables)
        assign(model.optimizer.variables, group_values(reader, "optimizer"), "optimizer")
    elif compile and compile_config:
        with keras.saving.custom_object_scope(custom_objects):
            model.compile_from_config(compile_config)
    return model


def missing_classes(config, custom_objects) -> List[str]:
    """Classes and functions in the JSON config that are neither Keras's, registered, nor in
    custom_objects. A serialized function (``{"class_name": "function", "config": "my_loss"}``)
    is looked up by its name as Keras' deserializer looks it up: custom objects, then Keras'
    built-in activations, losses, metrics..."""
    known = set(custom_objects) | set(keras.saving.get_custom_objects())
    missing = []

    for node in _objects(config):
        module, name = node.get("module"), node.get("class_name")
        registered = node.get("registered_name") or name
        if name == "function" and isinstance(node.get("config"), str):
            function = node["config"]
            if not _function_known(function, module, node, custom_objects) and function not in missing:
                missing.append(function)
        elif (
            isinstance(name, str)
            and isinstance(module, str)
            and not module.startswith("keras")
            and name not in known
            and registered not in known
            and name not in missing
        ):
            missing.append(name)
    return missing


def _objects(node):
    """Every dict in a JSON config, depth first: the serialized objects to look at."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


def _function_known(name: str, module, node, custom_objects) -> bool:
    from keras.src.saving import serialization_lib

    try:
        serialization_lib._retrieve_class_or_fn(
            name, node.get("registered_name"), module, "function", node, custom_objects=custom_objects
        )
    except (TypeError, ValueError):
        return False
    return True


def _build_from_serving_signature(model, path: Path) -> None:
    from exportkit.keras.calls import build_from_signature

    # only the signature's specs are needed: no variables restored
    options = tf.saved_model.LoadOptions(experimental_skip_checkpoint=True)
    serving = tf.saved_model.load(str(files.graph_dir(path, "serve")), tags=["serve"], options=options).signatures[
        "serving_default"
    ]
    build_from_signature(model, serving.structured_input_signature[1])
