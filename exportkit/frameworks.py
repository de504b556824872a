"""TensorFlow's import in exportkit's own processes (the CLI, ``exportkit.reproduce``, the verify
worker): quiet, and with its objects kept out of the garbage collector's later passes.

- **Quiet:** file descriptor 2 is held aside while TensorFlow loads: the messages its C++
  libraries log then ("All log messages before absl::InitializeLog() is called are written to
  STDERR", oneDNN, cudart) ignore ``TF_CPP_MIN_LOG_LEVEL``. If the import fails, what was held
  back is shown with the error. ``EXPORTKIT_VERBOSE=1`` or ``HYDRA_FULL_ERROR=1`` shows them.
- **Frozen:** the objects the import made (hundreds of thousands) are moved to the collector's
  permanent generation (``gc.freeze``): they live as long as the process, and every full
  collection during the export would otherwise walk them again.
"""

import gc
import logging
import os
import sys

NOISY_LOGGERS = ("absl", "tensorflow", "h5py", "jax._src.xla_bridge", "jax._src.xla_bridge.backends")


def verbose() -> bool:
    """Whether the frameworks' own logs may reach the terminal (``EXPORTKIT_VERBOSE=1``, or
    ``HYDRA_FULL_ERROR=1``)."""
    from exportkit.errors import full_error_wanted

    return os.environ.get("EXPORTKIT_VERBOSE", "0") not in ("", "0") or full_error_wanted()


def quiet_frameworks() -> None:
    """Keep TensorFlow's C++ logs (oneDNN notices, CUDA probing: ``E0000 ... cuInit``) and absl's
    and JAX's Python warnings off the terminal; set before TensorFlow is imported. The verify
    worker inherits the environment."""
    if verbose():
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def import_tensorflow(quiet: bool = True) -> None:
    """Import TensorFlow (quietly unless ``verbose()``), then freeze what it made."""
    if "tensorflow" in sys.modules:
        return
    if quiet and not verbose():
        _import_with_stderr_held()
        quiet_frameworks()  # absl's handler exists now
    else:
        import tensorflow  # noqa: F401
    gc.freeze()


def _import_with_stderr_held() -> None:
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as held:
            os.dup2(held.fileno(), 2)
            try:
                import tensorflow  # noqa: F401  (imported here, quietly, for all later imports)
            except BaseException:
                os.dup2(saved, 2)
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))
                raise
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)
