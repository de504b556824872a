"""Keras model sources: a factory (``model=keras``), a ``.keras``/``.h5`` file
(``model=keras_file``), or an in-memory model handed over by the Python API (``model=in_memory``)."""
import functools
from pathlib import Path
from typing import Any, Dict

import keras

from exportkit.context import ExportContext
from exportkit.errors import ConfigError, ModelSourceError, SignatureError
from exportkit.imports import instantiate
from exportkit.keras.calls import build_from_signature, input_specs, predict, reference_fn
from exportkit.keras.training import training_for
from exportkit.sources.base import Source


class KerasSource(Source):
    """What every Keras source does once it has the model object (``get_model``)."""

    adds = ("model", "signatures", "serving_fn", "reference", "variables", "training", "assets")

    def reset(self) -> None:
        """Reset Keras's name counters: layer and variable names land in the graph, so the same
        config exports the same bytes however many models this process built before (a
        notebook, a test session, ``exportkit.reproduce``)."""
        keras.backend.clear_session()

    def seed(self, seed: int) -> None:
        keras.utils.set_random_seed(int(seed))  # Python, NumPy, TensorFlow and Keras's own

    def get_model(self, ctx: ExportContext):
        raise NotImplementedError

    def load(self, ctx: ExportContext) -> ExportContext:
        cfg = ctx.cfg
        with keras.saving.custom_object_scope(ctx.custom_objects):
            if ctx.model is None:
                ctx.model = self.get_model(ctx)
        model = ctx.model
        if not isinstance(model, keras.Model):
            raise ModelSourceError(f"model.build returned {type(model).__name__}, not a keras.Model; the "
                                   f"factory named by model.build._target_ must return a keras.Model")
        if cfg.compile.optimizer is not None:
            compile_model(model, cfg.compile)
        ctx.signatures = ctx.signatures or infer_signatures(model)
        if not model.built or not model.variables:
            build_from_signature(model, next(iter(ctx.signatures.values())))
        ctx.serving_fn = functools.partial(predict, model)
        ctx.reference = {key: reference_fn(model) for key in ctx.signatures}
        ctx.variables["model"] = [v.value for v in model.variables]
        ctx.training = training_for(model)
        ctx.assets.update(model_assets(model))
        return ctx


class KerasFactory(KerasSource):
    """``model=keras``: ``model.build`` is a ``_target_`` node returning a ``keras.Model``."""

    def __init__(self, build: Any) -> None:
        self.build = build

    def get_model(self, ctx: ExportContext):
        return instantiate(self.build, "model.build._target_", ModelSourceError,
                           "check the dotted path and the kwargs given beside it")


class KerasFile(KerasSource):
    """``model=keras_file``: ``model.path`` is a ``.keras`` or ``.h5`` file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def get_model(self, ctx: ExportContext):
        path = Path(self.path).expanduser()
        if not path.is_file():
            raise ModelSourceError(f"model.path={self.path!r}: no such file; give the path of a "
                                   f".keras or .h5 model file")
        if path.suffix not in (".keras", ".h5", ".hdf5"):
            raise ModelSourceError(f"model.path={self.path!r}: expected a .keras or .h5 file")
        try:
            return keras.saving.load_model(path)
        except (TypeError, ValueError) as e:
            raise ModelSourceError(f"model.path={self.path!r} could not be loaded: {e}; a custom "
                                   f"layer needs +custom_objects.NAME=pkg.module.NAME") from e


class InMemory(KerasSource):
    """``model=in_memory``: the model object the Python API hands over."""

    takes_object = True

    def reset(self) -> None:
        """The user's model exists already: nothing of Keras's state may be cleared."""


def compile_model(model, compile_cfg) -> None:
    """``model.compile`` from the ``compile`` node: names (``adam``) or ``_target_`` nodes."""
    kwargs = instantiate(compile_cfg, "compile", ConfigError,
                         "give names such as compile.optimizer=adam or _target_ nodes", _convert_="all")
    try:
        model.compile(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"compile={kwargs}: model.compile rejected it: {e}") from e


def model_assets(model) -> Dict[str, str]:
    """``saved_model.json`` (the model's JSON config), ``keras_state.json`` (its layers' own
    state) and, for a compiled model, ``training_config.json`` (its compile arguments), for
    ``load_from_saved_model``."""
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
    if "saved_model.json" in assets:
        assets.update(keras_state(model))
    if getattr(model, "compiled", False) and getattr(model, "optimizer", None) is not None:
        assets["training_config.json"] = json.dumps(model.get_compile_config())
    return assets


def keras_state(model) -> Dict[str, str]:
    """``keras_state.json``: the layers' own state as Keras' saving sees it (adapted statistics,
    vocabularies), which ``load_from_saved_model`` restores (see exportkit.keras.state)."""
    import logging

    from exportkit.keras import state

    try:
        return {state.STATE_ASSET: state.state_json(model)}
    except Exception as e:  # a layer whose save_own_variables/save_assets fails: serving is unaffected
        logging.getLogger("exportkit").warning(
            "the layers' own state could not be recorded (%s); load_from_saved_model will restore "
            "variables only", e)
        return {}


def infer_signatures(model) -> Dict[str, Dict[str, Any]]:
    """``serving_default`` from the model's inputs, with a dynamic batch dimension."""
    specs = input_specs(model)
    if not specs:
        raise SignatureError(
            f"cannot infer an input signature: the {type(model).__name__} model has no known inputs "
            f"(it was never built or called); give `signatures` in the config or `input_signature` "
            f"to export_saved_model")
    return {"serving_default": specs}
