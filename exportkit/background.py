"""Work a stage leaves running when it returns, finished before anything needs it.

``write_checkpoint`` hands TensorFlow's checkpoint write (its C++ save op, which releases the
GIL) to a thread and returns, so that ``write_graphs`` builds the graphs (Python) on the other
core meanwhile. The runner finishes that work before any stage that reads the export's files
(``Stage.reads_files``, True unless a stage says otherwise), before publishing, and before it
cleans up after a failure; a stage's work that fails is that stage's failure, recorded and
raised as if the stage had failed when it returned. A stage that starts nothing in the
background, as every user stage by default, never sees any of this.

>>> ctx.run.background.start(lambda: checkpoint.write(prefix))  # in a stage  # doctest: +SKIP
"""

import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

from exportkit.errors import first_line


class EarlierStageFailed(Exception):
    """Raised into the stage that was running when an earlier stage's background work failed:
    the runner records and raises ``error``, the earlier stage's own failure, instead."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class _Unfinished:
    record: Any  # the stage's StageRecord, made final when its work ends
    required: bool
    started: float  # when the stage started (perf_counter): its record's seconds count from there
    futures: List[Future]

    def settle(self) -> Optional[BaseException]:
        """Wait for the work; close the record (its seconds, and its failure); return the error."""
        error = None
        for future in self.futures:
            try:
                future.result()
            except Exception as e:  # noqa: BLE001 - the stage's failure, returned to be recorded
                error = error or e
        self.record.seconds = time.perf_counter() - self.started
        if error is not None:
            self.record.status, self.record.detail = "failed", first_line(error)
        return error


class Background:
    """The work stages left running, one export's worth."""

    def __init__(self) -> None:
        self._new: List[Future] = []  # started by the stage that runs now
        self._unfinished: List[_Unfinished] = []

    def start(self, work: Callable[[], Any]) -> None:
        """Run ``work`` on a thread of its own; it continues after the calling stage returns."""
        pool = ThreadPoolExecutor(1, thread_name_prefix="exportkit-background")
        self._new.append(pool.submit(work))
        pool.shutdown(wait=False)  # the thread ends with its work

    def left_by(self, record, required: bool, started: float) -> bool:
        """The runner, after a stage returned: hold its record open while the work it started
        runs on (True); False when it started none, or failed anyway (its work is waited for)."""
        futures, self._new = self._new, []
        if futures and record.status != "ok":
            wait(futures)
            return False
        if futures:
            self._unfinished.append(_Unfinished(record, required, started, futures))
        return bool(futures)

    def finish(self, reporter) -> None:
        """Wait for every stage's unfinished work and report each such stage as it ends; raise
        ``EarlierStageFailed`` with the first required stage's error."""
        while self._unfinished:
            item = self._unfinished.pop(0)
            error = item.settle()
            reporter.stage_ended(item.record)
            if error is not None and item.required:
                self.abandon()
                raise EarlierStageFailed(error) from error

    def abandon(self) -> None:
        """Wait, reporting nothing, for whatever still runs (the export failed or was stopped):
        nothing may write into the staging directory once it is being removed. The stages'
        records are closed all the same, for the summary."""
        wait(self._new)
        self._new = []
        while self._unfinished:
            self._unfinished.pop(0).settle()
