"""Ctrl-C and SIGTERM during a run: the first ends the run, any later one only hurries its finishing.

Python turns Ctrl-C into a KeyboardInterrupt wherever the main thread happens to be; one arriving while a run
saves its images would leave the report's writer thread behind and lose them. Inside `SignalGuard` the first
SIGINT or SIGTERM raises `Interrupted` (a KeyboardInterrupt: the engine ends the run as "interrupted", cause
"interrupt" or "signal"); once the run has ended, further signals raise nothing: they ask the observers to hurry
(the report skips what a rebuild can make again, never an image). Signals can only be handled in the main
thread: elsewhere (a WebUI's worker thread) the guard does nothing.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence

from .observer import Observer

log = logging.getLogger(__name__)
SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name))


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
        self._previous: dict[int, object] = {}

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_end(self, record) -> None:
        self.ended = True

    def _handle(self, signum, frame) -> None:
        if not self.ended:
            self.ended = True
            raise Interrupted(signum)
        log.warning("%s: the run has ended and is saving its images; the report's plots and GIFs are skipped "
                    "(python -m lib_pinning report rebuilds them)", signal.Signals(signum).name)
        for observer in self.observers:
            observer.hurry()
