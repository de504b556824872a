"""JAX models (``model=jax``): a factory returns ``(apply_fn, params)``, called as
``apply_fn(params, *inputs)`` with the inputs in the signature's order.

``params`` is any pytree of arrays. With ``model.params_path`` the pytree's structure (and each
leaf's shape and dtype) comes from the factory, the values from the file, so a factory may
return templates (``jax.ShapeDtypeStruct``, e.g. from ``jax.eval_shape``) instead of arrays.

This source fills the model, the signatures and the reference; the ``jax2tf`` stage turns the
params into ``tf.Variable``s and the function into ``ctx.serving_fn``.
"""
import random
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Tuple

import numpy as np

from exportkit import schema
from exportkit.context import ExportContext
from exportkit.errors import ConfigError, ModelSourceError, first_line
from exportkit.imports import instantiate_factory


@dataclass
class JaxModel:
    """What ``model=jax`` exports: ``apply_fn(params, *inputs)`` and its ``params`` pytree."""

    apply_fn: Callable[..., Any]
    params: Any


def load(ctx: ExportContext) -> ExportContext:
    import jax

    cfg = ctx.cfg
    check_pipeline_converts(cfg)
    # JAX takes its randomness from explicit keys; a factory that uses NumPy or `random` is
    # seeded here (the build stage has seeded TensorFlow and Keras already).
    np.random.seed(int(cfg.seed))
    random.seed(int(cfg.seed))
    model = build(cfg.model)
    if cfg.model.params_path:
        model.params = load_params(cfg.model.params_path, model.params)
    check_params(model.params)
    ctx.model = model
    ctx.signatures = signatures_from_config(cfg)
    jitted = jax.jit(model.apply_fn)
    ctx.reference = {key: _reference_fn(jitted, model, list(specs)) for key, specs in ctx.signatures.items()}
    return ctx  # the jax2tf stage adds serving_fn and variables


def build(model_cfg) -> JaxModel:
    built = instantiate_factory(model_cfg.build, "model.build._target_", _convert_="all")
    return as_jax_model(built, f"model.build._target_={model_cfg.build._target_!r}")


def as_jax_model(built: Any, where: str) -> JaxModel:
    if not (isinstance(built, (tuple, list)) and len(built) == 2 and callable(built[0])):
        raise ModelSourceError(f"{where} returned {type(built).__name__}; a JAX factory returns "
                               f"(apply_fn, params) with apply_fn(params, *inputs)")
    return JaxModel(apply_fn=built[0], params=built[1])


def signatures_from_config(cfg) -> Dict[str, Dict[str, Any]]:
    from exportkit.tracing import tensor_spec

    checked = schema.signatures(cfg)
    return {key: OrderedDict((name, tensor_spec(spec.shape, spec.dtype, name)) for name, spec in sig.inputs.items())
            for key, sig in checked.items()}


def leaf_key(path) -> str:
    """A pytree key path as the ``/``-joined name used in ``.npz`` files: ``dense/kernel``, ``layers/0/w``."""
    parts = []
    for entry in path:
        for attr in ("key", "idx", "name"):  # DictKey, SequenceKey / FlattenedIndexKey, GetAttrKey
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return "/".join(parts)


def flatten(params) -> Tuple[List[Tuple[str, Any]], Any]:
    """``[(key, leaf), ...]`` in pytree order, and the treedef to rebuild the pytree."""
    import jax

    with_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    return [(leaf_key(path), leaf) for path, leaf in with_paths], treedef


def save_params(path, params) -> None:
    """Write a params pytree as the ``.npz`` that ``model.params_path`` reads.

    >>> save_params("params.npz", {"dense": {"kernel": w, "bias": b}})  # keys dense/kernel, dense/bias
    """
    leaves, _ = flatten(params)
    np.savez(path, **{key: np.asarray(leaf) for key, leaf in leaves})


def load_params(params_path: str, template: Any) -> Any:
    """The factory's params pytree with every leaf's value read from ``params_path``: a ``.npz``
    file or an Orbax checkpoint directory (what ``orbax.checkpoint.StandardCheckpointer`` saves,
    the format Flax trains into).

    Keys are the leaves' ``/``-joined paths (see ``save_params``); every leaf must be saved with
    the template's shape and dtype, and nothing else may be saved.
    """
    path = Path(params_path).expanduser()
    where = f"model.params_path={params_path!r}"
    if path.is_dir():
        return load_orbax_params(path, template, where)
    if path.suffix != ".npz":
        raise ConfigError(f"{where}: expected a .npz file (write one with exportkit.sources.jax.save_params) "
                          f"or an Orbax checkpoint directory")
    if not path.is_file():
        raise ModelSourceError(f"{where}: no such file")
    return load_npz_params(path, template, where)


