"""Params I/O: a params pytree to and from a ``.npz`` file or an Orbax checkpoint directory,
every leaf checked against the factory's shapes and dtypes."""

from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from exportkit.errors import ConfigError, ModelSourceError, first_line, one_line
from exportkit.jax.pytree import flatten


def save_params(path, params) -> None:
    """Write a params pytree as the ``.npz`` that ``model.params_path`` reads.

    >>> save_params("params.npz", {"dense": {"kernel": w, "bias": b}})  # keys dense/kernel, dense/bias
    """
    leaves, _ = flatten(params)
    # Any: mypy would check the arrays against savez's own keyword allow_pickle: bool
    arrays: Dict[str, Any] = {key: np.asarray(leaf) for key, leaf in leaves}
    np.savez(path, **arrays)


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
        raise ConfigError(
            f"{where}: expected a .npz file (write one with exportkit.jax.params.save_params) "
            f"or an Orbax checkpoint directory"
        )
    if not path.is_file():
        raise ModelSourceError(f"{where}: no such file")
    return load_npz_params(path, template, where)


def load_npz_params(path: Path, template: Any, where: str) -> Any:
    import zipfile
    import zlib

    import jax

    from exportkit.jax.host_buffers import read_npz_member

    leaves, treedef = flatten(template)
    if not zipfile.is_zipfile(path):
        raise ModelSourceError(
            f"{where}: not a .npz file (a .npz is a zip archive; this one is damaged "
            f"or something else); write it with exportkit.jax.params.save_params"
        )
    try:
        with np.load(path, allow_pickle=False) as data, zipfile.ZipFile(path) as archive:
            _check_keys(where, [k for k, _ in leaves], data.files)
            values = []
            for key, leaf in leaves:
                # one array at a time, into a buffer the jax2tf stage's variable adopts without a copy
                value = read_npz_member(archive, key)
                value = data[key] if value is None else value
                _check_leaf(where, key, value.shape, value.dtype, leaf)
                values.append(value)
    except ModelSourceError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e):  # an object array: reading it would run pickled code
            raise ModelSourceError(
                f"{where}: holds pickled Python objects, which exportkit does not load "
                f"(they could run code); save plain arrays with "
                f"exportkit.jax.params.save_params"
            ) from e
        raise ModelSourceError(
            f"{where}: a damaged .npz ({one_line(e)}); write it again with exportkit.jax.params.save_params"
        ) from e
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, zlib.error) as e:
        raise ModelSourceError(
            f"{where}: a damaged or truncated .npz ({type(e).__name__}: {one_line(e)}); "
            f"write it again with exportkit.jax.params.save_params"
        ) from e
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
        treedef, [jax.ShapeDtypeStruct(np.shape(leaf), np.dtype(leaf.dtype)) for _, leaf in leaves]
    )
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
            + f"; the factory's params have keys {wanted[:8]}{' ...' if len(wanted) > 8 else ''}"
        )


def _check_leaf(where: str, key: str, shape, dtype, leaf) -> None:
    want_shape, want_dtype = tuple(np.shape(leaf)), np.dtype(getattr(leaf, "dtype", dtype))
    if tuple(shape) != want_shape or np.dtype(dtype) != want_dtype:
        raise ModelSourceError(
            f"{where}: {key!r} is {np.dtype(dtype)}{list(shape)} in the file but "
            f"{want_dtype}{list(want_shape)} in the params of model.build"
        )


def check_params(params) -> None:
    leaves, _ = flatten(params)
    for key, leaf in leaves:
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype") or not hasattr(leaf, "__array__"):
            hint = " (a shape-only template needs model.params_path for its values)" if hasattr(leaf, "shape") else ""
            raise ModelSourceError(
                f"params leaf {key or '<root>'!r} is {type(leaf).__name__}, not an array"
                f"{hint}; params must be a pytree of arrays"
            )
