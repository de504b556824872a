"""The verification process: a fresh Python process that has the export and the modules it is
told to import, nothing else of the exporting process (it never unpickles a model object).

It imports TensorFlow and those modules as soon as it starts (while the exporting process
builds and writes the export), then answers one ``Request`` per line on stdin with one ``Reply``
line on stdout, loading the SavedModel afresh from disk for every request (``run``): each graph a
case needs (``serve``, and ``train``/``eval`` for the signatures in ``Request.graph``), each case
run, each serve case timed (``Request.latency``), then the warmup file replayed through the TF1
session loader (TF Serving's load path). It ends at EOF on stdin, and with the exporting process
(``--parent``: Linux ``PR_SET_PDEATHSIG``; elsewhere it outlives a killed parent by one request).

    python -m exportkit.verification.worker --parent PID [--import MODULE ...]
"""

import argparse
import functools
import gc
import importlib
import os
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from exportkit.verification.protocol import Latency, Reply, Request, decode, encode


class WorkerError(Exception):
    """The export cannot be run as asked (a device this machine lacks, a warmup record that does
    not run): the reply's one-line reason."""


class Doing:
    """What ``run`` is doing now, for the reply when it fails (``Reply.where``)."""

    def __init__(self) -> None:
        self.now = ""  # before the first step: resolving the device


def run(request: Request, doing: Doing) -> Reply:
    """Run every case of ``request`` on the export, write the outputs, return what was measured."""
    for module in request.imports:
        doing.now = f"importing {module}"
        importlib.import_module(module)
    import tensorflow as tf

    gpus = [short_name(d.name) for d in tf.config.list_logical_devices("GPU")]
    device = resolve_device(request.device, gpus, [short_name(d.name) for d in tf.config.list_logical_devices()])
    loaded: Dict[str, Any] = {}  # tag -> the loaded SavedModel
    load_s: Dict[str, float] = {}
    latency: Dict[str, Dict[str, Dict[str, Any]]] = {}
    with np.load(request.inputs) as data:
        cases = decode(data)
    results, firsts = {}, {}
    feed: Optional[Dict[str, Any]]  # None once the last case ran (below)
    with tf.device(device):
        for (key, label), arrays in cases.items():
            tag = request.graph.get(key, "serve")
            if tag not in loaded:
                doing.now = f"loading the {tag} graph"
                start = time.perf_counter()
                loaded[tag] = load_graph(request.saved_model, tag)
                load_s[tag] = time.perf_counter() - start
            doing.now = f"running {key} at batch {label}"
            function = loaded[tag].signatures[key]
            feed = {n: tf.constant(a) for n, a in arrays.items()}
            start = time.perf_counter()
            results[(key, label)] = {name: value.numpy() for name, value in function(**feed).items()}
            firsts[(key, label)] = time.perf_counter() - start
        # Timed after every case ran, in the request's order: a stateful model's timed calls move
        # its state on (and a train step would change the weights it times: serve cases only)
        for (key, label), arrays in cases.items():
            if request.graph.get(key, "serve") == "serve" and request.latency:
                doing.now = f"timing {key} at batch {label}"
                function = loaded["serve"].signatures[key]
                feed = {n: tf.constant(a) for n, a in arrays.items()}
                first = firsts[(key, label)]
                latency.setdefault(key, {})[label] = measure_latency(
                    functools.partial(fetch, function, feed), feed, first, request.latency
                )
    # The TF2-loaded graphs go before the warmup replay's TF1 session loads the weights again: held
    # together they were two copies of the weights at this process's peak (2.4x a 2.25 GiB export's).
    function = feed = None
    loaded.clear()
    gc.collect()
    reply = Reply(ok=True, device=device, gpus=gpus, load_s=load_s, latency=latency)
    doing.now = "replaying the warmup records"
    replay_warmup(request.saved_model, reply)
    serve_cases = {case: arrays for case, arrays in cases.items() if request.graph.get(case[0], "serve") == "serve"}
    for spec in request.formats:
        reply.formats[spec["name"]] = run_format(spec, serve_cases, results, request.latency)
    outputs: Dict[str, Any] = encode(results)  # Any: mypy would check them against savez's allow_pickle: bool
    np.savez(request.outputs, **outputs)
    reply.peak_rss_kib = peak_rss_kib()
    return reply


