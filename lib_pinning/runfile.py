"""Run folders on disk: atomic writes (a reader sees the old file or the new one), numbered and prepared folders,
and the lock a run holds on its folder while it writes it.

What goes into run.json is lib_pinning.record.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np

from .errors import InputError
from .record import (BASELINE_FOLDER, BEST_FOLDER, GENERATION_FOLDER, INDEX_FILE, RUN_FILE, RUN_PLOTS, TARGETS_FOLDER,
                     RecordError, read_record)

LOCK_FILE = ".lock"


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write through a temporary file in the same folder, then rename: readers see the old file or the new one.

    The temporary name is per process and thread (not mkstemp, whose files are private to the owner: run
    folders are for sharing, e.g. served by the WebUI).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, data) -> None:
    write_bytes_atomic(path, json.dumps(data, indent=1, allow_nan=False, default=_jsonable).encode("utf-8"))


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) or type(value).__name__ == "Tensor":
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def new_run_dir(base: str | Path) -> Path:
    """A new numbered run folder `base/00000001`, `…2`: created atomically, so runs at the same time never share one."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    number = max((int(entry.name) for entry in base.iterdir() if entry.name.isdigit()), default=0) + 1
    while True:
        path = base / f"{number:08d}"
        try:
            path.mkdir()
            return path
        except FileExistsError:  # another run took it between the listing and now
            number += 1


class RunLock:
    """An exclusive lock on a run folder while a run writes it; the system drops it when the process ends, however
    it ends, so a crashed run never leaves its folder locked."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._file = None

    def acquire(self) -> RunLock:
        """Take the lock, or raise an InputError: another run (in any process) is writing this folder."""
        self._file = open(self.path, "a+b")
        try:
            _lock(self._file)
        except OSError:
            self._file.close()
            self._file = None
            raise InputError(f"the run folder {str(self.path.parent)!r} is being written by another run (it holds "
                             f"{LOCK_FILE}): wait for that run to end, or choose another folder") from None
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the lock
            self._file = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _lock(file) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt
        file.seek(0)
        msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _is_run_entry(path: Path) -> bool:
    """Whether a top-level entry of a run folder is one a run writes (or a temporary file of an atomic write)."""
    name = path.name
    if path.is_dir():
        return name in (BASELINE_FOLDER, BEST_FOLDER, TARGETS_FOLDER) or bool(GENERATION_FOLDER.fullmatch(name))
    return name in (RUN_FILE, INDEX_FILE, LOCK_FILE, *RUN_PLOTS) or (name.startswith(".") and name.endswith(".tmp"))


def earlier_run_problem(run_dir: Path) -> str | None:
    """None when the folder holds exactly one earlier run of this project, else what it holds instead."""
    try:
        read_record(run_dir)
    except RecordError as error:
        return f"holds no earlier run of sd-prompt-pinning ({error})"
    others = sorted(entry.name for entry in run_dir.iterdir() if not _is_run_entry(entry))
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        return f"holds an earlier run and other files too ({shown})"
    return None


def prepare_run_dir(run_dir: str | Path) -> RunLock:
    """Create the run folder and lock it; an earlier run in it, alone, is replaced; anything else is refused.

    Nothing is deleted before every check has passed, and nothing but an earlier run's own files ever is.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"output {str(run_dir)!r} exists and is not a folder")
    created_lock = not (run_dir / LOCK_FILE).exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir).acquire()
    entries = [entry for entry in run_dir.iterdir() if entry.name != LOCK_FILE]
    if entries:
        problem = earlier_run_problem(run_dir)
        if problem is not None:
            lock.release()
            if created_lock:
                (run_dir / LOCK_FILE).unlink(missing_ok=True)
            raise InputError(f"output folder {str(run_dir)!r} {problem}: choose another --out")
        for entry in entries:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    return lock
