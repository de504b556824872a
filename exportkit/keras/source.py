"""Keras model sources: a factory (``model=keras``), a ``.keras``/``.h5`` file
(``model=keras_file``), or an in-memory model handed over by the Python API (``model=in_memory``)."""

import functools
from pathlib import Path
from typing import Any, Dict

import keras

from exportkit.context import ExportContext
from exportkit.errors import ModelSourceError, SignatureError, one_line
from exportkit.imports import compile_from_config, instantiate
from exportkit.keras import jax_backend, stateful
from exportkit.keras.calls import build_from_signature, input_specs, predict, reference_fn
from exportkit.keras.introspect import input_hints
from exportkit.keras.step_reference import training_reference
from exportkit.keras.training import training_for
from exportkit.sources.base import MODEL_FIELDS, Source


class KerasSource(Source):
    """What every Keras source does once it has the model object (``get_model``)."""

    adds = (*MODEL_FIELDS, "training", "assets")

    def reset(self) -> None:
        """Reset Keras's name counters: layer and variable names land in the graph, so the same
        config exports the same bytes however many models this process built before (a
        notebook, a test session, ``exportkit.reproduce``)."""
        keras.backend.clear_session(free_memory=False)  # its gc.collect() alone took 0.16 s

    def seed(self, seed: int) -> None:
        keras.utils.set_random_seed(int(seed))  # Python, NumPy, TensorFlow and Keras's own

    def get_model(self, ctx: ExportContext):
        raise NotImplementedError

    def load(self, ctx: ExportContext) -> ExportContext:
        cfg = ctx.run.cfg
        with keras.saving.custom_object_scope(ctx.model.custom_objects):
            if ctx.model.instance is None:
                ctx.model.instance = self.get_model(ctx)
        model = ctx.model.instance
        if not isinstance(model, keras.Model):
            raise ModelSourceError(
                f"model.build returned {type(model).__name__}, not a keras.Model; the "
                f"factory named by model.build._target_ must return a keras.Model"
            )
        if cfg.compile.optimizer is not None:
            compile_from_config(model, cfg.compile)
        jax_backend.check(model, cfg)  # torch: refused; JAX: serving only
        if ctx.model.signatures:
            check_signatures(model, ctx.model.signatures)
        ctx.model.signatures = ctx.model.signatures or infer_signatures(model)
        if not model.built or not model.variables:
            build_from_signature(model, next(iter(ctx.model.signatures.values())))
        ctx.model.signatures = stateful.fixed_batch(model, ctx.model.signatures)  # a stateful RNN's batch
        if jax_backend.backend() == "jax":  # the serve graph through jax2tf (exportkit.keras.jax_backend)
            jax_backend.convert(ctx, model)
        else:
            ctx.model.serving_fn = functools.partial(predict, model)
            ctx.variables["model"] = [v.value for v in model.variables]
            ctx.variables.update(stateful.variable_groups(model))  # stateful RNNs' states: "state"
        ctx.model.reference = stateful.carry_state(model, {key: reference_fn(model) for key in ctx.model.signatures})
        if jax_backend.backend() != "jax":  # on JAX, serving only (jax_backend.check)
            ctx.training = training_for(model, targets=cfg.compile.get("targets") or {})
        if ctx.training is not None:
            ctx.training.reference = training_reference(model)
        ctx.model.input_hints = input_hints(model)
        ctx.assets.update(model_assets(model))
        return ctx


class KerasFactory(KerasSource):
    """``model=keras``: ``model.build`` is a ``_target_`` node returning a ``keras.Model``."""

    def __init__(self, build: Any) -> None:
        self.build = build

    def get_model(self, ctx: ExportContext):
        return instantiate(
            self.build, "model.build._target_", ModelSourceError, "check the dotted path and the kwargs given beside it"
        )


