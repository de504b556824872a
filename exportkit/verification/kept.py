"""The cases kept inside a verified export, under ``assets.extra/``: ``verify_inputs.npz`` (the
inputs), ``verify_outputs.npz`` (the source model's outputs) and ``verify.json`` (which case is
which, and the tolerances), so the export can be verified again without the source model
(``exportkit verify PATH``). Both ``.npz`` files use the key scheme ``signature/case/name``; the
kept inputs are therefore themselves a valid ``verify.inputs``.
"""

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Set, Tuple

import numpy as np

from exportkit.errors import ExportkitError
from exportkit.verification.protocol import Case, from_npz, to_npz

KEPT_DIR, INDEX_FILE = "assets.extra", "verify.json"
INPUTS_FILE, OUTPUTS_FILE = "verify_inputs.npz", "verify_outputs.npz"
FORMAT = "exportkit-verify/1"


@dataclass
class KeptCases:
    """Inputs and expected outputs per ``(signature, case)``; the graph (tag) of each signature,
    the tolerances per output ``(atol, rtol)``, the outputs whose top-1 class is compared, and
    where the inputs came from (``verify.inputs`` or ``generated``)."""

    inputs: Dict[Case, Dict[str, np.ndarray]]
    expected: Dict[Case, Dict[str, np.ndarray]]
    graph_of: Dict[str, str]
    tolerances: Dict[str, Tuple[float, float]]
    top1: Set[str] = field(default_factory=set)
    source: Optional[str] = None


def flatten(cases: Mapping[Case, Mapping[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    """``{(signature, label): {name: array}}`` -> ``{"signature/label/name": array}``."""
    return dict(
        to_npz(f"{sig}/{label}/{name}", a) for (sig, label), arrays in cases.items() for name, a in arrays.items()
    )


def save_npz(path, arrays: Mapping[str, np.ndarray]) -> None:
    """``numpy.savez`` with fixed zip timestamps: the same arrays give the same bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)


def keep(directory: Path, kept: KeptCases) -> None:
    """Write ``kept`` under ``directory`` (the staged export's ``assets.extra/``)."""
    directory.mkdir(parents=True, exist_ok=True)
    save_npz(directory / INPUTS_FILE, flatten(kept.inputs))
    save_npz(directory / OUTPUTS_FILE, flatten(kept.expected))
    names = sorted({n for outputs in kept.expected.values() for n in outputs})
    index = {
        "format": FORMAT,
        "inputs": INPUTS_FILE,
        "outputs": OUTPUTS_FILE,
        "source": kept.source,
        "cases": [
            {
                "graph": kept.graph_of[key],
                "signature": key,
                "case": label,
                "inputs": list(kept.inputs[(key, label)]),
                "outputs": list(outputs),
            }
            for (key, label), outputs in kept.expected.items()
        ],
        "tolerances": {n: {"atol": kept.tolerances[n][0], "rtol": kept.tolerances[n][1]} for n in names},
        "top1": sorted(kept.top1),
    }
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=1) + "\n")


def read(export_dir: Path) -> KeptCases:
    """The cases kept in ``export_dir``; a missing or unreadable file is a one-line error."""
    kept = export_dir / KEPT_DIR
    index_file = kept / INDEX_FILE
    if not index_file.is_file():
        raise ExportkitError(
            f"verify: {export_dir} keeps no verification cases ({KEPT_DIR}/{INDEX_FILE} is "
            f"missing): it was exported with verification off or by an older exportkit; "
            f"export it again with the verify stage on to verify it later"
        )
    try:
        index = json.loads(index_file.read_text())
    except ValueError as error:
        raise ExportkitError(f"verify: {index_file} is not JSON ({error})") from None
    if index.get("format") != FORMAT:
        raise ExportkitError(
            f"verify: {index_file} has format {index.get('format')!r}; this exportkit reads {FORMAT!r}"
        )
    arrays = {}
    for kind in ("inputs", "outputs"):
        try:
            with np.load(kept / index[kind], allow_pickle=False) as data:
                arrays[kind] = dict(from_npz(k, data[k]) for k in data.files)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise ExportkitError(f"verify: {kept / index[kind]} cannot be read ({error})") from None
    inputs: Dict[Case, Dict[str, np.ndarray]] = {}
    expected: Dict[Case, Dict[str, np.ndarray]] = {}
    graph_of: Dict[str, str] = {}
    for case in index["cases"]:
        key, label = case["signature"], case["case"]
        graph_of[key] = case["graph"]
        names: List[str]
        for kind, names, into in (("inputs", case["inputs"], inputs), ("outputs", case["outputs"], expected)):
            flat = {name: f"{key}/{label}/{name}" for name in names}
            missing = [k for k in flat.values() if k not in arrays[kind]]
            if missing:
                raise ExportkitError(
                    f"verify: {kept / index[kind]} has no array {missing[0]!r}, which "
                    f"{INDEX_FILE} lists; the kept files do not belong together"
                )
            into[(key, label)] = {name: arrays[kind][k] for name, k in flat.items()}
    tolerances = {name: (t["atol"], t["rtol"]) for name, t in index["tolerances"].items()}
    return KeptCases(inputs, expected, graph_of, tolerances, set(index.get("top1", [])), index.get("source"))
