"""What the exporting process and the verification process say to each other.

One ``Request`` per verification, one ``Reply`` to it, each a JSON line (the worker's stdin and
stdout). The cases' arrays travel beside them as ``.npz`` files (``Request.inputs`` in,
``Request.outputs`` back) whose keys join signature key, case label and tensor name with ``::``
(``encode`` / ``decode``); strings travel as fixed-width bytes, so nothing is unpickled, and
the narrow floats NumPy knows only through ``ml_dtypes`` (bfloat16, float8) as their bits, the
dtype's name after ``#`` in the key (``savez`` alone would bring them back as raw bytes).

>>> line = Request(saved_model="/tmp/export", inputs="in.npz", outputs="out.npz").to_json()
>>> Request.from_json(line).device
'/CPU:0'
"""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

SEP = "::"
Case = Tuple[str, str]  # (signature key, label)


@dataclass
class Latency:
    """How each serve case is timed: up to ``runs`` warm calls, within ``budget_s`` seconds."""

    runs: int
    budget_s: float


@dataclass
class Request:
    """Load ``saved_model`` on ``device`` (``auto``: the first GPU, else ``/CPU:0``), run every case
    of ``inputs`` and write the outputs to ``outputs``. ``graph`` names the graph (tag) of each
    signature that is not in ``serve`` (a train or eval step); ``imports`` are modules imported
    first (what registers a custom object or an op)."""

    saved_model: str
    inputs: str
    outputs: str
    device: str = "/CPU:0"
    imports: List[str] = field(default_factory=list)
    graph: Dict[str, str] = field(default_factory=dict)
    latency: Optional[Latency] = None
    # the deployment formats to run on the serve cases too: {name, target, options, path}, each
    # loaded with its own runtime (exportkit.formats); their outputs come back under format_key()
    formats: List[Dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, line: str) -> "Request":
        fields = json.loads(line)
        latency = fields.pop("latency", None)
        return cls(**fields, latency=Latency(**latency) if latency else None)


def format_request(name: str, target: str, options: Dict[str, Any], export_dir) -> Dict[str, Any]:
    """One entry of ``Request.formats``: the format's plugin and options, and where its files are."""
    from exportkit.formats.base import FORMATS_DIR

    return {
        "name": name,
        "target": target,
        "options": dict(options),
        "path": str(Path(export_dir) / FORMATS_DIR / name),
    }


def format_key(name: str, key: str) -> str:
    """The signature key a format's outputs travel under (``format:onnx/serving_default``)."""
    return f"format:{name}/{key}"


@dataclass
class Reply:
    """What the worker did: ``ok``, else ``error`` (its reason, one line), ``where`` (what it was
    doing: a module's import, a graph's load, a signature at a case, the warmup replay) and
    ``detail`` (the traceback, for the log file). The process's ``pid``, when its
    imports were done (``ready_at``, wall time) and the requests it has ``served``; the device it ran
    on, the GPUs it saw, each graph's load seconds, each serve case's latency (``{signature: {case:
    {batch, first_ms, p50_ms, p90_ms, p99_ms, runs}}}``), its peak resident memory for this request,
    and the warmup file's replay (``warmup_records`` None when the export has no warmup file)."""

    ok: bool
    error: str = ""
    where: str = ""
    detail: str = ""
    pid: int = 0
    ready_at: float = 0.0
    served: int = 0
    device: str = ""
    gpus: List[str] = field(default_factory=list)
    load_s: Dict[str, float] = field(default_factory=dict)
    latency: Dict[str, Dict[str, Dict[str, Any]]] = field(default_factory=dict)
    peak_rss_kib: int = 0
    warmup_records: Optional[int] = None
    warmup_seconds: Optional[float] = None
    # format name -> {load_s, latency: {signature: {case: ...}}} or {error, where}: one format's
    # runtime failing does not fail the others (an optional one is left out)
    formats: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, line: str) -> "Reply":
        return cls(**json.loads(line))


def encode(cases: Dict[Case, Dict[str, Any]]) -> Dict[str, np.ndarray]:
    """``{(key, label): {name: array}}`` -> flat ``{"key::label::name": array}`` for ``np.savez``."""
    return dict(
        to_npz(f"{key}{SEP}{label}{SEP}{name}", array)
        for (key, label), arrays in cases.items()
        for name, array in arrays.items()
    )


def decode(flat) -> Dict[Case, Dict[str, np.ndarray]]:
    """The inverse of ``encode`` (from an open ``np.load``)."""
    cases: Dict[Case, Dict[str, np.ndarray]] = {}
    for stored in flat:
        joined, array = from_npz(stored, flat[stored])
        key, label, name = joined.split(SEP, 2)
        cases.setdefault((key, label), {})[name] = array
    return cases


def to_npz(key: str, array) -> Tuple[str, np.ndarray]:
    """``(key, array)`` as ``np.savez`` keeps it: see the module's docstring.

    >>> import ml_dtypes
    >>> to_npz("x", np.ones(2, ml_dtypes.bfloat16))
    ('x#bfloat16', array([16256, 16256], dtype=uint16))
    """
    array = portable(array)
    if array.dtype.kind == "V" and array.dtype.names is None:  # an ml_dtypes type: no NumPy name of its own
        return f"{key}#{array.dtype.name}", array.view(f"u{array.dtype.itemsize}")
    return key, array


def from_npz(key: str, array: np.ndarray) -> Tuple[str, np.ndarray]:
    """The inverse of ``to_npz``."""
    key, _, dtype = key.partition("#")
    if dtype:
        import ml_dtypes

        array = array.view(getattr(ml_dtypes, dtype))
    return key, array


def portable(array) -> np.ndarray:
    """String tensors (object arrays of bytes) as fixed-width bytes: loadable without pickle."""
    array = np.asarray(array)
    if array.dtype.kind in "OU":
        return np.array([v if isinstance(v, bytes) else str(v).encode() for v in array.ravel()], dtype=bytes).reshape(
            array.shape
        )
    return array