def load_npz_params(path: Path, template: Any, where: str) -> Any:
    import zipfile

    import jax

    from exportkit.host_buffers import read_npz_member

    leaves, treedef = flatten(template)
    with np.load(path, allow_pickle=False) as data, zipfile.ZipFile(path) as archive:
        _check_keys(where, [k for k, _ in leaves], data.files)
        values = []
        for key, leaf in leaves:
            # one array at a time, into a buffer the jax2tf stage's variable adopts without a copy
            value = read_npz_member(archive, key)
            value = data[key] if value is None else value
            _check_leaf(where, key, value.shape, value.dtype, leaf)
            values.append(value)
    return jax.tree_util.tree_unflatten(treedef, values)


def load_orbax_params(path: Path, template: Any, where: str) -> Any:
    import jax
    import orbax.checkpoint as ocp

    checkpointer = ocp.StandardCheckpointer()
    hint = "give the directory StandardCheckpointer.save wrote, or a .npz file"
    try:
        saved = dict(flatten(checkpointer.metadata(path.absolute()).item_metadata)[0])
    except Exception as e:  # orbax raises several kinds for "not a checkpoint"
        raise ModelSourceError(f"{where}: not an Orbax checkpoint directory ({first_line(e)}); {hint}") from e
    if not saved:
        raise ModelSourceError(f"{where}: not an Orbax checkpoint directory (no saved arrays in it); {hint}")
    leaves, treedef = flatten(template)
    _check_keys(where, [k for k, _ in leaves], list(saved))
    # Orbax restores into whatever shape is asked and casts dtypes silently: check both first
    for key, leaf in leaves:
        _check_leaf(where, key, tuple(saved[key].shape), np.dtype(saved[key].dtype), leaf)
    abstract = jax.tree_util.tree_unflatten(
        treedef, [jax.ShapeDtypeStruct(np.shape(leaf), np.dtype(leaf.dtype)) for _, leaf in leaves])
    return checkpointer.restore(path.absolute(), abstract)


def _check_keys(where: str, wanted: List[str], found) -> None:
    found = set(found)
    missing, unexpected = [k for k in wanted if k not in found], sorted(found - set(wanted))
    if missing or unexpected:
        raise ModelSourceError(
            f"{where} does not match the params of model.build: "
            + (f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}" if missing else "")
            + ("; " if missing and unexpected else "")
            + (f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}" if unexpected else "")
            + f"; the factory's params have keys {wanted[:8]}{' ...' if len(wanted) > 8 else ''}")


def _check_leaf(where: str, key: str, shape, dtype, leaf) -> None:
    want_shape, want_dtype = tuple(np.shape(leaf)), np.dtype(getattr(leaf, "dtype", dtype))
    if tuple(shape) != want_shape or np.dtype(dtype) != want_dtype:
        raise ModelSourceError(f"{where}: {key!r} is {np.dtype(dtype)}{list(shape)} in the file but "
                               f"{want_dtype}{list(want_shape)} in the params of model.build")


def check_params(params) -> None:
    leaves, _ = flatten(params)
    for key, leaf in leaves:
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype") or not hasattr(leaf, "__array__"):
            hint = (" (a shape-only template needs model.params_path for its values)"
                    if hasattr(leaf, "shape") else "")
            raise ModelSourceError(f"params leaf {key or '<root>'!r} is {type(leaf).__name__}, not an array"
                                   f"{hint}; params must be a pytree of arrays")


def name_outputs(outputs) -> Dict[str, Any]:
    """Outputs keyed by name: a dict as returned, a tuple/list or one array as ``output_0``..."""
    if isinstance(outputs, Mapping):
        bad = [k for k in outputs if not isinstance(k, str)]
        if bad:
            raise ModelSourceError(f"apply_fn returned a dict with non-string keys {bad}; name each output")
        return dict(outputs)
    flat = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    return {f"output_{i}": value for i, value in enumerate(flat)}


def _reference_fn(jitted, model: JaxModel, names: List[str]):
    def reference(inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        outputs = name_outputs(jitted(model.params, *[inputs[n] for n in names]))
        return {k: np.asarray(v) for k, v in outputs.items()}

    return reference


def check_pipeline_converts(cfg) -> None:
    """A JAX model needs the jax2tf stage (or a subclass) in its pipeline; say so before tracing."""
    from exportkit.imports import import_object
    from exportkit.stages.jax2tf import Jax2TF

    for node in cfg.pipeline.stages.values():
        target = node.get("_target_") if node is not None else None
        if target is not None:
            stage = import_object(target, "pipeline stage")
            if isinstance(stage, type) and issubclass(stage, Jax2TF):
                return
    raise ConfigError("model.kind=jax needs the jax2tf stage before trace, and the pipeline has none: use "
                      "pipeline=jax (model=jax selects it) or re-enable pipeline.stages.jax2tf")