class KerasFile(KerasSource):
    """``model=keras_file``: ``model.path`` is a ``.keras`` or ``.h5`` file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def get_model(self, ctx: ExportContext):
        path = Path(self.path).expanduser()
        if not path.is_file():
            raise ModelSourceError(
                f"model.path={self.path!r}: no such file; give the path of a .keras or .h5 model file"
            )
        if path.suffix not in (".keras", ".h5", ".hdf5"):
            raise ModelSourceError(f"model.path={self.path!r}: expected a .keras or .h5 file")
        unreadable = unreadable_model_file(path)
        if unreadable:
            raise ModelSourceError(
                f"model.path={self.path!r}: {unreadable}; give a model file written by model.save(...)"
            )
        try:
            return keras.saving.load_model(path)
        except (TypeError, ValueError) as e:
            if "Unknown" in str(e) or "custom" in str(e).lower():
                raise ModelSourceError(
                    f"model.path={self.path!r} could not be loaded: {one_line(e)}; a custom "
                    f"layer needs +custom_objects.NAME=pkg.module.NAME"
                ) from e
            raise ModelSourceError(f"model.path={self.path!r} could not be loaded: {one_line(e)}") from e
        except (OSError, KeyError, EOFError, AttributeError, IndexError) as e:  # a damaged archive or HDF5 file
            raise ModelSourceError(
                f"model.path={self.path!r} is not a readable {path.suffix} model file "
                f"({type(e).__name__}: {one_line(e)}); give a model file written by "
                f"model.save(...)"
            ) from e


def unreadable_model_file(path: Path) -> str:
    """Why ``path`` cannot be the model file its suffix says (Keras says "File not found" of a
    damaged ``.keras``), or "" when it looks like one."""
    import zipfile

    with open(path, "rb") as f:
        head = f.read(8)
    if path.suffix == ".keras":
        if not zipfile.is_zipfile(path):
            return "not a .keras file (a .keras file is a zip archive; this one is damaged or something else)"
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
                damaged = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            return f"a damaged .keras archive ({one_line(e)})"
        if damaged is not None:
            return f"a damaged .keras archive ({damaged} fails its checksum)"
        if "config.json" not in names:
            return "a zip archive without config.json, not a .keras model"
        return ""
    if head != b"\x89HDF\r\n\x1a\n":
        return f"not an HDF5 file (a {path.suffix} model starts with the HDF5 signature)"
    return ""


def check_signatures(model, specs) -> None:
    """The configured signatures against the model's own inputs, before anything is traced:
    each input name must be one of the model's, and each shape of the model's rank and widths.
    A model with no known inputs (subclassed, never called) is not checked.

    >>> check_signatures(model, {"serving_default": {"y": tf.TensorSpec([None, 6])}})
    SignatureError: signatures.serving_default.inputs.y: the model has no input 'y'; its inputs are x: [null, 6] float32
    """
    from exportkit.keras.calls import input_name, known_inputs

    tensors = known_inputs(model) or []
    if not tensors:
        return
    own = {input_name(t): t for t in tensors}
    shown = ", ".join(
        f"{n}: [{', '.join('null' if d is None else str(d) for d in t.shape)}] {t.dtype}" for n, t in own.items()
    )
    for key, inputs in specs.items():
        for name, spec in inputs.items():
            where = f"signatures.{key}.inputs.{name}"
            if name not in own:
                raise SignatureError(f"{where}: the model has no input {name!r}; its inputs are {shown}")
            want = list(own[name].shape)
            got = spec.shape.as_list() if spec.shape.rank is not None else None
            if got is None:
                continue
            if len(got) != len(want):
                raise SignatureError(
                    f"{where}.shape={_shape(got)} has rank {len(got)} but the model's input "
                    f"{name!r} has rank {len(want)}; the model's inputs are {shown}"
                )
            for axis, (g, w) in enumerate(zip(got, want)):
                if axis > 0 and w is not None and g != w:
                    raise SignatureError(
                        f"{where}.shape={_shape(got)}: dimension {axis} is "
                        f"{'null' if g is None else g} but the model's input {name!r} has {w}; "
                        f"the model's inputs are {shown}"
                    )
        missing = [n for n in own if n not in inputs]
        if missing:
            raise SignatureError(
                f"signatures.{key} lacks the model's input(s) {', '.join(missing)}; the model's inputs are {shown}"
            )


def _shape(dims) -> str:
    return "[" + ", ".join("null" if d is None else str(d) for d in dims) + "]"


class InMemory(KerasSource):
    """``model=in_memory``: the model object the Python API hands over."""

    takes_object = True

    def reset(self) -> None:
        """The user's model exists already: nothing of Keras's state may be cleared."""


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
            type(model).__name__,
        )
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
    except Exception as e:  # noqa: BLE001 - a layer whose save_own_variables/save_assets fails: serving is unaffected
        logging.getLogger("exportkit").warning(
            "the layers' own state could not be recorded (%s); load_from_saved_model will restore variables only", e
        )
        return {}


def infer_signatures(model) -> Dict[str, Dict[str, Any]]:
    """``serving_default`` from the model's inputs, with a dynamic batch dimension; for a
    subclassed model, from the shapes it was built or first called with (as Keras' own
    ``model.export()`` infers them)."""
    specs = input_specs(model) or build_shape_specs(model)
    if not specs:
        raise SignatureError(
            f"cannot infer an input signature: the {type(model).__name__} model has no known inputs "
            f"(it was never built or called); give `signatures` in the config or `input_signature` "
            f"to export_saved_model"
        )
    return {"serving_default": specs}


def build_shape_specs(model) -> Dict[str, Any]:
    """``{input name: tf.TensorSpec}`` from a subclassed model's build shapes, batch dynamic and
    dtype the model's input dtype (what ``keras.src.export.export_utils`` infers): one tensor
    argument named after it (``call(self, x)`` -> ``x``), or one dict of tensors keyed by name.
    {} when the model was never built, or was built from a structure a signature cannot name."""
    from exportkit.signatures import tensor_spec

    shapes = dict(getattr(model, "_build_shapes_dict", None) or {})
    if not model.built or len(shapes) != 1:
        return {}
    ((arg, shape),) = shapes.items()
    dtype = keras.backend.standardize_dtype(model.input_dtype)

    def spec(name, dims):
        return tensor_spec([None, *list(dims)[1:]], dtype, name)

    if _is_shape(shape):
        name = arg[: -len("_shape")] if arg.endswith("_shape") else arg
        if arg == "input_shape":  # Keras' key for a one-argument call: name it after that argument
            import inspect

            name = next(iter(inspect.signature(model.call).parameters), name)
        return {name: spec(name, shape)} if name.isidentifier() else {}
    if (
        isinstance(shape, dict)
        and len(shape) > 1
        and all(isinstance(k, str) and k.isidentifier() and _is_shape(v) for k, v in shape.items())
    ):
        return {k: spec(k, v) for k, v in shape.items()}
    return {}


def _is_shape(value) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(d, (int, type(None))) for d in value)
