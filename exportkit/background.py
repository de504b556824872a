"""Work a stage hands to a thread so that the next stages run beside it: the checkpoint's
writing (``write_checkpoint``) goes on while the graphs are traced and saved.

A stage starts it with ``exportkit.background.start(ctx, fn)`` (one task per stage) and returns.
The runner (``exportkit.pipeline``) waits for it, through ``finish(ctx)``, before any stage that has
not said it can run beside it (``Stage.beside_background``), before the manifest and the publish,
and before a failed export's staging directory is removed: nothing writes into an export once it
is published or discarded. A stage that runs beside it calls ``finish(ctx)`` itself before it
reads what the work writes (``write_graphs``, before the fingerprint). The stage's record keeps its
place in pipeline order and is completed when the work is done: its seconds run from the stage's
start to the thread's end (overlapping the stages that ran beside it), and a failure on the thread
fails that stage, as it would have in series.
"""

import threading
import time
from typing import Callable, Optional


class Task:
    """``fn(stop)`` on a thread of its own, started by the stage ``stage``; ``stop`` (an Event)
    asks ``fn`` to end early (it checks ``stop.is_set()`` between blocks) when the export fails
    meanwhile."""

    def __init__(
        self, stage: str, fn: Callable[[threading.Event], None], stage_started: float, required: bool = True
    ) -> None:
        self.stage, self.required, self.stage_started = stage, required, stage_started
        self.stop = threading.Event()
        self.error: Optional[BaseException] = None
        self.ended: Optional[float] = None
        self._fn = fn
        self.record = None  # its stage's StageRecord, which the runner adds when the stage returns
        self._thread = threading.Thread(target=self._run, name=f"exportkit-{stage}")
        self._thread.start()

    def _run(self) -> None:
        try:
            self._fn(self.stop)
        except BaseException as e:  # noqa: BLE001 - handed to the thread that waits
            self.error = e
        finally:
            self.ended = time.perf_counter()

    def wait(self) -> None:
        """Until the thread has ended, even through Ctrl-C (told once it has: what it writes must
        not outlive the staging directory's removal)."""
        interrupted = None
        while self._thread.is_alive():
            try:
                self._thread.join()
            except KeyboardInterrupt as e:
                self.stop.set()
                interrupted = e
        if interrupted is not None:
            raise interrupted

    @property
    def seconds(self) -> float:
        return (self.ended or time.perf_counter()) - self.stage_started


class Stopped(Exception):
    """A background task ended early because the export failed meanwhile."""


def start(ctx, fn: Callable[[threading.Event], None]) -> None:
    """Run ``fn(stop)`` beside the next stages, as part of the stage running now."""
    name, started, required = ctx.stage_running
    if any(task.stage == name for task in ctx.background):
        raise RuntimeError(f"stage {name} started a second background task; one per stage")
    ctx.background.append(Task(name, fn, started, required))


def finish(ctx, stop: bool = False) -> None:
    """Wait for every background task (``stop``: asking each to end early, the export having
    failed); complete and report its stage's record; raise the first failure of a required stage
    (unless stopping: the export's own error is the one told)."""
    from exportkit.errors import first_line

    failure = None
    while ctx.background:
        task = ctx.background[0]
        if stop:
            task.stop.set()
        task.wait()
        ctx.background.pop(0)  # only once it has ended: interrupted here, the export's failure path waits again
        record = task.record  # in the records since its stage ended, in pipeline order
        if record is None:  # its stage did not end ok: its own failure or skip is recorded and told
            if task.error is not None and not isinstance(task.error, Stopped) and task.required and failure is None:
                failure = task.error
            continue
        record.seconds = task.seconds
        if isinstance(task.error, Stopped):
            record.status, record.detail = "failed", "stopped: the export failed meanwhile"
        elif task.error is not None:
            record.status, record.detail = "failed", first_line(task.error)
            if task.required and failure is None:
                failure = task.error
        else:
            record.detail = "in the background"
        ctx.reporter.stage_ended(record)
    if failure is not None and not stop:
        ctx.background_failures.append(failure)
        raise failure
