"""Legacy Keras 2 (``tf_keras``) model sources: a ``.h5``/``.keras`` file or a SavedModel
directory written by tf_keras (``model=tf_keras model.path=...``), or a ``tf_keras.Model`` handed
over by the Python API (``model=tf_keras_in_memory``, picked by the object's type).

The export is the one Keras 3 models get: ``serve`` (and ``train``/``eval`` for a compiled model)
from one checkpoint, ``assets/saved_model.json`` holding the model's Keras 2 JSON (what TF 1.14's
``tf.keras.experimental.export_saved_model`` wrote), verified in a fresh process against the
tf_keras model. ``exportkit.load_from_saved_model`` rebuilds it as a ``tf_keras.Model``.
"""

import functools
import json
import logging
from pathlib import Path
from typing import Any, Dict, Optional

from exportkit.context import ExportContext
from exportkit.errors import ModelSourceError, SignatureError
from exportkit.imports import compile_from_config
from exportkit.signatures import tensor_spec
from exportkit.sources.base import MODEL_FIELDS, Source
from exportkit.tf_keras import INSTALL_HINT
from exportkit.tf_keras.calls import build_from_signature, input_names, is_compiled, known_inputs, predict, reference_fn
from exportkit.tf_keras.training import training_for

try:
    import tf_keras
except ImportError:  # the source is chosen by config: say what to install, not a traceback
    tf_keras = None


def _require() -> None:
    if tf_keras is None:
        raise ModelSourceError(f"model=tf_keras needs the tf-keras package, which is not installed: {INSTALL_HINT}")


class TfKerasSource(Source):
    """What every tf_keras source does once it has the model object (``get_model``)."""

    adds = (*MODEL_FIELDS, "training", "assets")

    def reset(self) -> None:
        """tf_keras's name counters land in the graph, as Keras 3's do (see KerasSource.reset)."""
        _require()
        tf_keras.backend.clear_session()

    def seed(self, seed: int) -> None:
        _require()
        tf_keras.utils.set_random_seed(int(seed))

    def get_model(self, ctx: ExportContext):
        raise NotImplementedError

    def load(self, ctx: ExportContext) -> ExportContext:
        _require()
        with tf_keras.utils.custom_object_scope(ctx.model.custom_objects):
            if ctx.model.instance is None:
                ctx.model.instance = self.get_model(ctx)
        model = ctx.model.instance
        if not isinstance(model, tf_keras.Model):
            raise ModelSourceError(
                f"model=tf_keras got a {type(model).__name__}, not a tf_keras.Model "
                f"(a Keras 3 model is model=keras_file / the API's model=in_memory)"
            )
        if ctx.run.cfg.compile.optimizer is not None:
            compile_from_config(model, ctx.run.cfg.compile, "the tf_keras model's compile")
        ctx.model.signatures = ctx.model.signatures or infer_signatures(model)
        if not model.built or not model.variables:
            build_from_signature(model, next(iter(ctx.model.signatures.values())))
        ctx.model.serving_fn = functools.partial(predict, model)
        ctx.model.reference = {key: reference_fn(model) for key in ctx.model.signatures}
        ctx.variables["model"] = list(model.variables)
        ctx.training = training_for(model)
        ctx.assets.update(model_assets(model))
        return ctx


class TfKerasFile(TfKerasSource):
    """``model=tf_keras``: ``model.path`` is a ``.h5``/``.keras`` file or a SavedModel directory
    written by tf_keras (``model.save(path)``)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def get_model(self, ctx: ExportContext):
        path = Path(self.path).expanduser()
        if path.is_dir():
            if not (path / "keras_metadata.pb").exists():
                raise ModelSourceError(
                    f"model.path={self.path!r} is a directory without keras_metadata.pb: "
                    f"not a SavedModel written by tf_keras's model.save(); give that, "
                    f"or a .h5 / .keras file"
                )
        elif not path.is_file():
            raise ModelSourceError(
                f"model.path={self.path!r}: no such file or directory; give a tf_keras "
                f".h5 / .keras file or SavedModel directory"
            )
        elif path.suffix not in (".h5", ".hdf5", ".keras"):
            raise ModelSourceError(
                f"model.path={self.path!r}: expected a .h5 / .keras file or a SavedModel directory written by tf_keras"
            )
        try:
            return tf_keras.models.load_model(str(path), custom_objects=ctx.model.custom_objects)
        except (TypeError, ValueError, OSError) as e:
            first = (str(e).strip() or type(e).__name__).splitlines()[0]
            raise ModelSourceError(
                f"model.path={self.path!r} could not be loaded by tf_keras: {first}; a "
                f"custom layer needs +custom_objects.NAME=pkg.module.NAME"
            ) from e


class TfKerasInMemory(TfKerasSource):
    """``model=tf_keras_in_memory``: the ``tf_keras.Model`` the Python API hands over."""

    takes_object = True

    def __init__(self, description: Optional[str] = None) -> None:
        self.description = description

    def reset(self) -> None:
        """The user's model exists already: nothing of tf_keras's state may be cleared."""


def describe(model) -> str:
    """One line for the manifest (``model.description``): ``tf_keras Sequential 'mlp'``."""
    return f"tf_keras {type(model).__name__} {getattr(model, 'name', '')!r}"


def infer_signatures(model) -> Dict[str, Dict[str, Any]]:
    """``serving_default`` from the model's inputs, with a dynamic batch dimension."""
    tensors, names = known_inputs(model), input_names(model)
    if not tensors:
        raise SignatureError(
            f"cannot infer an input signature: the tf_keras {type(model).__name__} model has no known "
            f"inputs (it was never built or called); give `signatures` in the config or "
            f"`input_signature` to export_saved_model"
        )
    if len(names) != len(tensors):
        names = [t.name.split(":")[0] for t in tensors]
    return {"serving_default": {n: tensor_spec([None, *t.shape[1:]], t.dtype, n) for n, t in zip(names, tensors)}}


def model_assets(model) -> Dict[str, str]:
    """``saved_model.json`` (the Keras 2 JSON, as TF 1.14 wrote it) and, for a compiled model,
    ``training_config.json`` (``get_compile_config()``), for ``load_from_saved_model``."""
    assets = {}
    try:
        assets["saved_model.json"] = model.to_json()
    except NotImplementedError:
        logging.getLogger("exportkit").warning(
            "tf_keras %s has no get_config(): assets/saved_model.json is not written, so "
            "load_from_saved_model cannot rebuild it (the SavedModel itself serves as usual)",
            type(model).__name__,
        )
    if is_compiled(model):
        try:
            assets["training_config.json"] = json.dumps(model.get_compile_config())
        except (AttributeError, NotImplementedError, TypeError, ValueError):
            logging.getLogger("exportkit").warning(
                "the tf_keras model's compile arguments cannot be serialized: load_from_saved_model "
                "will return it uncompiled"
            )
    return assets
