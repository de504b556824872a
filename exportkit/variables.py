"""The object layout every part of an export is written from, and variable sizes.

The checkpoint and each MetaGraphDef are saved from roots built by ``trackable_root``, so a
variable has the same checkpoint key (``model_variables/0/...``) in all of them and one
``variables/`` directory serves every graph, for the TF2 and TF1 loaders.
"""
from typing import Dict, Iterable, List


def trackable_root(variables: Dict[str, List], groups: Iterable[str]):
    """A ``tf.Module`` holding the named variable groups, e.g. ``root.model_variables``."""
    import tensorflow as tf

    root = tf.Module()
    for group in groups:
        setattr(root, f"{group}_variables", list(variables[group]))
    return root


def nbytes(variables: Iterable) -> int:
    return sum(v.shape.num_elements() * v.dtype.size for v in variables)


def mib(size: int) -> str:
    """``"12.3 MiB"``."""
    return f"{size / 2**20:.1f} MiB"
