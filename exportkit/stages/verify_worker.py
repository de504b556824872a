"""Runs in a fresh process for the verify stage: it has the export and the custom objects'
modules, nothing else of the exporting process. Loads each graph a case needs (``serve``, and
``train``/``eval`` for the signatures named by ``--graph KEY=TAG``), runs each case.

Cases travel as ``.npz`` files whose keys join signature key, case label and tensor name with
``::`` (``encode`` / ``decode``, used by both sides); strings travel as fixed-width bytes.
"""
import argparse
import importlib
from typing import Dict, Tuple

import numpy as np

SEP = "::"
PEAK_RSS = "peak_rss_kib"  # the worker's own peak resident memory, beside the cases' outputs
WARMUP_RECORDS, WARMUP_SECONDS = "warmup_records", "warmup_seconds"  # the warmup file's replay


def encode(cases: Dict[Tuple[str, str], Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    """``{(key, label): {name: array}}`` -> flat ``{"key::label::name": array}`` for ``np.savez``."""
    return {f"{key}{SEP}{label}{SEP}{name}": portable(array)
            for (key, label), arrays in cases.items() for name, array in arrays.items()}


def portable(array) -> np.ndarray:
    """String tensors (object arrays of bytes) as fixed-width bytes: loadable without pickle."""
    array = np.asarray(array)
    if array.dtype.kind in "OU":
        return np.array([v if isinstance(v, bytes) else str(v).encode() for v in array.ravel()],
                        dtype=bytes).reshape(array.shape)
    return array


def decode(flat) -> Dict[Tuple[str, str], Dict[str, np.ndarray]]:
    """The inverse of ``encode`` (from an open ``np.load``)."""
    cases = {}
    for joined, array in flat.items():
        if SEP not in joined:  # PEAK_RSS
            continue
        key, label, name = joined.split(SEP, 2)
        cases.setdefault((key, label), {})[name] = array
    return cases


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when the exporting one dies (Linux ``PR_SET_PDEATHSIG``); if it died
    before this line ran, exit now. Elsewhere the worker outlives a killed parent by one run."""
    import ctypes
    import os
    import signal
    import sys

    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("saved_model")
    parser.add_argument("inputs")
    parser.add_argument("outputs")
    parser.add_argument("--device", default="/CPU:0")
    parser.add_argument("--import", dest="imports", action="append", default=[])
    parser.add_argument("--parent", type=int, default=None, help="die with this process")
    parser.add_argument("--graph", action="append", default=[], help="KEY=TAG: signature KEY is in graph TAG")
    args = parser.parse_args()
    if args.parent is not None:
        die_with_parent(args.parent)
    for module in args.imports:
        importlib.import_module(module)
    import tensorflow as tf

    graph_of = dict(g.split("=", 1) for g in args.graph)
    loaded = {}
    with np.load(args.inputs) as data:
        cases = decode(data)
    results = {}
    with tf.device(args.device):
        for (key, label), arrays in cases.items():
            tag = graph_of.get(key, "serve")
            if tag not in loaded:
                loaded[tag] = load_graph(args.saved_model, tag)
            outputs = loaded[tag].signatures[key](**{n: tf.constant(a) for n, a in arrays.items()})
            results[(key, label)] = {name: value.numpy() for name, value in outputs.items()}
    replayed = replay_warmup(args.saved_model)
    np.savez(args.outputs, **encode(results), **replayed, **{PEAK_RSS: np.int64(peak_rss_kib())})


def replay_warmup(saved_model: str) -> dict:
    """TF Serving's load path: the warmup records (if the export has them) through the TF1 session
    loader; a record that does not run ends the worker with its reason, as it fails TF Serving's load."""
    import sys
    import time
    from pathlib import Path

    from exportkit.artifact import warmup

    if not (Path(saved_model) / warmup.WARMUP).is_file():
        return {}
    start = time.perf_counter()
    try:
        count = len(warmup.replay(Path(saved_model)))
    except warmup.WarmupError as error:
        sys.exit(f"{warmup.WARMUP}: {error}")
    return {WARMUP_RECORDS: np.int64(count), WARMUP_SECONDS: np.float64(time.perf_counter() - start)}


def load_graph(saved_model: str, tag: str):
    """One graph of the export, by its tag, with TF2's loader (each graph gets its own variables,
    so a train step run here changes nothing the other graphs read): from ``graphs/<tag>/`` when
    the export keeps that graph in a SavedModel of its own, else from the export's root."""
    from pathlib import Path

    import tensorflow as tf

    nested = Path(saved_model) / "graphs" / tag
    own = any((nested / name).is_file() for name in ("saved_model.pb", "saved_model.pbtxt"))
    return tf.saved_model.load(str(nested if own else saved_model), tags=[tag])


def peak_rss_kib() -> int:
    """This process's own high-water RSS since its exec (``VmHWM``; ``ru_maxrss`` would also
    count the exporting process's pages it was forked from)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


if __name__ == "__main__":
    main()
