"""The signature contract: what a client of the export relies on, and whether a new version keeps it.

``read`` takes it from the written ``saved_model.pb`` (``.pbtxt``): per tag-set and signature, the
method name and each input's and output's dtype and shape (``null`` for a symbolic dimension,
a ``null`` shape for an unknown rank)::

    {"serve": {"serving_default": {"method_name": "tensorflow/serving/predict",
               "inputs": {"features": {"dtype": "float32", "shape": [null, 8]}},
               "outputs": {"probabilities": {"dtype": "float32", "shape": [null, 3]}}}}}

``diff(old, new)`` sorts the changes into breaking ones and compatible ones:

- breaking: a tag-set, signature, input or output removed (a rename is a removal and an
  addition), a dtype or method name changed, a rank changed, a fixed dimension changed, an
  input's symbolic dimension made fixed (narrowed), and an input **added**: TF Serving's Predict
  rejects a request that lacks one of the signature's inputs ("Request inputs do not match
  required inputs"), so every existing client breaks;
- compatible: a tag-set, signature or output added, an input's fixed dimension made symbolic
  (widened), an output's dimension made fixed or symbolic (its values are what they were).

>>> old = {"serve": {"s": {"method_name": "m", "inputs": {"x": {"dtype": "float32", "shape": [None, 8]}},
...                        "outputs": {"y": {"dtype": "float32", "shape": [None, 3]}}}}}
>>> new = {"serve": {"s": {"method_name": "m", "inputs": {"x": {"dtype": "float32", "shape": [1, 8]}},
...                        "outputs": {"y": {"dtype": "float32", "shape": [None, 3]},
...                                    "z": {"dtype": "int64", "shape": [None]}}}}}
>>> diff(old, new).status, diff(old, new).breaking, diff(old, new).compatible
('breaking', ['serve/s: input x shape [null, 8] -> [1, 8] (narrowed)'], ['serve/s: output z added'])
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from exportkit.artifact import files
from exportkit.errors import ExportkitError

Contract = Dict[str, Dict[str, Dict[str, Any]]]  # tag-set -> signature key -> {method_name, inputs, outputs}


class ContractError(ExportkitError):
    """The new version breaks the signature contract of the one it is compared with."""


def read(export_dir: Path) -> Contract:
    """The contract of the SavedModel written in ``export_dir`` (imports TensorFlow's protos)."""
    proto = files.read_saved_model(Path(export_dir))
    if proto is None:
        raise ExportkitError(f"{export_dir} holds no saved_model.pb or saved_model.pbtxt; give an export directory")
    return of_saved_model(proto)


def of_saved_model(proto) -> Contract:
    from tensorflow.python.framework import dtypes

    contract: Contract = {}
    for meta in proto.meta_graphs:
        tags = ",".join(meta.meta_info_def.tags)
        signatures = contract.setdefault(tags, {})
        for key in sorted(meta.signature_def):
            if key.startswith("__"):  # TF's own __saved_model_init_op
                continue
            signature = meta.signature_def[key]
            signatures[key] = {
                "method_name": signature.method_name,
                "inputs": {name: _tensor(signature.inputs[name], dtypes) for name in sorted(signature.inputs)},
                "outputs": {name: _tensor(signature.outputs[name], dtypes) for name in sorted(signature.outputs)},
            }
    return contract


def _tensor(info, dtypes) -> Dict[str, Any]:
    shape = None if info.tensor_shape.unknown_rank else [d.size if d.size >= 0 else None for d in info.tensor_shape.dim]
    return {"dtype": dtypes.as_dtype(info.dtype).name, "shape": shape}


@dataclass
class Diff:
    breaking: List[str] = field(default_factory=list)
    compatible: List[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``same``, ``compatible`` or ``breaking``."""
        return "breaking" if self.breaking else "compatible" if self.compatible else "same"

    def summary(self, limit: int = 3) -> str:
        """The breaking changes on one line (the first ``limit``, and how many more)."""
        shown = "; ".join(self.breaking[:limit])
        return shown + (f" (and {len(self.breaking) - limit} more)" if len(self.breaking) > limit else "")


def diff(old: Contract, new: Contract) -> Diff:
    """How ``new`` differs from ``old`` for a client of ``old``."""
    out = Diff()
    for tags in sorted(set(old) | set(new)):
        if tags not in new:
            out.breaking.append(f"tag-set {tags} removed")
            continue
        if tags not in old:
            out.compatible.append(f"tag-set {tags} added")
            continue
        for key in sorted(set(old[tags]) | set(new[tags])):
            where = f"{tags}/{key}"
            if key not in new[tags]:
                out.breaking.append(f"{where}: signature removed")
            elif key not in old[tags]:
                out.compatible.append(f"{where}: signature added")
            else:
                _signature(where, old[tags][key], new[tags][key], out)
    return out


def _signature(where: str, old: Dict[str, Any], new: Dict[str, Any], out: Diff) -> None:
    if old.get("method_name") != new.get("method_name"):
        out.breaking.append(f"{where}: method name {old.get('method_name')} -> {new.get('method_name')}")
    for kind in ("inputs", "outputs"):
        noun = kind[:-1]
        before, after = old.get(kind, {}), new.get(kind, {})
        for name in sorted(set(before) | set(after)):
            if name not in after:
                out.breaking.append(f"{where}: {noun} {name} removed")
            elif name not in before:
                (out.breaking if kind == "inputs" else out.compatible).append(
                    f"{where}: {noun} {name} added"
                    + (" (clients that do not send it are refused)" if kind == "inputs" else "")
                )
            else:
                _tensor_change(f"{where}: {noun} {name}", before[name], after[name], kind == "inputs", out)


def _tensor_change(what: str, old: Dict[str, Any], new: Dict[str, Any], is_input: bool, out: Diff) -> None:
    if old["dtype"] != new["dtype"]:
        out.breaking.append(f"{what} dtype {old['dtype']} -> {new['dtype']}")
    kind = _shape_change(old["shape"], new["shape"])
    if kind is None:
        return
    change = f"{what} shape {_shape(old['shape'])} -> {_shape(new['shape'])} ({kind})"
    breaks = kind == "changed" or (is_input and kind == "narrowed")
    (out.breaking if breaks else out.compatible).append(change)


def _shape_change(old: Optional[list], new: Optional[list]) -> Optional[str]:
    """None (same), ``narrowed`` (symbolic -> fixed), ``widened`` (fixed -> symbolic) or ``changed``."""
    if old == new:
        return None
    if old is None:
        return "narrowed"
    if new is None:
        return "widened"
    if len(old) != len(new):
        return "changed"
    pairs: List[Tuple[Any, Any]] = [(a, b) for a, b in zip(old, new) if a != b]
    if any(a is not None and b is not None for a, b in pairs):
        return "changed"
    return "narrowed" if any(a is None for a, _ in pairs) else "widened"


def _shape(shape: Optional[list]) -> str:
    return "unknown rank" if shape is None else "[" + ", ".join("null" if d is None else str(d) for d in shape) + "]"
