"""Where the report's files live in a run folder, and how each one is written.

Every file is encoded in memory first and then moved into place, so a crash or a full disk never leaves a half
file that a later `python -m lib_pinning report` would choke on.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

INDEX = "index.html"
CMA_PLOT = "cma_plot.png"
HISTORY_PLOT = "history.png"
LOOSENESS_PLOT = "looseness.png"
FRONT_PLOT = "front.png"
GENERATION_PLOT = "generation_loss_plot.png"
STATS = "stats.json"
LOSS_PLOT = "loss_plot.png"
GIF = "summary.gif"
THUMBNAILS = "thumbnails.png"
TARGETS = "targets"
BASELINE = "baseline"
BEST = "best"


def generation_dir(run_dir: Path, generation: int) -> Path:
    return Path(run_dir) / f"{generation:08d}"


def individual_dir(run_dir: Path, generation: int, individual_id: str) -> Path:
    return generation_dir(run_dir, generation) / individual_id


def image_name(seed: int) -> str:
    return f"seed-{seed}.png"


def write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Named per process and thread (not mkstemp, whose files are private to the owner: these are for sharing).
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_json(path: Path, data) -> None:
    write_bytes(path, json.dumps(data, indent=1, allow_nan=False).encode("utf-8"))
