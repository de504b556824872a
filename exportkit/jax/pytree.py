"""Params pytrees: each leaf named by its key path, as ``.npz`` files and checkpoints name them."""

from typing import Any, List, Tuple


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
