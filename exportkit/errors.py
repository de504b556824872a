"""One error hierarchy: user mistakes print as one short message, bugs keep their traceback.

Every ``ExportkitError`` names the offending key or value and how to fix it. The CLI prints
it without a traceback (``HYDRA_FULL_ERROR=1`` shows one); any other exception is a bug in
exportkit and keeps its traceback.
"""

import os
import sys
from typing import Optional


class ExportkitError(Exception):
    """A mistake in the user's input: a config key, a model file, an export directory."""


class ConfigError(ExportkitError, ValueError):
    """A config value is missing, of the wrong kind, or inconsistent with another."""


class SignatureError(ConfigError):
    """No input signature can be inferred, or a declared one is malformed."""


class ModelSourceError(ExportkitError):
    """The model cannot be built or loaded: unimportable ``_target_``, missing file, ..."""


class ConversionError(ExportkitError):
    """The model cannot be converted for the target: serialization versions, lowering platforms."""


class ExportDirExistsError(ExportkitError, AssertionError):
    """The export directory exists and is not empty (an AssertionError, as in TF 1.14)."""


class ExportDirBusyError(ExportkitError):
    """Another live exportkit process holds export_dir's lock."""

    def __init__(self, export_dir, pid: Optional[int] = None):
        self.export_dir, self.pid = export_dir, pid
        super().__init__(
            f"export_dir {export_dir} is being written by another exportkit process "
            f"(pid {pid if pid is not None else 'unknown'}); wait for it to finish or "
            f"choose another export_dir"
        )

    def __reduce__(self):
        return type(self), (self.export_dir, self.pid)


class FilesystemError(ExportkitError, OSError):
    """export_dir's filesystem refused a step: read-only, full, no permission, a name too long."""

    def __init__(self, message: str, path=None, code: Optional[int] = None):
        super().__init__(message)
        self.path, self.errno = path, code
        self.strerror = os.strerror(code) if code else None

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self):
        return type(self), (self.args[0], self.path, self.errno)


class VerificationError(ExportkitError):
    """The reloaded SavedModel does not reproduce the source model within tolerance."""


class LoadError(ExportkitError):
    """An export cannot be turned back into a Keras model."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name when the message is empty).

    >>> first_line(ValueError("bad shape\\nmore detail"))
    'bad shape'
    """
    return (str(error).strip() or type(error).__name__).splitlines()[0]


_NOISE = (
    "full_key:",
    "reference_type=",
    "object_type=",
    "See https://hydra.cc",
    "Config search path",
    "provider=",
    "set env var HYDRA_FULL_ERROR",
)


def one_line(error: BaseException) -> str:
    """An error's whole message on one line (its lines joined; OmegaConf's and Hydra's
    ``full_key:`` / ``object_type=`` / search-path detail left out).

    >>> one_line(ImportError("Error loading 'a.b':\\nNo module named 'a'"))
    "Error loading 'a.b': No module named 'a'"
    """
    lines = []
    for line in (str(error).strip() or type(error).__name__).splitlines():
        line = line.strip()
        if not line or line.startswith(_NOISE):
            continue
        lines.append(line)
    return " ".join(lines) or type(error).__name__


class Interrupted(KeyboardInterrupt):
    """A signal stopped the run: SIGINT (Ctrl-C), SIGTERM (``docker stop``, Kubernetes, SLURM) or
    SIGHUP. ``published``: whether the export had been published before it came."""

    def __init__(self, signal_name: str = "SIGINT", published: bool = False) -> None:
        super().__init__(signal_name)
        self.signal_name, self.published = signal_name, published

    @property
    def exit_status(self) -> int:
        import signal

        return 128 + int(getattr(signal, self.signal_name, signal.SIGINT))

    def line(self) -> str:
        done = "the export had been published before it" if self.published else "nothing was published"
        return f"exportkit: interrupted ({self.signal_name}); {done}"


class StageSkipped(Exception):
    """Raised by a stage that cannot run here; the runner records it as SKIPPED with the reason."""


def full_error_wanted() -> bool:
    """Whether the user asked for tracebacks (``HYDRA_FULL_ERROR=1``). The CLI sets
    ``HYDRA_FULL_ERROR=1`` for Hydra itself (so Hydra raises its errors to exportkit instead of
    printing them) and keeps the user's own choice in ``EXPORTKIT_FULL_ERROR``."""
    return os.environ.get("EXPORTKIT_FULL_ERROR", os.environ.get("HYDRA_FULL_ERROR")) == "1"


def show_traceback(error: BaseException) -> bool:
    """A bug keeps its traceback; a user's mistake does not, unless ``HYDRA_FULL_ERROR=1``."""
    return not isinstance(error, ExportkitError) or full_error_wanted()


def print_error(error: BaseException, prog: str = "exportkit") -> None:
    """The one line a user sees for a mistake: ``exportkit: error: <message>`` on stderr."""
    print(f"{prog}: error: {error}", file=sys.stderr)