def run_format(spec: Dict[str, Any], cases, results, settings: Optional[Latency]) -> Dict[str, Any]:
    """One deployment format's artifact loaded with its runtime and run on the serve cases (its
    outputs added to ``results`` under ``format_key``); what it measured, or its error in one line."""
    from exportkit.imports import import_object
    from exportkit.verification.protocol import format_key

    name = spec["name"]
    doing = f"loading formats.{name}"
    try:
        fmt = import_object(spec["target"], f"formats.{name}._target_")(**spec["options"])
        start = time.perf_counter()
        runner = fmt.runner(Path(spec["path"]))
        record: Dict[str, Any] = {"load_s": time.perf_counter() - start, "latency": {}}
        for (key, label), arrays in cases.items():
            doing = f"running formats.{name} {key} at batch {label}"
            start = time.perf_counter()
            results[(format_key(name, key), label)] = runner(key, dict(arrays))
            first = time.perf_counter() - start
            if settings:
                record["latency"].setdefault(key, {})[label] = measure_latency(
                    functools.partial(runner, key, dict(arrays)), arrays, first, settings
                )
        return record
    except Exception as error:  # noqa: BLE001 - the format's runtime failing, told to the exporting process
        traceback.print_exc()  # to stderr: the log file the exporting process writes on failure
        return {"error": cause(error), "where": doing}


def cause(error: BaseException) -> str:
    """One line for an exception raised while loading or running the export: an op no library
    registered is named, with the package known to provide it; else the exception's type and
    its message's first line that says something (TensorFlow's start with blank lines or a
    ``Graph execution error:`` header)."""
    text = str(error)
    op = UNREGISTERED_OP.search(text)
    if op:
        name = op.group(1)
        package = next((p for prefix, p in OP_PACKAGES.items() if name.startswith(prefix)), None)
        where = f" (it is provided by {package})" if package else ""
        return (
            f"op {name} is not registered in this process{where}: import the library that registers it "
            f"with verify.imports=[{package or 'PACKAGE'}]"
        )
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().endswith(":")]
    return f"{type(error).__name__}: {lines[0] if lines else text.strip()}"[:500]


UNREGISTERED_OP = re.compile(r"Op type not registered '([^']+)'")
# op name prefix -> the package whose import registers it, for the message when none did
OP_PACKAGES = {
    "RegexSplit": "tensorflow_text",
    "Sentencepiece": "tensorflow_text",
    "Wordpiece": "tensorflow_text",
    "FastWordpiece": "tensorflow_text",
    "FastBertNormalize": "tensorflow_text",
    "NormalizeUTF8": "tensorflow_text",
    "CaseFoldUTF8": "tensorflow_text",
    "SplitMergeTokenize": "tensorflow_text",
    "UnicodeScriptTokenize": "tensorflow_text",
    "WhitespaceTokenize": "tensorflow_text",
    "TFText": "tensorflow_text",
    "Addons": "tensorflow_addons",
    "IO>": "tensorflow_io",
    "SimpleMLInferenceOp": "tensorflow_decision_forests",
}


def short_name(name: str) -> str:
    """``/device:GPU:0`` (or ``/job:localhost/replica:0/task:0/device:GPU:0``) -> ``/GPU:0``."""
    kind, index = name.rsplit(":", 2)[-2:]
    return f"/{kind.rsplit('/', 1)[-1]}:{index}"


def resolve_device(asked: str, gpus: List[str], present: List[str]) -> str:
    """The device the cases run on: ``auto`` -> the first GPU, else ``/CPU:0``; a device this
    machine lacks is a ``WorkerError`` (``tf.device`` would fall back to the CPU without a word)."""
    import tensorflow as tf

    if asked == "auto":
        return gpus[0] if gpus else "/CPU:0"
    try:
        spec = tf.DeviceSpec.from_string(asked)
    except ValueError:
        spec = tf.DeviceSpec()
    wanted = f"/{spec.device_type}:{spec.device_index or 0}"
    if spec.device_type is None or wanted not in present:
        raise WorkerError(f"device {asked} is not present on this machine (TensorFlow sees {', '.join(present)})")
    return wanted


