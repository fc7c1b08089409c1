"""A daemon thread that writes report files while the search goes on.

Jobs run in the order they were queued. A job that fails (a full disk, say) is logged once and counted, the
jobs after it still run, and `failure()` tells the owner at the end what went wrong.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)
MAX_PENDING = 256  # jobs, about one per individual: a writer this far behind makes the search wait, not memory fill


class BackgroundWriter:
    def __init__(self):
        self._jobs: queue.Queue = queue.Queue(maxsize=MAX_PENDING)
        self._thread: threading.Thread | None = None
        self.failures: list[str] = []

    def submit(self, what: str, job: Callable, *args) -> None:
        """Queue `job(*args)`; `what` names the files it writes, for the error message."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="pinning-report", daemon=True)
            self._thread.start()
        self._jobs.put((what, job, args))

    def finish(self) -> None:
        """Wait until every queued job has run, then stop the thread."""
        if self._thread is not None:
            self._jobs.put(None)
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

    def _work(self) -> None:
        _defer_to_the_search()
        while (item := self._jobs.get()) is not None:
            what, job, args = item
            self.run(what, job, *args)

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
