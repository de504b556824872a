"""Work a stage leaves running when it returns, finished before anything needs it.

``write_checkpoint`` hands TensorFlow's checkpoint write (its C++ save op, which releases the
GIL) to a thread and returns, so that ``write_graphs`` builds the graphs (Python) on the other
core meanwhile. The runner finishes that work before any other stage (``Stage.reads_files``),
before publishing, and before it cleans up after a failure or a signal; work that fails is its
stage's failure, recorded and raised as if the stage had failed when it returned. A stage that
starts nothing in the background, as every user stage, never sees any of this.

>>> ctx.run.background.start(lambda: checkpoint.write(prefix))  # in a stage  # doctest: +SKIP
"""

import threading
import time
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

from exportkit.errors import first_line


@dataclass
class _Work:
    future: Future
    ended: List[float] = field(default_factory=list)  # when the work ended (perf_counter), once it has


@dataclass
class _Unfinished:
    record: Any  # the stage's StageRecord, made final when its work ends
    required: bool
    started: float  # when the stage started (perf_counter): its record's seconds count from there
    work: List[_Work]

    def settle(self) -> Optional[BaseException]:
        """Wait for the work; close the record (its seconds up to the work's end, and its
        failure); return the error."""
        error = None
        for item in self.work:
            try:
                item.future.result()
            except Exception as e:  # noqa: BLE001 - the stage's failure (or cancelled), returned to be recorded
                error = error or e
        ended = [end for item in self.work for end in item.ended] or [time.perf_counter()]  # none: cancelled
        self.record.seconds = max(ended) - self.started
        if error is not None:
            self.record.status, self.record.detail = "failed", first_line(error)
        return error


class Background:
    """The work stages left running, one export's worth."""

    def __init__(self) -> None:
        self._new: List[_Work] = []  # started by the stage that runs now
        self._unfinished: List[_Unfinished] = []
        # a required stage's failure, raised again by every later finish(); the runner tells it
        # from the failure of the stage it interrupted by this identity
        self.failed: Optional[BaseException] = None

    def start(self, work: Callable[[], Any]) -> None:
        """Run ``work`` on a thread of its own; it continues after the calling stage returns.

        The work is listed before its thread starts, so that a signal arriving at any point of
        this call leaves nothing unknown to ``abandon()``: work not yet running is cancelled,
        work running is waited for."""
        item = _Work(Future())
        self._new.append(item)
        threading.Thread(target=_run, args=(item, work), name="exportkit-background").start()

    def left_by(self, record, required: bool, started: float) -> bool:
        """The runner, after a stage returned: hold its record open while the work it started
        runs on (True); False when it started none, or failed anyway (its work is waited for)."""
        if not self._new:
            return False
        if record.status != "ok":
            wait([item.future for item in self._new])  # a signal here leaves them listed, for abandon()
            self._new = []
            return False
        self._unfinished.append(_Unfinished(record, required, started, self._new))
        self._new = []
        return True

    def finish(self, reporter) -> None:
        """Wait for every stage's unfinished work and report each such stage as it ends; raise
        the first required stage's error (``failed``; again on a later call)."""
        while self._unfinished:
            item = self._unfinished[0]
            error = item.settle()  # what a signal interrupts stays listed, for abandon()
            self._unfinished.pop(0)
            reporter.stage_ended(item.record)
            if error is not None and item.required:
                self.failed = error
                self.abandon()
        if self.failed is not None:
            raise self.failed

    def abandon(self, notify: Callable[[str], None] = lambda line: None) -> None:
        """Wait, reporting nothing, for whatever still runs (the export failed or was stopped):
        nothing may write into the staging directory once it is being removed. A signal does not
        cut the wait short (it is raised once the wait is over); the stages' records are closed
        all the same, for the summary."""
        futures = [item.future for item in self._new] + [w.future for u in self._unfinished for w in u.work]
        if not all(f.done() for f in futures):
            stages = ", ".join(u.record.name for u in self._unfinished) or "the stage"
            notify(f"waiting for {stages} to end its writing before the staging directory is removed")
        for future in futures:
            future.cancel()  # only what has not started: its thread, if it starts, does nothing
        stopped: Optional[BaseException] = None
        while True:
            try:
                wait(futures)
                break
            except KeyboardInterrupt as signal:
                stopped = signal
        self._new = []
        while self._unfinished:
            self._unfinished.pop(0).settle()
        if stopped is not None:
            raise stopped


def _run(item: _Work, work: Callable[[], Any]) -> None:
    """The thread of one piece of work: its result or its error into its future, its end time
    noted first."""
    if not item.future.set_running_or_notify_cancel():
        return  # cancelled by abandon() before it began
    try:
        result = work()
    except BaseException as error:  # noqa: BLE001 - handed to whoever waits for the future
        item.ended.append(time.perf_counter())
        item.future.set_exception(error)
    else:
        item.ended.append(time.perf_counter())
        item.future.set_result(result)
