"""Where the report's files live in a run folder, and how each one is written.

Every file is encoded in memory first and then moved into place, so a crash or a full disk never leaves a half
file that a later `python -m lib_pinning report` would choke on.
"""

from __future__ import annotations

from pathlib import Path

from ..record import BASELINE_FOLDER, BEST_FOLDER, INDEX_FILE, RUN_PLOTS, TARGETS_FOLDER, individual_folder
from ..runfile import write_bytes_atomic as write_bytes  # noqa: F401  (the report's writers use these names)
from ..runfile import write_json_atomic as write_json  # noqa: F401

INDEX = INDEX_FILE
CMA_PLOT, HISTORY_PLOT, LOOSENESS_PLOT, FRONT_PLOT, WEIGHT_MAP_PLOT, TAGS_PLOT = RUN_PLOTS
GENERATION_PLOT = "generation_loss_plot.png"
STATS = "stats.json"
LOSS_PLOT = "loss_plot.png"
GIF = "summary.gif"
THUMBNAILS = "thumbnails.png"
TARGETS = TARGETS_FOLDER
BASELINE = BASELINE_FOLDER
BEST = BEST_FOLDER


def generation_dir(run_dir: Path, generation: int) -> Path:
    return (Path(run_dir) / individual_folder(generation, "x")).parent


def image_name(seed: int) -> str:
    return f"seed-{seed}.png"
