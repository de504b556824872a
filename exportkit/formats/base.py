"""The deployment-format interface: an artifact converted from the export's SavedModel and the
runtime that runs it, a plugin chosen by a ``formats.<name>`` node's ``_target_`` (like a stage or
a model source).

A format has two jobs. In the exporting process, ``convert`` writes its files from the staged
SavedModel into a directory of its own (``formats/<name>/`` in the export). In the verification
process, ``runner`` loads those files with the format's runtime and returns a function that runs
one signature on NumPy inputs, so the verification compares the artifact with the source model
on the same cases as the SavedModel. The options are the constructor's arguments::

    class TorchScript(Format):
        extra = "torchscript"          # pip install exportkit[torchscript], for the message
        requires = ("torch",)          # modules convert needs
        def convert(self, saved_model, out, signatures): ...
        def runner(self, directory): ...

    python -m exportkit +formats.ts._target_=mypkg.TorchScript
"""

import abc
import importlib.util
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from exportkit.errors import ConfigError, ConversionError

FORMATS_DIR = "formats"  # the export's directory of deployment formats, one folder per format
# (signature key, {input name: array}) -> {output name: array}
Runner = Callable[[str, Dict[str, np.ndarray]], Dict[str, np.ndarray]]


class Format(abc.ABC):
    """One deployment format. ``optional``: a conversion or verification failure leaves the
    format out (recorded as failed) instead of failing the export. ``tolerance``: the largest
    error allowed, relative to each output's scale (max |artifact - source| / max |source|);
    ``min_top1``: the top-1 agreement rate a classifier's outputs must reach (checked where the
    output has classes). Both default by precision (``default_tolerance``)."""

    extra: str = ""  # the exportkit extra that installs what the format needs
    requires: Tuple[str, ...] = ()  # modules its conversion imports
    runtime_requires: Tuple[str, ...] = ()  # modules its runtime imports
    # op in the serve graph -> why the format cannot take the model and the way around it,
    # checked before converting (a converter's own failure on them says nothing useful)
    refused_ops: Dict[str, str] = {}

    def __init__(self, optional: bool = False, tolerance: Optional[float] = None, min_top1: Optional[float] = None):
        self.optional = bool(optional)
        default_tolerance, default_top1 = self.defaults()
        self.tolerance = float(tolerance) if tolerance is not None else default_tolerance
        self.min_top1 = float(min_top1) if min_top1 is not None else default_top1
        if not self.tolerance > 0 or not 0 <= self.min_top1 <= 1:
            raise ConfigError(f"formats: tolerance must be > 0 and min_top1 within [0, 1], got {tolerance}, {min_top1}")

    def defaults(self) -> Tuple[float, float]:
        """(tolerance, min_top1) for this format's precision: float32 artifacts by default."""
        return 1e-4, 1.0

    def options(self) -> Dict[str, Any]:
        """What the manifest records of this format's settings (besides tolerance and min_top1)."""
        return {}

    def missing(self, runtime: bool = False) -> Optional[str]:
        """The ``pip install`` line for a module this format needs that is not installed, else None."""
        for module in self.runtime_requires if runtime else self.requires + self.runtime_requires:
            if importlib.util.find_spec(module.split(".")[0]) is None:
                return f"pip install 'exportkit[{self.extra}]'" if self.extra else f"pip install {module}"
        return None

    @abc.abstractmethod
    def convert(self, saved_model: Path, out: Path, signatures: Dict[str, Dict[str, Any]]) -> None:
        """Write the artifact's files into ``out`` (an empty directory) from the SavedModel at
        ``saved_model`` (``signatures``: key -> {input name: tf.TensorSpec}, the serve graph's).
        A model feature the format cannot express is a ``ConversionError`` with one line."""

    @abc.abstractmethod
    def runner(self, directory: Path) -> Runner:
        """Load the artifact in ``directory`` with the format's runtime (in the verification process)."""


def refuses_jax2tf(format_name: str, converter: str) -> Dict[str, str]:
    """``refused_ops`` for a converter that cannot take a jax2tf export's ``XlaCallModule``."""
    return {
        "XlaCallModule": f"the model is a jax2tf export (its serve graph is one XlaCallModule op of StableHLO), "
        f"which {converter} cannot convert and the installed JAX has no other path to TensorFlow ops; use "
        f"litert for this model, or leave {format_name} out"
    }


def check_choice(key: str, value: Any, choices: Tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(choices)}")
    return str(value)


def unsupported(format_name: str, error: BaseException, known: Dict[str, str]) -> ConversionError:
    """A converter's failure as one line: the model feature it names (a message in ``known``:
    converter text -> what it means and the way around it), else its own message's first line."""
    text = str(error)
    for needle, meaning in known.items():
        if needle in text:
            return ConversionError(f"formats.{format_name}: {meaning}")
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
    return ConversionError(f"formats.{format_name}: the converter failed: {type(error).__name__}: {first[:300]}")
