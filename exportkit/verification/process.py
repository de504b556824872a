"""The verification process, seen from the exporting side: a fresh Python process
(``exportkit.verification.worker``) that starts when the pipeline starts, imports TensorFlow and the custom objects' modules
while the exporting process builds, traces and writes, and then verifies the staged export from
disk. It gets nothing of the exporting process but the export's path and the cases' ``.npz``
files (it never unpickles a model object), and loads the SavedModel afresh for every request.

One ``Verifier`` serves every export of a process that makes several (a sweep: ``exportkit.cli``),
each export loaded from disk anew. A worker that dies is replaced by a fresh one and the request
sent again, once; one that does not answer within ``verify.timeout_s`` is killed, the export
fails, and the next request gets a fresh process. The worker dies with the exporting process
(``--parent``: Linux ``PR_SET_PDEATHSIG``). ``verify.early_start=false`` turns the early start
off: each verify stage then starts its own worker when it needs it.

>>> verifier = Verifier(["my_layers"]).start()   # at the pipeline's start
>>> reply = verifier.run(Request(saved_model=..., inputs=..., outputs=...), timeout=600)
>>> verifier.close()

In one Python process that makes many exports (a notebook, a loop, a test session),
``shared_verifier()`` lets every export made inside its block verify with one such process:

>>> with exportkit.shared_verifier():
...     for model, path in models:
...         exportkit.export_saved_model(model, path)
"""

import contextlib
import contextvars
import os
import re
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Dict, Iterable, Iterator, List, NamedTuple, Optional

import numpy as np

from exportkit.errors import VerificationError
from exportkit.verification.protocol import Case, Latency, Reply, Request, decode, encode

# TensorFlow's and absl's C++ log lines (I0000 00:00:... port.cc:153] ...): not the reason a worker failed
TF_LOG_LINE = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:[\d.]+ +\d+ \S+:\d+\]|WARNING: All log messages before absl)")
TAIL_LINES = 15
RELOAD_FAILED = "the export could not be reloaded and run in a fresh process"


# The verifier of the innermost ``shared_verifier()`` block (a context variable, so each thread or
# task sees its own block only); ``exportkit.pipeline.Export`` takes it when not handed one.
_SHARED: contextvars.ContextVar[Optional["Verifier"]] = contextvars.ContextVar(
    "exportkit_shared_verifier", default=None
)


def modules_of(custom_object_paths: Iterable[str]) -> List[str]:
    """The modules to import for ``custom_objects``' dotted paths (``pkg.mod.Scale`` -> ``pkg.mod``)."""
    return sorted({p.rpartition(".")[0] for p in custom_object_paths if "." in p})


class _Died(Exception):
    """The worker ended (or its pipe broke) before answering; ``args[0]`` is its stderr's tail."""