def fetch(function, feed) -> None:
    """One call of a loaded signature, ended when its outputs are on the host (a GPU's queue counted)."""
    for value in function(**feed).values():
        value.numpy()


def measure_latency(call, feed, first_s: float, settings: Latency) -> Dict[str, float]:
    """Warm calls of one signature at one case (``call()``, which returns when the outputs are on
    the host): up to ``settings.runs``, stopping once ``settings.budget_s`` is spent (one at least).
    Milliseconds: first call, warm median / p90 / p99."""
    times: List[float] = []
    spent = time.perf_counter()
    while len(times) < settings.runs and (not times or time.perf_counter() - spent < settings.budget_s):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    p50, p90, p99 = (float(v) * 1e3 for v in np.percentile(times, [50, 90, 99]))
    batch = next((int(np.shape(t)[0]) for t in feed.values() if len(np.shape(t))), 1)
    return {"batch": batch, "first_ms": first_s * 1e3, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "runs": len(times)}


def replay_warmup(saved_model: str, reply: Reply) -> None:
    """TF Serving's load path: the warmup records (if the export has them) through the TF1 session
    loader; a record that does not run is a ``WorkerError``, as it fails TF Serving's load."""
    from exportkit.artifact import warmup

    if not (Path(saved_model) / warmup.WARMUP).is_file():
        return
    start = time.perf_counter()
    try:
        reply.warmup_records = len(warmup.replay(Path(saved_model)))
    except warmup.WarmupError as error:
        raise WorkerError(f"{warmup.WARMUP}: {error}") from None
    reply.warmup_seconds = time.perf_counter() - start


def load_graph(saved_model: str, tag: str):
    """One graph of the export, by its tag, with TF2's loader (each graph gets its own variables,
    so a train step run here changes nothing the other graphs read): from ``graphs/<tag>/`` when
    the export keeps that graph in a SavedModel of its own, else from the export's root."""
    import tensorflow as tf

    nested = Path(saved_model) / "graphs" / tag
    own = any((nested / name).is_file() for name in ("saved_model.pb", "saved_model.pbtxt"))
    return tf.saved_model.load(str(nested if own else saved_model), tags=[tag])


def peak_rss_kib() -> int:
    """This process's own high-water RSS (``VmHWM``; ``ru_maxrss`` would also count the exporting
    process's pages it was forked from). Linux only: 0 elsewhere."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak_rss() -> None:
    """Make ``VmHWM`` this request's peak (from the resident size now: TensorFlow's own memory),
    not the highest of every request served before. Linux only."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when the exporting one dies (Linux ``PR_SET_PDEATHSIG``); if it died
    before this line ran, exit now."""
    import ctypes
    import signal

    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def serve(imports: List[str]) -> None:
    """Import TensorFlow and ``imports`` now, then answer each request line on stdin with one reply
    line, until EOF. The replies go to the original stdout; anything else the frameworks or a
    model print goes to stderr (kept by the exporting process), never into a reply."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    for module in imports:  # a module that fails is reported by the request that needs it
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
        doing = Doing()
        try:
            reply = run(Request.from_json(line), doing)
        except WorkerError as error:
            reply = Reply(ok=False, error=str(error), where=doing.now)
        except Exception as error:  # noqa: BLE001 - the export's failure, told to the exporting process
            reply = Reply(ok=False, error=cause(error), where=doing.now, detail=traceback.format_exc())
        served += 1
        reply.pid, reply.ready_at, reply.served = os.getpid(), ready_at, served
        sys.stderr.flush()
        replies.write(reply.to_json() + "\n")
        gc.collect()  # the request's SavedModels, before the next export's


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m exportkit.verification.worker")
    parser.add_argument("--parent", type=int, default=None, help="die with this process")
    parser.add_argument("--import", dest="imports", action="append", default=[])
    args = parser.parse_args(argv)
    if args.parent is not None:
        die_with_parent(args.parent)
    serve(args.imports)


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Nothing is left to do or to flush: end without the second the interpreter spends tearing
    # TensorFlow's modules down, which the exporting process would wait for in Verifier.close.
    os._exit(0)
