"""Ctrl-C and SIGTERM during a run: the first ends the run, any later one only hurries its finishing.

Python turns Ctrl-C into a KeyboardInterrupt wherever the main thread happens to be; one arriving while a run
saves its images would leave the report's writer thread behind and lose them. Inside `SignalGuard` the first
SIGINT or SIGTERM raises `Interrupted` (a KeyboardInterrupt: the engine ends the run as "interrupted", cause
"interrupt" or "signal"); once the run has ended, further signals raise nothing: they ask the observers to hurry
(the report skips what a rebuild can make again, never an image). Signals can only be handled in the main
thread: elsewhere (a WebUI's worker thread) the guard does nothing.

A step that must not be cut in two (a generation entering the record and its images being queued for the disk)
runs inside `deferred()`: a signal arriving during it takes effect when it is done.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Sequence

from .observer import Observer

log = logging.getLogger(__name__)
SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name))


_active: list[SignalGuard] = []  # the guard whose handlers are installed (main thread only)


@contextlib.contextmanager
def deferred():
    """Hold the first signal until the block is done, then raise it (when no exception left the block)."""
    guard = _active[-1] if _active else None
    if guard is None or guard.deferring:
        yield
        return
    guard.deferring = True
    try:
        yield
    finally:
        guard.deferring = False
    if guard.pending is not None:
        guard.fire(guard.pending)


class Interrupted(KeyboardInterrupt):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def cause(self) -> str:
        return "interrupt" if self.signum == signal.SIGINT else "signal"


class SignalGuard(Observer):
    """Installs the handlers while the `with` block runs (in the main thread); observes the run's end."""

    def __init__(self, observers: Sequence[Observer] = ()):
        self.observers = list(observers)  # asked to hurry
        self.ended = False
        self.deferring = False             # inside `deferred()`
        self.pending: int | None = None    # a signal held back by `deferred()`
        self._previous: dict[int, object] = {}

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in SIGNALS}
            _active.append(self)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self._previous:
            _active.remove(self)
        self._previous = {}

    def on_end(self, record) -> None:
        self.ended = True

    def fire(self, signum: int) -> None:
        self.ended, self.pending = True, None
        raise Interrupted(signum)

    def _handle(self, signum, frame) -> None:
        if not self.ended:
            if self.deferring:
                self.pending = self.pending or signum
                return
            self.fire(signum)
        log.warning("%s: the run has ended and is saving its images; the report's plots and GIFs are skipped "
                    "(python -m lib_pinning report rebuilds them)", signal.Signals(signum).name)
        for observer in self.observers:
            observer.hurry()
