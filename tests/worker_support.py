"""Embedded-model workers (`python -m lib_pinning serve`) as real processes on free ports, for the worker tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from lib_pinning.workers.api import wait_until_up

ROOT = Path(__file__).resolve().parent.parent
# One small job, rendered in-process and by workers alike.
PROMPT, NEGATIVE = "a red circle, blue sky", "dark"
RENDER = {"seed": 3, "batch": 2, "steps": 4, "cfg_scale": 3.0}
EMBEDDED = {**RENDER, "size": 16, "schedule": "Karras"}
OVER_HTTP = {**RENDER, "width": 16, "height": 16, "scheduler": "Karras", "retries": 1, "timeout": 30.0}
SEARCH = {"generations": 3, "first_look": 0, "cma_seed": 5}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Starting a worker means importing torch and k-diffusion (8 s on 2 cores): the tests' workers are forked, each a
# process of its own running `python -m lib_pinning serve`'s code, from one process that imported them once.
ZYGOTE = """
import os, signal, sys
import fastapi, uvicorn, lib_pinning.serve  # the slow imports, once
from lib_pinning.cli import main
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # killed workers are reaped at once
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        null = os.open(os.devnull, os.O_RDWR)
        for stream in (0, 1):
            os.dup2(null, stream)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os._exit(main(["serve", *line.split()]))
    print(pid, flush=True)
"""


class Zygote:
    def __init__(self):
        self.process = subprocess.Popen([sys.executable, "-c", ZYGOTE], cwd=ROOT, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True,
                                        env={**os.environ, "PYTHONWARNINGS": "ignore"})

    def fork(self, *args: str) -> int:
        self.process.stdin.write(" ".join(args) + "\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(30)


class Server:
    def __init__(self, zygote: Zygote, *flags: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.pid = zygote.fork("--port", str(self.port), *flags)

    def wait(self) -> Server:
        try:
            wait_until_up(self.url, 120)
        except Exception:
            self.kill()
            raise
        return self

    def kill(self) -> None:
        """As a crash or a pulled cable would: no goodbye."""
        try:
            os.kill(self.pid, signal.SIGKILL)
            while True:
                os.kill(self.pid, 0)
                time.sleep(0.01)
        except ProcessLookupError:
            pass


@contextmanager
def servers(zygote: Zygote, count: int, *flags: str):
    started = [Server(zygote, *flags) for _ in range(count)]
    try:
        yield [server.wait() for server in started]
    finally:
        for server in started:
            server.kill()


@contextmanager
def threaded_server(options):
    """A worker served from this process (uvicorn in a thread): real HTTP without a second start-up."""
    import threading

    import uvicorn

    from lib_pinning.serve import make_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(make_app(options), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, 30)  # a 401 answers too: the server is up
        yield url
    finally:
        server.should_exit = True
        thread.join(10)


def timing_free_search(record) -> dict:
    """What two equal runs share, whoever rendered them: baseline, every individual, best, status."""
    from report_support import without_timings

    data = without_timings(record)
    return {key: data[key] for key in ("baseline", "generations", "best", "status", "prompt", "negative_prompt",
                                       "options")}
