"""The extension's log lines in the WebUI's console, each marked "Prompt pinning:".

A1111 configures Python logging only when asked (--loglevel or SD_WEBUI_LOG_LEVEL): without a handler of its own,
the `lib_pinning` logger's notices and the CMA-ES logbook would be lost, so it gets one, once per process.
"""

from __future__ import annotations

import logging
import sys

LOGGER = logging.getLogger("lib_pinning")
_MARK = "prompt_pinning_console"


def attach() -> None:
    if any(getattr(handler, _MARK, False) for handler in LOGGER.handlers):
        return  # "Reload UI" imports the script again
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("Prompt pinning: %(message)s"))
    setattr(handler, _MARK, True)
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False