class Verifier:
    """At most one live verification process at a time, started early, replaced when it dies.

    ``start`` is idempotent: it starts a worker when none is alive (importing ``imports``; more
    modules may be named per request). ``run`` sends one request and returns the worker's reply;
    ``close`` ends the worker (EOF on its stdin, then a kill if it lingers) and reaps it.
    """

    def __init__(self, imports: Iterable[str] = ()) -> None:
        self.imports = sorted(set(imports))
        self.process: Optional[subprocess.Popen] = None
        self.started_at: Optional[float] = None  # wall time the live worker was started
        self._stderr: Optional[IO[bytes]] = None  # an unlinked temporary file: the worker's stderr, for failure reports
        self._buffer = b""

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, imports: Iterable[str] = ()) -> "Verifier":
        """Start a worker unless one is alive; returns ``self``."""
        self.imports = sorted(set(self.imports) | set(imports))
        if self.alive():
            return self
        self._discard()
        command = [sys.executable, "-m", "exportkit.verification.worker", "--parent", str(os.getpid())]
        command += [a for m in self.imports for a in ("--import", m)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self._stderr = tempfile.TemporaryFile()
        self._buffer = b""
        self.process = subprocess.Popen(
            command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0
        )
        self.started_at = time.time()
        return self

    def run(self, request: Request, timeout: float, log_dir: Optional[Path] = None) -> Reply:
        """The worker's reply to ``request``. A worker that dies is replaced and asked again,
        once; a second death, or a reply with an error, is a one-line ``VerificationError`` (what
        the worker was doing and why it failed) naming a log file in ``log_dir`` (the system's
        temporary directory by default) that holds everything the worker wrote and its traceback;
        no reply within ``timeout`` seconds kills the worker and is a one-line
        ``VerificationError``."""
        died = ""
        for _attempt in range(2):
            self.start(request.imports)
            offset = self._stderr_size()
            try:
                reply = self._ask(request, time.monotonic() + timeout)
            except _Died as error:
                died = error.args[0]
                self._discard()
                continue
            except TimeoutError:
                pid = self.pid
                self._discard()
                raise VerificationError(
                    f"the verify worker (pid {pid}) did not answer within verify.timeout_s={timeout:g} seconds "
                    f"and was killed; nothing was written. If the model is that slow to load and run, raise "
                    f"verify.timeout_s"
                ) from None
            if not reply.ok:
                log = write_log(log_dir, self._stderr_text(offset) + "\n" + (reply.detail or reply.error))
                where = f"{reply.where}: " if reply.where else ""
                raise VerificationError(f"{RELOAD_FAILED}: {where}{reply.error} (its output: {log})")
            return reply
        log = write_log(log_dir, died)
        raise VerificationError(
            f"{RELOAD_FAILED}: the verification process died twice, {died.splitlines()[-1]} (its output: {log})"
        )

    def close(self) -> None:
        """End the worker (it exits at EOF on stdin; killed if it has not within 5 seconds)."""
        if self.process is not None and self.process.poll() is None:
            assert self.process.stdin is not None  # started with stdin=PIPE
            try:
                self.process.stdin.close()
                self.process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._discard()

    def __enter__(self) -> "Verifier":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _ask(self, request: Request, deadline: float) -> Reply:
        process = self.process
        assert process is not None and process.stdin is not None and process.stdout is not None  # run started it
        try:
            process.stdin.write((request.to_json() + "\n").encode())
        except (BrokenPipeError, OSError):
            raise _Died(self._death_report()) from None
        fd = process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise _Died(self._death_report())
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return Reply.from_json(line.decode())

    def _death_report(self) -> str:
        assert self.process is not None  # asked of the live worker (_ask)
        try:
            code: Optional[int] = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        return f"{self._stderr_text(0)}\nthe last ended with exit status {code}"

    def _stderr_size(self) -> int:
        return os.fstat(self._stderr.fileno()).st_size if self._stderr is not None else 0

    def _stderr_text(self, offset: int) -> str:
        """What the worker wrote to stderr since ``offset`` (read with ``pread``: the worker shares
        the file's position, which must not move under it)."""
        if self._stderr is None:
            return ""
        size = self._stderr_size()
        start = max(offset, size - 65536)
        return os.pread(self._stderr.fileno(), size - start, start).decode(errors="replace")

    def _discard(self) -> None:
        """Kill and reap the worker, if any; drop its pipes and stderr file."""
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.kill()
            process.wait()
            for pipe in (process.stdin, process.stdout):
                assert pipe is not None  # started with stdin and stdout pipes
                try:
                    pipe.close()
                except OSError:
                    pass
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        self._buffer = b""


@contextlib.contextmanager
def shared_verifier(imports: Iterable[str] = ()) -> Iterator["Verifier"]:
    """Every export made inside the block verifies with one verification process (started by the
    first export, replaced if it dies, ended when the block ends), each export still loaded
    afresh from disk: the TensorFlow start-up of a fresh process is paid once, not per export.
    ``imports``: modules the process imports at start (the custom objects' modules are added per
    export anyway)."""
    verifier = Verifier(imports)
    try:
        with using(verifier):
            yield verifier
    finally:
        verifier.close()


@contextlib.contextmanager
def using(verifier: Optional["Verifier"]) -> Iterator[Optional["Verifier"]]:
    """Exports made inside the block verify with ``verifier`` (not ended by them); ``None``: each
    export starts and ends its own, even inside an outer ``shared_verifier()`` block."""
    token = _SHARED.set(verifier)
    try:
        yield verifier
    finally:
        _SHARED.reset(token)


def current_shared() -> Optional["Verifier"]:
    """The verifier of the ``shared_verifier()`` block this code runs in, if any."""
    return _SHARED.get()


def write_log(log_dir: Optional[Path], text: str) -> Path:
    """``text`` (a failed worker's output) in a new file ``exportkit-verify-*.log`` in ``log_dir``
    (else the system's temporary directory, also when ``log_dir`` cannot be written)."""
    for directory in ([log_dir] if log_dir is not None else []) + [Path(tempfile.gettempdir())]:
        try:
            fd, name = tempfile.mkstemp(prefix="exportkit-verify-", suffix=".log", dir=directory)
        except OSError:
            continue
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return Path(name)
    return Path(os.devnull)


def tail(stderr: str, error: str = "") -> str:
    """The last lines of what a worker said, TensorFlow's own log lines left out."""
    lines = [
        line for line in (stderr.strip() + "\n" + error.strip()).strip().splitlines() if not TF_LOG_LINE.match(line)
    ]
    return "\n".join(lines[-TAIL_LINES:])


class Ran(NamedTuple):
    """What ``run_cases`` gives back: the outputs per case, the worker's reply, and when the
    process that answered was started (wall time)."""

    outputs: Dict[Case, Dict[str, np.ndarray]]
    reply: Reply
    started_at: Optional[float]


def run_cases(
    saved_model: Path,
    inputs: Dict[Case, Dict[str, np.ndarray]],
    graph_of: Dict[str, str],
    device: str,
    imports: List[str],
    temp_dir: Path,
    *,
    latency: Optional[Latency] = None,
    verifier: Optional[Verifier] = None,
    timeout: float = 600.0,
    log_dir: Optional[Path] = None,
    formats: Optional[List[Dict[str, Any]]] = None,
) -> Ran:
    """Run ``inputs`` on the export in the verification process: the outputs per case, and its
    reply (the device it ran on, load times, latency, warmup replay, peak memory).

    ``verifier``: the process to ask (started early, or shared); without one, a worker is started
    here and ended after. The request's files live in ``temp_dir`` (made and removed by the caller).
    """
    own = verifier is None
    in_path, out_path = temp_dir / "inputs.npz", temp_dir / "outputs.npz"
    arrays: Dict[str, Any] = encode(inputs)  # Any: mypy would check them against savez's allow_pickle: bool
    np.savez(in_path, **arrays)
    verifier = verifier or Verifier(imports)
    request = Request(
        saved_model=str(saved_model),
        inputs=str(in_path),
        outputs=str(out_path),
        device=device,
        imports=list(imports),
        graph={key: tag for key, tag in graph_of.items() if tag != "serve"},
        latency=latency,
        formats=list(formats or []),
    )
    try:
        reply = verifier.run(request, timeout, log_dir)
        with np.load(out_path) as data:
            return Ran(decode(data), reply, verifier.started_at)
    finally:
        if own:
            verifier.close()
