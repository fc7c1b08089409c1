"""Run folders on disk: atomic writes (a reader sees the old file or the new one), numbered and prepared folders.

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
from .record import RUN_FILE


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


def prepare_run_dir(run_dir: str | Path) -> None:
    """Create the run folder; an earlier run in it (it has a run.json) is replaced, anything else refused."""
    run_dir = Path(run_dir)
    if run_dir.exists():
        if not run_dir.is_dir():
            raise InputError(f"output {str(run_dir)!r} exists and is not a folder")
        entries = list(run_dir.iterdir())
        if entries and not (run_dir / RUN_FILE).exists():
            raise InputError(f"output folder {str(run_dir)!r} is not empty and holds no earlier run: "
                             "choose another --out")
        for entry in entries:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
