"""The Python API, TF 1.14's ``tf.keras.experimental`` pair on today's TensorFlow.

Both functions run exportkit's own code path: ``export_saved_model`` composes the same config
the CLI would and runs the same pipeline; it only fills the config from its arguments. The model
option is picked by the object's type (``model_option``): a ``keras.Model`` is ``model=in_memory``,
a ``tf_keras.Model`` ``model=tf_keras_in_memory``, ``(apply_fn, params)`` or a Flax module
``model=jax_in_memory``; a framework is never imported to ask.
"""

import copy
import functools
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from omegaconf import open_dict

from exportkit import signatures
from exportkit.errors import ConfigError


def export_saved_model(
    model,
    saved_model_path,
    custom_objects: Optional[Dict[str, Any]] = None,
    as_text: bool = False,
    input_signature=None,
    serving_only: bool = False,
    overrides: Sequence[str] = (),
    verbose: bool = True,
    formats: Sequence[str] = (),
):
    """Export a model as a verified SavedModel at ``saved_model_path``.

    ``model`` is a Keras model, a legacy Keras 2 ``tf_keras.Model`` (the ``tf_keras`` extra), or
    a JAX model: ``(apply_fn, params)`` computing ``apply_fn(params, *inputs)``, ``(flax_module,
    variables)`` or a bound Flax linen module (JAX needs ``input_signature``; each input's name is
    the spec's name, else ``apply_fn``'s parameter name). Writes the weights checkpoint, ``serve``
    (and, for a compiled Keras model, ``train`` and ``eval``) MetaGraphDefs, and the model's JSON
    config; verifies the reload. ``overrides`` are extra CLI-style config overrides, e.g.
    ``["pipeline.stages.verify=null", "seed=3"]``; ``verbose=False`` prints nothing. ``formats``:
    deployment formats to convert and verify beside the SavedModel (``["litert", "onnx",
    "openvino"]``; their options as overrides, ``"formats.litert.quantize=int8"``). Returns the
    ``ExportResult`` (export path, stage records, manifest).

    >>> model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(1)])
    >>> exportkit.export_saved_model(model, "/tmp/simple_keras_model")
    >>> exportkit.export_saved_model((apply_fn, params), "/tmp/jax_model",
    ...                              input_signature=[tf.TensorSpec([None, 8], tf.float32, name="x")])
    """
    from exportkit import pipeline
    from exportkit.report import Reporter

    option, description, names = model_option(model)
    saved_model_path = _check_path(saved_model_path, "saved_model_path")
    custom_objects = _check_custom_objects(custom_objects)
    _check_flags(as_text=as_text, serving_only=serving_only, verbose=verbose)
    if isinstance(overrides, str) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(
            f"overrides={overrides!r}: give a list of KEY=VALUE strings, e.g. overrides=['seed=3']"
            + (f" (here overrides=[{overrides!r}])" if isinstance(overrides, str) else "")
        )
    if isinstance(formats, str) or not all(isinstance(f, str) and f.isidentifier() for f in formats):
        raise ConfigError(f"formats={formats!r}: give a list of format names, e.g. formats=['litert', 'onnx']")
    chosen = [f"+formats=[{','.join(formats)}]"] if formats else []
    with pipeline.EXPORTING.held():  # composing uses Hydra's global state: one thread at a time
        cfg = copy.deepcopy(
            _composed((f"model={option}", *_custom_object_overrides(custom_objects), *chosen, *overrides))
        )
        cfg.export_dir = str(Path(saved_model_path).expanduser().absolute())
        cfg.as_text, cfg.serving_only = bool(as_text), bool(serving_only)
        if description is not None and "description" in cfg.model:
            cfg.model.description = description
        if input_signature is not None:
            with open_dict(cfg):
                cfg.signatures = {"serving_default": {"inputs": signature_inputs(model, input_signature, names)}}
        return pipeline.Export(
            pipeline.resolved(cfg), model=model, custom_objects=custom_objects, reporter=Reporter(verbose=verbose)
        ).run()


