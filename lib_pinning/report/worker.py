"""A daemon thread that writes report files while the search goes on.

Jobs run in the order they were queued. A job that fails (a full disk, say) is logged once and counted, the
jobs after it still run, and `failure()` tells the owner at the end what went wrong. A job is either pixels
(images that exist nowhere else) or derived (files a rebuild makes again from run.json and the pixels): after
`hurry()`, queued derived jobs are skipped and counted, pixels are always written.

The queue is bounded twice: in jobs, and in the bytes of the pixel arrays its jobs hold. When the writer falls
behind (a few-step sampler at 1024², say, renders faster than one thread encodes its PNGs and GIFs), the search
waits for it instead of piling gigabytes of images up in memory.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)
MAX_PENDING_JOBS = 256  # about one per individual
MAX_PENDING_BYTES = 512 * 2**20  # 80 batches of eight 512² images waiting, or 20 of eight 1024² ones


class BackgroundWriter:
    def __init__(self, max_jobs: int = MAX_PENDING_JOBS, max_bytes: int = MAX_PENDING_BYTES):
        self.max_jobs = max_jobs
        self.max_bytes = max_bytes
        self._pending: collections.deque = collections.deque()  # a job leaves once it has run
        self._pending_bytes = 0
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self.failures: list[str] = []
        self.hurried = False
        self.skipped = 0

    def hurry(self) -> None:
        """From now on skip derived jobs: only pixels are still written."""
        self.hurried = True

    def submit(self, what: str, job: Callable, *args, derived: bool = False) -> None:
        """Queue `job(*args)`; `what` names the files it writes, for the error message; `derived`: a rebuild can
        make them again (see `hurry`).

        Waits while the queue is full. A job bigger than the whole byte budget waits for an idle writer and then
        goes alone, so it is never refused.
        """
        size = sum(arg.nbytes for arg in args if isinstance(arg, np.ndarray))
        with self._changed:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="pinning-report", daemon=True)
                self._thread.start()
            self._changed.wait_for(lambda: not self._pending or (
                len(self._pending) < self.max_jobs and self._pending_bytes + size <= self.max_bytes))
            self._enqueue((what, job, args, derived), size)

    def finish(self) -> None:
        """Wait until every queued job has run, then stop the thread."""
        if self._thread is not None:
            with self._changed:
                self._enqueue(None, 0)
            self._thread.join()
            self._thread = None

    def run(self, what: str, job: Callable, *args) -> None:
        """Run one job here and now, with the same error handling as a queued one."""
        try:
            job(*args)
        except Exception as error:  # counted and reported at the end: the run goes on
            self._failed(what, error)

    def failure(self) -> str | None:
        if not self.failures:
            return None
        return f"{len(self.failures)} report job(s) failed, the first: {self.failures[0]}"

    def _enqueue(self, item, size: int) -> None:
        self._pending.append((item, size))
        self._pending_bytes += size
        self._changed.notify_all()

    def _work(self) -> None:
        _defer_to_the_search()
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending)
                item, size = self._pending[0]
                if item is None:  # finish()
                    self._pending.popleft()
                    return
            what, job, args, derived = item
            try:
                if derived and self.hurried:
                    self.skipped += 1
                else:
                    self.run(what, job, *args)
            except BaseException as error:  # e.g. SystemExit: the queue must not lose its only writer
                self._failed(what, error)
            finally:
                with self._changed:
                    self._pending.popleft()
                    self._pending_bytes -= size
                    self._changed.notify_all()
            del item, job, args  # the job's pixels go now, not when the next job comes

    def _failed(self, what: str, error: Exception) -> None:
        message = f"could not write {what}: {type(error).__name__}: {error}"
        if not self.failures:
            log.error("report: %s (the search goes on; further report errors are only counted)", message)
        self.failures.append(message)


def _defer_to_the_search() -> None:
    """Lower this thread's CPU priority, so report writing uses the time rendering leaves over.

    Only on Linux, where each thread has its own nice value; elsewhere the call would apply to a process.
    """
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except OSError:
            pass
