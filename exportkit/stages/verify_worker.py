"""Runs in a fresh process for the verify stage: it has the export and the custom objects'
modules, nothing else of the exporting process. Loads each graph a case needs (``serve``, and
``train``/``eval`` for the signatures named by ``--graph KEY=TAG``), runs each case; with
``--latency-runs N``, also times each serve case (``measure_latency``). ``exportkit verify PATH``
runs the same worker on an export that already exists.

``--device auto`` runs on the first GPU TensorFlow sees, else ``/CPU:0``; a named device that is
not present ends the worker with a one-line reason (soft placement would silently use the CPU).

With ``--serve`` it is a long-lived verifier (``exportkit.stages.verifier.Verifier``): it imports
TensorFlow and the custom objects' modules while the exporting process builds and writes the
export, then answers one JSON request per line on stdin (``serve``), each run as the one-shot
command line would run it (``main``), the SavedModel loaded afresh from disk for every request.

Cases travel as ``.npz`` files whose keys join signature key, case label and tensor name with
``::`` (``encode`` / ``decode``, used by both sides); strings travel as fixed-width bytes.
"""

import argparse
import gc
import importlib
import json
import time
from typing import Dict, Tuple

import numpy as np

SEP = "::"
PEAK_RSS = "peak_rss_kib"  # the worker's own peak resident memory, beside the cases' outputs
WARMUP_RECORDS, WARMUP_SECONDS = "warmup_records", "warmup_seconds"  # the warmup file's replay
WORKER_JSON = "worker_json"  # {"device", "gpus", "load_s", "latency"}: what the worker measured, as JSON


