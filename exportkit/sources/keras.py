"""Keras models: from a factory (``model=keras``), a ``.keras``/``.h5`` file (``model=keras_file``),
or an in-memory model handed over by the Python API."""
import functools
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict

import keras
import numpy as np
import tensorflow as tf

from exportkit import schema
from exportkit.context import ExportContext
from exportkit.errors import ConfigError, ModelSourceError, SignatureError, first_line
from exportkit.imports import instantiate_factory
from exportkit.tracing import tensor_spec


def load(ctx: ExportContext) -> ExportContext:
    cfg = ctx.cfg
    with keras.saving.custom_object_scope(ctx.custom_objects):
        if ctx.model is None:
            ctx.model = build_model(cfg.model)
    model = ctx.model
    if not isinstance(model, keras.Model):
        raise ModelSourceError(f"model.build returned {type(model).__name__}, not a keras.Model; the "
                               f"factory named by model.build._target_ must return a keras.Model")
    if cfg.compile.optimizer is not None:
        compile_model(model, cfg.compile)
    ctx.signatures = signatures_from_config(schema.signatures(cfg)) or infer_signatures(model)
    if not model.built or not model.variables:
        build_from_signature(model, next(iter(ctx.signatures.values())))
    ctx.serving_fn = functools.partial(predict, model)
    ctx.reference = {key: _reference_fn(model) for key in ctx.signatures}
    ctx.variables["model"] = [v.value for v in model.variables]
    from exportkit.sources.keras_training import training_for

    ctx.training = training_for(model)
    ctx.assets.update(model_assets(model))
    return ctx


def compile_model(model, compile_cfg) -> None:
    """``model.compile`` from the ``compile`` node: names (``adam``) or ``_target_`` nodes."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        kwargs = instantiate(compile_cfg, _convert_="all")
    except InstantiationException as e:
        raise ConfigError(f"compile: {first_line(e)}; give names such as "
                          f"compile.optimizer=adam or _target_ nodes") from e
    try:
        model.compile(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"compile={kwargs}: model.compile rejected it: {e}") from e


def model_assets(model) -> Dict[str, str]:
    """``saved_model.json`` (the model's JSON config) and, for a compiled model,
    ``training_config.json`` (its compile arguments), for ``load_from_saved_model``."""
    import json
    import logging

    assets = {}
    try:
        assets["saved_model.json"] = model.to_json()
    except NotImplementedError:
        logging.getLogger("exportkit").warning(
            "%s has no get_config(): assets/saved_model.json is not written, so "
            "load_from_saved_model cannot rebuild it (the SavedModel itself serves as usual)",
            type(model).__name__)
    if getattr(model, "compiled", False) and getattr(model, "optimizer", None) is not None:
        assets["training_config.json"] = json.dumps(model.get_compile_config())
    return assets


def build_model(model_cfg) -> Any:
    if model_cfg.kind == "keras_file":
        path = Path(model_cfg.path).expanduser()
        if not path.is_file():
            raise ModelSourceError(f"model.path={model_cfg.path!r}: no such file; give the path of a "
                                   f".keras or .h5 model file")
        if path.suffix not in (".keras", ".h5", ".hdf5"):
            raise ModelSourceError(f"model.path={model_cfg.path!r}: expected a .keras or .h5 file")
        try:
            return keras.saving.load_model(path)
        except (TypeError, ValueError) as e:
            raise ModelSourceError(f"model.path={model_cfg.path!r} could not be loaded: {e}; a custom "
                                   f"layer needs +custom_objects.NAME=pkg.module.NAME") from e
    return instantiate_factory(model_cfg.build, "model.build._target_")


def signatures_from_config(signatures) -> Dict[str, Dict[str, tf.TensorSpec]]:
    return {
        key: OrderedDict((name, tensor_spec(spec.shape, spec.dtype, name))
                         for name, spec in sig.inputs.items())
        for key, sig in signatures.items()
    }


def infer_signatures(model) -> Dict[str, Dict[str, tf.TensorSpec]]:
    """``serving_default`` from the model's inputs, with a dynamic batch dimension."""
    inputs = known_inputs(model)
    if not inputs:
        raise SignatureError(
            f"cannot infer an input signature: the {type(model).__name__} model has no known inputs "
            f"(it was never built or called); give `signatures` in the config or `input_signature` "
            f"to export_saved_model")
    specs = OrderedDict((input_name(t), tensor_spec([None, *t.shape[1:]], t.dtype, input_name(t)))
                        for t in inputs)
    return {"serving_default": specs}


def known_inputs(model):
    """The model's input tensors, or None for a model never built or called."""
    try:
        return model.inputs
    except (AttributeError, ValueError):
        return None


def input_name(tensor) -> str:
    return tensor.name.split(":")[0]


def build_from_signature(model, specs) -> None:
    """Create a subclassed model's variables by calling it once on zeros shaped like ``specs``
    (variables must exist before tracing, so the checkpoint and the graphs can track them)."""
    zeros = {name: tf.zeros([d if d is not None else 1 for d in spec.shape.as_list()], spec.dtype)
             for name, spec in specs.items()}
    model(model_inputs(zeros), training=False)


def model_inputs(inputs: Dict[str, Any]) -> Any:
    """One input is passed as a tensor, several as a dict keyed by input name."""
    return next(iter(inputs.values())) if len(inputs) == 1 else dict(inputs)


def output_names(model, count: int):
    functional = getattr(model, "_functional", None) or model  # a Sequential wraps a Functional
    names = list(getattr(functional, "output_names", None) or [])
    return names if len(names) == count else [f"output_{i}" for i in range(count)]


def name_outputs(model, outputs) -> Dict[str, Any]:
    """Outputs keyed by the model's output names (``output_0``... when it has none)."""
    if isinstance(outputs, dict):
        return dict(outputs)
    flat = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    return dict(zip(output_names(model, len(flat)), flat))


def predict(model, inputs: Dict[str, Any]) -> Dict[str, Any]:
    """The model's inference on named inputs, as named outputs (what ``serve`` computes)."""
    return name_outputs(model, model(model_inputs(inputs), training=False))


def _reference_fn(model):
    def reference(inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return {k: keras.ops.convert_to_numpy(v) for k, v in predict(model, inputs).items()}

    return reference
