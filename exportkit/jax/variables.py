"""A JAX model's params as ``tf.Variable``s, adopting the params' buffers where TensorFlow can.

The params are passed to the converted function as arguments, never closed over, so they are
variables in the checkpoint and ``saved_model.pb`` holds only the serialized StableHLO module
(small whatever the weights weigh; a closed-over 2 GiB array would break the protobuf limit).
"""

from typing import Any, List

import jax
import numpy as np
import tensorflow as tf

from exportkit.jax import host_buffers
from exportkit.jax.pytree import flatten

COPY_ONCE_FROM = 16 << 20  # bytes: a leaf TensorFlow cannot adopt is copied once into an aligned buffer


def make_variables(model, trainable: bool):
    """One ``tf.Variable`` per leaf of ``model.params`` (a ``JaxModel``) (in pytree order), the
    params pytree of them, and each leaf's variable name by its pytree path (``variable_name``).

    No leaf is copied where it can be helped. A leaf TensorFlow can adopt (a CPU ``jax.Array``, a
    64-byte-aligned NumPy array such as ``.npz`` params are read into) becomes its variable's
    buffer. Any other (a NumPy array NumPy aligned to 16 bytes only, a ``jax.Array`` on an
    accelerator: its host copy) is copied once into an aligned buffer the variable adopts.

    Each leaf is replaced in ``model.params`` by a read-only NumPy view of its variable, so the
    reference the verify stage runs is the JAX function over the very values exported (JAX, too,
    wants its params 64-byte aligned, or it copies them on every call), and the weights are held
    once, not twice.
    """
    pairs, treedef = flatten(model.params)
    leaves: List[Any] = pairs  # the (key, leaf) pairs, each replaced by None once its variable is made
    model.params = None  # the pytree's containers hold the source arrays too: let them go leaf by leaf
    variables, views, names = [], [], {}
    # On the host even where TensorFlow sees a GPU: a variable there would be a second copy of
    # the weights. The SavedModel records no device for them; a server places them itself.
    with tf.device("/CPU:0"):
        for i, (key, leaf) in enumerate(leaves):
            leaves[i] = None  # ours was the last reference: the source array goes once it is copied
            names[key] = variable_name(key, i)
            variable = to_variable(leaf, trainable, names[key])
            del leaf
            variables.append(variable)
            views.append(_view(variable))
    model.params = jax.tree_util.tree_unflatten(treedef, views)
    return variables, jax.tree_util.tree_unflatten(treedef, variables), names


def to_variable(leaf, trainable: bool, name: str):
    """A ``tf.Variable`` holding ``leaf``'s values; a large leaf with at most one copy.

    ``tf.Variable(array)`` goes through an intermediate tensor (two transient copies of the leaf,
    which for multi-GiB params is the peak of the whole export). A leaf TensorFlow can adopt (a
    CPU ``jax.Array``, an aligned NumPy array such as ``.npz`` params are read into) becomes the
    variable's buffer through DLPack, sharing memory with the params given (exportkit writes to
    neither); any other of ``COPY_ONCE_FROM`` bytes or more is first copied once into an aligned
    buffer the variable adopts. A smaller one goes the copying way: its transient copies are
    small, and TensorFlow's allocator reuses memory the export freed where a fresh aligned buffer
    would fault in new pages (twice as slow for a few MiB).
    """
    tensor = _adopt(leaf)
    if tensor is None:
        array = np.asarray(leaf)
        tensor = array  # the copying way, unless the leaf is large enough for its copies to matter
        if array.nbytes >= COPY_ONCE_FROM:
            try:
                tensor = _from_dlpack(host_buffers.aligned_copy(array))
            except (BufferError, TypeError, ValueError, tf.errors.OpError):
                pass  # a dtype NumPy's DLPack cannot carry (e.g. bfloat16): the copying way
    return tf.Variable(tensor, trainable=trainable, name=name)


def _adopt(leaf):
    try:
        if isinstance(leaf, jax.Array):
            devices = leaf.devices()
            if len(devices) == 1 and next(iter(devices)).platform == "cpu" and leaf.is_fully_addressable:
                if leaf.unsafe_buffer_pointer() % host_buffers.ALIGNMENT == 0:
                    return _from_dlpack(leaf)
        elif isinstance(leaf, np.ndarray) and leaf.flags.writeable and host_buffers.is_aligned(leaf):
            return _from_dlpack(leaf)
    except (BufferError, TypeError, ValueError, tf.errors.OpError):
        pass
    return None


def _from_dlpack(array):
    return tf.experimental.dlpack.from_dlpack(array.__dlpack__())


def _view(variable) -> np.ndarray:
    """The variable's CPU buffer as a NumPy array, without a copy (TF's ``.numpy()`` copies)."""
    value = variable.read_value()
    array = value._numpy()  # shares the tensor's buffer, and keeps the tensor alive
    if not isinstance(array, np.ndarray):  # a 0-d tensor gives a NumPy scalar: its one value, copied
        array = np.array(array)
    array.flags.writeable = False
    return array


def variable_name(key: str, index: int) -> str:
    """A TensorFlow variable name for the param at pytree path ``key``: ASCII letters, digits, ``_``
    and ``.`` kept, anything else (``gewicht_ü``, spaces, brackets) as ``_``; ``param_<index>`` when
    nothing is left. The checkpoint's keys follow the pytree's order, not these names."""
    name = "".join(c if c.isascii() and (c.isalnum() or c in "_.") else "_" for c in key.replace("/", "."))
    return name.strip(".") or f"param_{index}"
