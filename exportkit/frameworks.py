"""TensorFlow's import in exportkit's own processes (the CLI, ``exportkit.reproduce``, the verify
worker): quiet, without the JAX import it does not need, and with its objects kept out of the
garbage collector's later passes.

- **Quiet:** file descriptor 2 is held aside while TensorFlow loads: the messages its C++
  libraries log then ("All log messages before absl::InitializeLog() is called are written to
  STDERR", oneDNN, cudart) ignore ``TF_CPP_MIN_LOG_LEVEL``. If the import fails, what was held
  back is shown with the error. ``EXPORTKIT_VERBOSE=1`` or ``HYDRA_FULL_ERROR=1`` shows them.
- **Without JAX:** ``import tensorflow`` imports JAX when it is installed
  (``tensorflow.lite.python.util`` keeps ``jax.jit`` for TFLite's ``experimental_from_jax``
  converter, which exportkit never calls): about 0.4 of TensorFlow's 3 s. JAX is held off while
  TensorFlow loads; a later ``import jax`` (a JAX model's source, a custom object's module)
  imports it as usual. Left alone when JAX is already imported or Keras' backend is not
  TensorFlow (Keras, which TensorFlow imports, would then need JAX at once).
- **Frozen:** the objects the import made (hundreds of thousands) are moved to the collector's
  permanent generation (``gc.freeze``): they live as long as the process, and every full
  collection during the export would otherwise walk them again.
- **Ended at once:** ``exit_now`` ends such a process when its work is done and told, without the
  second or so the interpreter spends tearing TensorFlow's modules down.
"""

import atexit
import contextlib
import gc
import json
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
    """Import TensorFlow (quietly unless ``verbose()``), JAX held off, then freeze what it made."""
    if "tensorflow" in sys.modules:
        return
    with jax_held_off():
        if quiet and not verbose():
            _import_with_stderr_held()
            quiet_frameworks()  # absl's handler exists now
        else:
            import tensorflow  # noqa: F401
    gc.freeze()


@contextlib.contextmanager
def jax_held_off():
    """While the block runs, ``import jax`` fails with ImportError (as if JAX were not installed);
    afterwards it works again. No-op when JAX is already imported or Keras' backend is not
    TensorFlow."""
    if "jax" in sys.modules or keras_backend() != "tensorflow":
        yield
        return
    sys.modules["jax"] = None
    try:
        yield
    finally:
        if "jax" in sys.modules and sys.modules["jax"] is None:
            del sys.modules["jax"]


def keras_backend() -> str:
    """The backend Keras will pick: ``KERAS_BACKEND``, else ``backend`` in ``$KERAS_HOME/keras.json``
    (``~/.keras``), else TensorFlow."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as config:
            return str(json.load(config).get("backend", "tensorflow"))
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


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


def exit_now(code: int) -> None:
    """End this process with ``code`` now, as the interpreter would, in its order: the threads
    are joined and their exit hooks run (``threading._shutdown``: a joblib launcher's worker pool
    is told to stop there), then the ``atexit`` handlers (Hydra's logging, a sweep's verifier,
    multiprocessing's children), and stdout and stderr are flushed; only the modules are not torn
    down."""
    import threading

    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None and threading.current_thread() is threading.main_thread():
        shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
