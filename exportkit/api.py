"""The Python API, TF 1.14's ``tf.keras.experimental`` pair on today's TensorFlow.

Both functions run exportkit's own code path: ``export_saved_model`` composes the same config
the CLI would and runs the same pipeline; it only fills the config from its arguments.
"""
import copy
import functools
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from omegaconf import open_dict

from exportkit import signatures
from exportkit.errors import ConfigError


def export_saved_model(model, saved_model_path, custom_objects: Optional[Dict[str, Any]] = None,
                       as_text: bool = False, input_signature=None, serving_only: bool = False,
                       overrides: Sequence[str] = (), verbose: bool = True):
    """Export a Keras model as a verified SavedModel at ``saved_model_path``.

    Writes the weights checkpoint, ``serve`` (and, for a compiled model, ``train`` and ``eval``)
    MetaGraphDefs, and the model's JSON config; verifies the reload. ``overrides`` are extra
    CLI-style config overrides, e.g. ``["pipeline.stages.verify=null", "seed=3"]``;
    ``verbose=False`` prints nothing. Returns the ``ExportResult`` (export path, stage records, manifest).

    >>> model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(1)])
    >>> exportkit.export_saved_model(model, "/tmp/simple_keras_model")
    """
    from exportkit import pipeline
    from exportkit.report import Reporter

    _check_model(model)
    saved_model_path = _check_path(saved_model_path, "saved_model_path")
    custom_objects = _check_custom_objects(custom_objects)
    _check_flags(as_text=as_text, serving_only=serving_only, verbose=verbose)
    if isinstance(overrides, str) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"overrides={overrides!r}: give a list of KEY=VALUE strings, e.g. overrides=['seed=3']"
                          + (f" (here overrides=[{overrides!r}])" if isinstance(overrides, str) else ""))
    cfg = copy.deepcopy(_composed(("model=in_memory", *_custom_object_overrides(custom_objects), *overrides)))
    cfg.export_dir = str(Path(saved_model_path).expanduser().absolute())
    cfg.as_text, cfg.serving_only = bool(as_text), bool(serving_only)
    if input_signature is not None:
        with open_dict(cfg):
            cfg.signatures = {"serving_default": {"inputs": signature_inputs(model, input_signature)}}
    return pipeline.Export(pipeline.resolved(cfg), model=model, custom_objects=custom_objects,
                           reporter=Reporter(verbose=verbose)).run()


def load_from_saved_model(saved_model_path, custom_objects: Optional[Dict[str, Any]] = None,
                          safe_mode: bool = True, compile: bool = True):
    """Rebuild the Keras model of an export: JSON config + checkpoint weights.

    A compiled export comes back compiled with its optimizer state, so training continues
    where the export left off. ``safe_mode=False`` allows Lambda layers (arbitrary code).

    >>> model = exportkit.load_from_saved_model("/tmp/simple_keras_model")
    """
    path = _check_path(saved_model_path, "saved_model_path")
    custom_objects = _check_custom_objects(custom_objects)
    _check_flags(safe_mode=safe_mode, compile=compile)
    from exportkit.keras import load

    return load.load(Path(path).expanduser(), custom_objects, safe_mode, compile)


def _check_path(path, name: str) -> str:
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise ConfigError(f"{name}={path!r}: expected a directory path (a str or pathlib.Path)")
    return os.fspath(path)


def _check_model(model) -> None:
    import keras

    if not isinstance(model, keras.Model):
        raise ConfigError(f"model is a {type(model).__name__}, not a keras.Model; export_saved_model exports a "
                          f"Keras model (a JAX model: python -m exportkit model=jax ...)")


def _check_custom_objects(custom_objects) -> Dict[str, Any]:
    if custom_objects is None:
        return {}
    if not isinstance(custom_objects, dict):
        raise ConfigError(f"custom_objects is a {type(custom_objects).__name__}; expected a dict of "
                          f"name -> class or function, e.g. custom_objects={{'Scale': Scale}}")
    for name, obj in custom_objects.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"custom_objects has the key {name!r}; keys are the names the model's config "
                              f"uses (strings), e.g. custom_objects={{'Scale': Scale}}")
        if not callable(obj):
            raise ConfigError(f"custom_objects[{name!r}] is {obj!r} ({type(obj).__name__}); expected the class "
                              f"or function itself, e.g. custom_objects={{{name!r}: {name}}}")
    return dict(custom_objects)


def _check_flags(**flags) -> None:
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ConfigError(f"{name}={value!r}: expected True or False")


@functools.lru_cache(maxsize=16)
def _composed(overrides: Tuple[str, ...]):
    """Composing reads every YAML file again; exports in a loop share one composition."""
    from exportkit.composition import compose

    return compose(overrides)


def signature_inputs(model, input_signature) -> Dict[str, Dict[str, Any]]:
    """``tf.TensorSpec``s (a list, a dict, or nested like the model's inputs) -> config inputs,
    named by the dict key, the spec's name, or the model's input names in order."""
    import tensorflow as tf

    if isinstance(input_signature, dict):
        named = list(input_signature.items())
    else:
        specs = tf.nest.flatten(input_signature)
        for spec in specs:
            if not isinstance(spec, tf.TensorSpec):
                raise signatures.SignatureError(f"input_signature has {spec!r} ({type(spec).__name__}); expected "
                                                f"tf.TensorSpec's, e.g. [tf.TensorSpec([None, 8], tf.float32, name='x')]")
        from exportkit.keras.calls import input_name, known_inputs

        model_names = [input_name(t) for t in (known_inputs(model) or [])]
        named = [(spec.name or (model_names[i] if i < len(model_names) else f"input_{i}"), spec)
                 for i, spec in enumerate(specs)]
    return signatures.to_config(named)


def _custom_object_overrides(custom_objects):
    """Record importable custom objects by dotted path (the manifest and verify use it)."""
    for name, obj in custom_objects.items():
        module, qualname = getattr(obj, "__module__", ""), getattr(obj, "__qualname__", "")
        if module and module != "__main__" and qualname and "<locals>" not in qualname:
            yield f"+custom_objects.{name}={module}.{qualname}"
