"""run.json: the record of a pinning run, rewritten atomically after every generation.

Layout (the contract other code relies on): version, options, genome {words, negative_words, frozen},
generations [{index, evaluations, best_loss, mean_loss, sigma, seconds, individuals [{id, weights, loss, prompt,
negative_prompt, seconds_render, seconds_loss}]}], baseline {loss, prompt, negative_prompt}, best {loss, prompt,
negative_prompt, weights, generation}, status running|done|interrupted|failed (+ message when not done).
A generation's `seconds` (its wall time, bookkeeping included) is written from the save after it on.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import torch

RUN_FILE = "run.json"
FORMAT_VERSION = 1


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
    if isinstance(value, (np.ndarray, torch.Tensor)):
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


def read_run(run_dir: str | Path) -> dict:
    with open(Path(run_dir) / RUN_FILE, encoding="utf-8") as stream:
        return json.load(stream)
