"""Runs in a fresh process for the verify stage: it has the export and the custom objects'
modules, nothing else of the exporting process. Loads the ``serve`` graph, runs each case.

Cases travel as ``.npz`` files whose keys join signature key, batch size and tensor name with
``::`` (``encode`` / ``decode``, used by both sides).
"""
import argparse
import importlib
from typing import Dict, Tuple

import numpy as np

SEP = "::"
PEAK_RSS = "peak_rss_kib"  # the worker's own peak resident memory, beside the cases' outputs
WARMUP_RECORDS, WARMUP_SECONDS = "warmup_records", "warmup_seconds"  # the warmup file's replay


def encode(cases: Dict[Tuple[str, int], Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    """``{(key, batch): {name: array}}`` -> flat ``{"key::batch::name": array}`` for ``np.savez``."""
    return {f"{key}{SEP}{size}{SEP}{name}": array
            for (key, size), arrays in cases.items() for name, array in arrays.items()}


def decode(flat) -> Dict[Tuple[str, int], Dict[str, np.ndarray]]:
    """The inverse of ``encode`` (from an open ``np.load``)."""
    cases = {}
    for joined, array in flat.items():
        if SEP not in joined:  # PEAK_RSS
            continue
        key, size, name = joined.split(SEP)
        cases.setdefault((key, int(size)), {})[name] = array
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
    args = parser.parse_args()
    if args.parent is not None:
        die_with_parent(args.parent)
    for module in args.imports:
        importlib.import_module(module)
    import tensorflow as tf

    loaded = tf.saved_model.load(args.saved_model, tags=["serve"])
    with np.load(args.inputs) as data:
        cases = decode(data)
    results = {}
    with tf.device(args.device):
        for (key, size), arrays in cases.items():
            outputs = loaded.signatures[key](**{n: tf.constant(a) for n, a in arrays.items()})
            results[(key, size)] = {name: value.numpy() for name, value in outputs.items()}
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
