"""The serialization-version guard between the JAX that exports and the TensorFlow that loads.

jax2tf's native serialization emits an ``XlaCallModule`` op whose module is written with a
"calling convention version". JAX emits its default (``jax_export_calling_convention_version``)
and can emit any version in ``[minimum, maximum]_supported_calling_convention_version``; this
TensorFlow's ``XlaCallModule`` kernel runs versions up to ``call_module_maximum_supported_version()``.
A JAX newer than the TensorFlow fails only when the SavedModel is run ("XlaCallModule ...
serialization version"); the guard decides before converting.
"""

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

from exportkit.errors import ConversionError

CONFIG_KEY = "jax_export_calling_convention_version"


@dataclass(frozen=True)
class VersionChoice:
    version: int  # what the export will use
    jax_default: int
    jax_min: int
    jax_max: int
    tf_max: int


def jax_versions():
    """(default, minimum, maximum) calling convention versions this JAX can emit."""
    import jax
    from jax import export

    return (
        int(getattr(jax.config, CONFIG_KEY)),
        int(export.minimum_supported_calling_convention_version),
        int(export.maximum_supported_calling_convention_version),
    )


def tf_maximum_version() -> int:
    """The newest version this TensorFlow's XlaCallModule runs (TF does not expose a minimum;
    its minimum has stayed below JAX's own minimum, so JAX's range is the lower bound)."""
    from tensorflow.compiler.tf2xla.python import xla as tfxla

    return int(tfxla.call_module_maximum_supported_version())


def choose(notify: Callable[[str], None] = lambda line: None) -> VersionChoice:
    """The version to serialize with: JAX's default when TensorFlow runs it, else the newest
    one both support (said through ``notify``); ``ConversionError`` naming both versions and the
    fix when there is none.

    >>> choose().version  # JAX 0.10 (default 10) with TF 2.21 (up to 10)
    10
    """
    import jax
    import tensorflow as tf

    default, jax_min, jax_max = jax_versions()
    tf_max = tf_maximum_version()
    if default <= tf_max:
        return VersionChoice(default, default, jax_min, jax_max, tf_max)
    if jax_min <= tf_max:
        choice = VersionChoice(min(tf_max, jax_max), default, jax_min, jax_max, tf_max)
        notify(
            f"this TensorFlow's XlaCallModule runs versions up to {tf_max}: serializing with version "
            f"{choice.version} instead of JAX's {default}"
        )
        return choice
    raise ConversionError(
        f"JAX {jax.__version__} serializes with XlaCallModule calling convention version {default} "
        f"(it can emit versions {jax_min} to {jax_max}), but TensorFlow {tf.__version__}'s XlaCallModule "
        f"supports versions up to {tf_max}, so the SavedModel could not be run. Fix: upgrade tensorflow "
        f"to a release whose XlaCallModule supports version {jax_min} or later, or install a jax and "
        f"jaxlib old enough to emit version {tf_max} (pin both in the `jax` extra)"
    )


@contextlib.contextmanager
def serialization(version: int) -> Iterator[None]:
    """Inside the block, jax2tf serializes with calling convention ``version``, and each op's
    location is its one innermost user frame instead of the whole Python traceback.

    The traceback runs through whatever called the export (the CLI, a test, a notebook) and
    TensorFlow's AutoGraph, whose generated files have random names: it would make the same
    model serialize to different bytes from run to run. The innermost frame is the line of the
    model's code that made the op, which is what an error message needs.
    """
    import jax

    settings = {CONFIG_KEY: int(version), "jax_include_full_tracebacks_in_locations": False}
    previous = {key: getattr(jax.config, key) for key in settings}
    for key, value in settings.items():
        jax.config.update(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            jax.config.update(key, value)
