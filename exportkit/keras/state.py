"""A Keras model's own per-layer state, kept in the export so ``load_from_saved_model`` restores
it as ``keras.saving.load_model`` does.

Assigning variables is not enough for layers that finish their state after loading (an adapted
``Normalization`` computes its mean and variance in ``load_own_variables``) or keep it outside
variables (a lookup layer's adapted vocabulary is a file its ``save_assets`` writes). So the
export records what Keras' own saving walk (``keras.saving``'s ``_save_state``) sees, per layer
path, in ``assets/keras_state.json``:

* ``weights``: for each layer path, ``save_own_variables``' entries, each either a model variable
  (``{"variable": i}``, the ``i``-th of ``model.variables``, whose value is in the checkpoint as
  ``model_variables/i``: never stored twice) or a value of its own (``{"dtype", "shape",
  "value"}``, e.g. a TF-IDF layer's weights). Entries of the optimizer and metrics are left out:
  they are restored by variable group.
* ``assets``: the files ``save_assets`` wrote (a vocabulary), by relative path, as text (or
  base64 for bytes that are not UTF-8).

On load, Keras' own ``_load_state`` walks the rebuilt model with stores reading these back, so
each layer's ``load_own_variables`` / ``load_assets`` runs exactly as when Keras loads a
``.keras`` file.
"""

import base64
import json
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Set, Tuple

import keras
import numpy as np
from keras.src.saving import saving_lib

STATE_ASSET = "keras_state.json"


class _WeightsStore(saving_lib.NpzIOStore):
    """Keras' in-memory weights store (an ``NpzIOStore``, which Keras' walk requires), holding
    ``{layer path: {key: value}}`` and never touching a file."""

    def __init__(self, contents: Dict[str, Dict[str, Any]]) -> None:
        self.contents, self.mode, self.archive = contents, "memory", None

    def get(self, path):
        return dict(self.contents.get(path or "__root__", {}))

    def close(self):
        pass


class _AssetsDir(saving_lib.DiskIOStore):
    """Keras' assets store on a plain directory (``make`` creates, ``get`` finds), no archive."""

    def __init__(self, directory: Path) -> None:
        super().__init__(str(directory), mode="r")  # "r": use the directory as it is, no temp copy

    def get(self, path):
        # Keras' archive has a directory for every layer with assets, even one that wrote none
        return self.make(path)


def state_json(model) -> str:
    """``assets/keras_state.json`` for ``model`` (see the module docstring)."""
    index = {id(v): i for i, v in enumerate(model.variables)}
    weights = _WeightsStore({})
    with tempfile.TemporaryDirectory(prefix="exportkit-keras-assets-") as tmp:
        saving_lib._save_state(
            model, weights_store=weights, assets_store=_AssetsDir(Path(tmp)), inner_path="", visited_saveables=set()
        )
        assets = {
            p.relative_to(tmp).as_posix(): _encode_file(p.read_bytes())
            for p in sorted(Path(tmp).rglob("*"))
            if p.is_file()
        }
    layers = {}
    for path, store in weights.contents.items():
        entry = _entry(store, index)
        if entry:
            layers[path] = entry
    return json.dumps({"format": 1, "weights": layers, "assets": assets}, sort_keys=True, indent=1)


def _entry(store: Dict[str, Any], index: Dict[int, int]):
    """One layer path's entries, or None when it holds variables outside the model's (the
    optimizer's or metrics' state, restored by their own variable groups)."""
    entry: Dict[str, Dict[str, Any]] = {}
    for key, value in store.items():
        if isinstance(value, keras.Variable):
            if id(value) not in index:
                return None
            entry[key] = {"variable": index[id(value)]}
        else:
            array = np.asarray(keras.ops.convert_to_numpy(value))
            if array.dtype.kind in "SUO":
                entry[key] = {
                    "dtype": "str",
                    "shape": list(array.shape),
                    "value": [_text(v) for v in array.ravel().tolist()],
                }
            else:
                entry[key] = {"dtype": array.dtype.name, "shape": list(array.shape), "value": array.ravel().tolist()}
    return entry


def restore(model, text: str, model_values: List[np.ndarray]) -> List[str]:
    """Run Keras' own state loading on ``model`` from ``keras_state.json`` and the checkpoint's
    model variable values; returns ``"layer: error"`` for each layer that refused its state."""
    state = json.loads(text)
    contents = {
        path: {key: _value(item, model_values) for key, item in entry.items()}
        for path, entry in state["weights"].items()
    }
    failed: Set[int] = set()  # ids of the layers that refused their state
    errors: Dict[int, Tuple[Any, BaseException]] = {}  # id -> (layer, its error)
    with tempfile.TemporaryDirectory(prefix="exportkit-keras-assets-") as tmp:
        for relative, encoded in state["assets"].items():
            target = Path(tmp, relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_decode_file(encoded))
        saving_lib._load_state(
            model,
            weights_store=_WeightsStore(contents),
            assets_store=_AssetsDir(Path(tmp)),
            inner_path="",
            visited_saveables=set(),
            failed_saveables=failed,
            error_msgs=errors,
        )
    return [f"{getattr(obj, 'name', type(obj).__name__)}: {error}" for obj, error in errors.values()]


def _value(item: Dict[str, Any], model_values: List[np.ndarray]):
    if "variable" in item:
        return model_values[item["variable"]]
    if item["dtype"] == "str":
        return np.array(item["value"], dtype=object).reshape(item["shape"])
    return np.array(item["value"], dtype=item["dtype"]).reshape(item["shape"])


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _encode_file(data: bytes) -> Dict[str, str]:
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def _decode_file(encoded: Dict[str, str]) -> bytes:
    return encoded["text"].encode("utf-8") if "text" in encoded else base64.b64decode(encoded["base64"])