def encode(cases: Dict[Tuple[str, str], Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    """``{(key, label): {name: array}}`` -> flat ``{"key::label::name": array}`` for ``np.savez``."""
    return {
        f"{key}{SEP}{label}{SEP}{name}": portable(array)
        for (key, label), arrays in cases.items()
        for name, array in arrays.items()
    }


def portable(array) -> np.ndarray:
    """String tensors (object arrays of bytes) as fixed-width bytes: loadable without pickle."""
    array = np.asarray(array)
    if array.dtype.kind in "OU":
        return np.array([v if isinstance(v, bytes) else str(v).encode() for v in array.ravel()], dtype=bytes).reshape(
            array.shape
        )
    return array


def decode(flat) -> Dict[Tuple[str, str], Dict[str, np.ndarray]]:
    """The inverse of ``encode`` (from an open ``np.load``)."""
    cases = {}
    for joined, array in flat.items():
        if SEP not in joined:  # PEAK_RSS, the warmup replay, WORKER_JSON
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("saved_model")
    parser.add_argument("inputs")
    parser.add_argument("outputs")
    parser.add_argument("--device", default="/CPU:0", help="a device, or auto: the first GPU, else /CPU:0")
    parser.add_argument("--import", dest="imports", action="append", default=[])
    parser.add_argument("--parent", type=int, default=None, help="die with this process")
    parser.add_argument("--graph", action="append", default=[], help="KEY=TAG: signature KEY is in graph TAG")
    parser.add_argument("--latency-runs", type=int, default=0, help="warm calls timed per serve case (0: none)")
    parser.add_argument("--latency-budget", type=float, default=5.0, help="seconds of warm calls per case, at most")
    args = parser.parse_args(argv)
    if args.parent is not None:
        die_with_parent(args.parent)
    for module in args.imports:
        importlib.import_module(module)
    from exportkit.frameworks import import_tensorflow

    import_tensorflow(quiet=False)  # JAX held off (a no-op when --serve imported it already)
    import tensorflow as tf

    gpus = [short_name(d.name) for d in tf.config.list_logical_devices("GPU")]
    device = resolve_device(args.device, gpus, [short_name(d.name) for d in tf.config.list_logical_devices()])
    graph_of = dict(g.split("=", 1) for g in args.graph)
    loaded, load_s, latency = {}, {}, {}
    with np.load(args.inputs) as data:
        cases = decode(data)
    results = {}
    with tf.device(device):
        for (key, label), arrays in cases.items():
            tag = graph_of.get(key, "serve")
            if tag not in loaded:
                start = time.perf_counter()
                loaded[tag] = load_graph(args.saved_model, tag)
                load_s[tag] = time.perf_counter() - start
            function = loaded[tag].signatures[key]
            feed = {n: tf.constant(a) for n, a in arrays.items()}
            start = time.perf_counter()
            results[(key, label)] = {name: value.numpy() for name, value in function(**feed).items()}
            first = time.perf_counter() - start
            if tag == "serve" and args.latency_runs > 0:  # a train step would change the weights it times
                latency.setdefault(key, {})[label] = measure_latency(
                    function, feed, first, args.latency_runs, args.latency_budget
                )
    # The TF2-loaded graphs go before the warmup replay's TF1 session loads the weights again: held
    # together they were two copies of the weights at this process's peak (2.4x a 2.25 GiB export's).
    function = feed = None
    loaded.clear()
    gc.collect()
    replayed = replay_warmup(args.saved_model)
    measured = {"device": device, "gpus": gpus, "load_s": load_s, "latency": latency}
    np.savez(
        args.outputs,
        **encode(results),
        **replayed,
        **{PEAK_RSS: np.int64(peak_rss_kib())},
        **{WORKER_JSON: np.array(json.dumps(measured))},
    )


def short_name(name: str) -> str:
    """``/device:GPU:0`` (or ``/job:localhost/replica:0/task:0/device:GPU:0``) -> ``/GPU:0``."""
    kind, index = name.rsplit(":", 2)[-2:]
    return f"/{kind.rsplit('/', 1)[-1]}:{index}"


def resolve_device(asked: str, gpus, present) -> str:
    """The device the cases run on: ``auto`` -> the first GPU, else ``/CPU:0``; a device this
    machine lacks ends the worker (``tf.device`` would fall back to the CPU without a word)."""
    import sys

    import tensorflow as tf

    if asked == "auto":
        return gpus[0] if gpus else "/CPU:0"
    try:
        spec = tf.DeviceSpec.from_string(asked)
    except ValueError:
        spec = tf.DeviceSpec()
    wanted = f"/{spec.device_type}:{spec.device_index or 0}"
    if spec.device_type is None or wanted not in present:
        sys.exit(f"device {asked} is not present on this machine (TensorFlow sees {', '.join(present)})")
    return wanted


def measure_latency(function, feed, first_s: float, runs: int, budget_s: float) -> dict:
    """Warm calls of one signature at one case: up to ``runs``, stopping once ``budget_s`` is
    spent (one at least). Each call ends when its outputs are on the host (``.numpy()``), so a
    GPU's queue is counted. Milliseconds: first call, warm median / p90 / p99 (interpolated)."""
    times = []
    spent = time.perf_counter()
    while len(times) < runs and (not times or time.perf_counter() - spent < budget_s):
        start = time.perf_counter()
        for value in function(**feed).values():
            value.numpy()
        times.append(time.perf_counter() - start)
    p50, p90, p99 = (float(v) * 1e3 for v in np.percentile(times, [50, 90, 99]))
    batch = next((int(np.shape(t)[0]) for t in feed.values() if len(np.shape(t))), 1)
    return {"batch": batch, "first_ms": first_s * 1e3, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "runs": len(times)}


def replay_warmup(saved_model: str) -> dict:
    """TF Serving's load path: the warmup records (if the export has them) through the TF1 session
    loader; a record that does not run ends the worker with its reason, as it fails TF Serving's load."""
    import sys
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


def request_argv(request: dict) -> list:
    """A serve request (``saved_model``, ``inputs``, ``outputs``, ``device``, ``graph``: {key: tag},
    ``imports``, ``latency``: {runs, budget_s}) as the one-shot command line's arguments."""
    argv = [request["saved_model"], request["inputs"], request["outputs"], "--device", request.get("device", "/CPU:0")]
    argv += [a for module in request.get("imports", []) for a in ("--import", module)]
    argv += [a for key, tag in request.get("graph", {}).items() for a in ("--graph", f"{key}={tag}")]
    latency = request.get("latency")
    if latency:
        argv += ["--latency-runs", str(latency["runs"]), "--latency-budget", str(latency["budget_s"])]
    return argv


def serve(argv=None) -> None:
    """``--serve [--parent PID] [--import MODULE ...]``: import TensorFlow and the modules now, then
    answer each request line on stdin with one JSON line: ``{"ok": true}`` or ``{"ok": false,
    "error": "..."}``, with this process's ``pid``, ``ready_at`` (wall time the imports were
    done) and ``served`` (requests so far). Ends at EOF on stdin. The replies go to the original
    stdout; anything else the frameworks or a model print goes to stderr, never into a reply."""
    import json
    import os
    import sys
    import time
    import traceback

    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--parent", type=int, default=None, help="die with this process")
    parser.add_argument("--import", dest="imports", action="append", default=[])
    args = parser.parse_args(argv)
    if args.parent is not None:
        die_with_parent(args.parent)
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    for module in args.imports:  # a module that fails is reported by the request that needs it
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001
            pass
    from exportkit.frameworks import import_tensorflow

    import_tensorflow(quiet=False)  # its logs go to stderr, kept by the exporting process
    import tensorflow as tf

    from exportkit.artifact import warmup  # noqa: F401  (replay_warmup's, imported while idle)

    tf.config.list_logical_devices()  # the devices' set-up, also paid before the first request
    ready_at, served = time.time(), 0
    for line in iter(sys.stdin.readline, ""):
        if not line.strip():
            continue
        reset_peak_rss()
        reply = {"ok": True}
        try:
            main(request_argv(json.loads(line)))
        except SystemExit as error:  # argparse, or a warmup record that does not run
            if error.code not in (None, 0):
                reply = {"ok": False, "error": str(error.code)}
        except Exception:  # noqa: BLE001 - the export's failure, told to the exporting process
            reply = {"ok": False, "error": traceback.format_exc()}
        served += 1
        reply.update(pid=os.getpid(), ready_at=ready_at, served=served)
        sys.stderr.flush()
        replies.write(json.dumps(reply) + "\n")
        gc.collect()  # the request's SavedModels, before the next export's


def reset_peak_rss() -> None:
    """Make ``VmHWM`` this request's peak (from the resident size now: TensorFlow's own memory,
    as a one-shot worker counts it), not the highest of every request served before."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass


if __name__ == "__main__":
    import sys

    from exportkit.frameworks import exit_now

    serve() if "--serve" in sys.argv[1:] else main()
    exit_now(0)  # done (for --serve: EOF), without the second of TensorFlow's module teardown