def load_from_saved_model(
    saved_model_path, custom_objects: Optional[Dict[str, Any]] = None, safe_mode: bool = True, compile: bool = True
):
    """Rebuild the Keras model of an export: JSON config + checkpoint weights.

    A compiled export comes back compiled with its optimizer state, so training continues
    where the export left off. ``safe_mode=False`` allows Lambda layers (arbitrary code). An
    export of a legacy Keras 2 model (``tf_keras``) comes back as a ``tf_keras.Model`` (the
    ``tf_keras`` extra; ``safe_mode`` does not apply to its JSON).

    >>> model = exportkit.load_from_saved_model("/tmp/simple_keras_model")
    """
    path = Path(_check_path(saved_model_path, "saved_model_path")).expanduser()
    custom_objects = _check_custom_objects(custom_objects)
    _check_flags(safe_mode=safe_mode, compile=compile)
    json_path = path / "assets" / "saved_model.json"
    if json_path.is_file():
        from exportkit.tf_keras.load import is_keras2_config

        if is_keras2_config(json_path.read_text()):
            from exportkit.tf_keras import load as tf_keras_load

            return tf_keras_load.load(path, custom_objects, compile)
    from exportkit.keras import load

    return load.load(path, custom_objects, safe_mode, compile)


def _check_path(path, name: str) -> str:
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise ConfigError(f"{name}={path!r}: expected a directory path (a str or pathlib.Path)")
    return os.fspath(path)


def _check_custom_objects(custom_objects) -> Dict[str, Any]:
    if custom_objects is None:
        return {}
    if not isinstance(custom_objects, dict):
        raise ConfigError(
            f"custom_objects is a {type(custom_objects).__name__}; expected a dict of "
            f"name -> class or function, e.g. custom_objects={{'Scale': Scale}}"
        )
    for name, obj in custom_objects.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(
                f"custom_objects has the key {name!r}; keys are the names the model's config "
                f"uses (strings), e.g. custom_objects={{'Scale': Scale}}"
            )
        if not callable(obj):
            raise ConfigError(
                f"custom_objects[{name!r}] is {obj!r} ({type(obj).__name__}); expected the class "
                f"or function itself, e.g. custom_objects={{{name!r}: {name}}}"
            )
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


def model_option(model) -> Tuple[str, Optional[str], Optional[List[str]]]:
    """The ``model=`` option for an object handed to ``export_saved_model``, a one-line description
    of it for the manifest (``model.description``), and its input names when the option is not
    Keras 3's (None: ask the Keras model). Picked by type; nothing is imported to ask, so a Keras
    model never imports JAX nor tf_keras."""
    from exportkit.errors import ModelSourceError

    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, keras.Model):
        return "in_memory", None, None
    tf_keras = sys.modules.get("tf_keras")
    if tf_keras is not None and isinstance(model, tf_keras.Model):
        from exportkit.tf_keras import source as tf_keras_source

        return "tf_keras_in_memory", tf_keras_source.describe(model), tf_keras_source.input_names(model)
    from exportkit.jax import source as jax_source

    if jax_source.is_jax_model(model):
        return "jax_in_memory", jax_source.describe(model), jax_source.input_names(model)
    raise ModelSourceError(
        f"export_saved_model was given a {type(model).__module__}.{type(model).__qualname__}; it "
        f"exports a keras.Model, a tf_keras.Model, a JAX model as (apply_fn, params) with "
        f"apply_fn(params, *inputs), (flax_module, variables) or a bound Flax module"
    )


def signature_inputs(model, input_signature, names: Optional[List[str]] = None) -> Dict[str, Dict[str, Any]]:
    """``tf.TensorSpec``s (a list, a dict, or nested like the model's inputs) -> config inputs,
    named by the dict key, the spec's name, or the model's input names in order (``names``, or
    a Keras model's own)."""
    import tensorflow as tf

    if isinstance(input_signature, dict):
        named = list(input_signature.items())
    else:
        specs = tf.nest.flatten(input_signature)
        for spec in specs:
            if not isinstance(spec, tf.TensorSpec):
                raise signatures.SignatureError(
                    f"input_signature has {spec!r} ({type(spec).__name__}); expected "
                    f"tf.TensorSpec's, e.g. [tf.TensorSpec([None, 8], tf.float32, name='x')]"
                )
        if names is not None:
            model_names = list(names)
        else:
            from exportkit.keras.calls import input_name, known_inputs

            model_names = [input_name(t) for t in (known_inputs(model) or [])]
        named = [
            (spec.name or (model_names[i] if i < len(model_names) else f"input_{i}"), spec)
            for i, spec in enumerate(specs)
        ]
    return signatures.to_config(named)


def _custom_object_overrides(custom_objects):
    """Record importable custom objects by dotted path (the manifest and verify use it)."""
    for name, obj in custom_objects.items():
        module, qualname = getattr(obj, "__module__", ""), getattr(obj, "__qualname__", "")
        if module and module != "__main__" and qualname and "<locals>" not in qualname:
            yield f"+custom_objects.{name}={module}.{qualname}"
