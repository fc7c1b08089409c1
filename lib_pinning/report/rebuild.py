"""`python -m lib_pinning report RUN_DIR`: every derived file again, from run.json and the saved images.

Works on a run that crashed or was interrupted too: individuals whose images were never saved still get
their stats and loss plot, and are listed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..runfile import RUN_FILE
from . import files
from .context import RunContext
from .figures import LossPlot
from .writers import (best_folder, read_images, write_batch_summary, write_best, write_generation, write_individual,
                      write_run)

# A folder name the engine gives an individual; anything else could point outside the run folder.
PLAIN_NAME = re.compile(r"[\w.-]+")
GENOME_KEYS = {"words", "negative_words", "base_weights"}
GENERATION_KEYS = {"index", "evaluations", "best_loss", "mean_loss", "sigma", "cma", "individuals"}
INDIVIDUAL_KEYS = {"id", "weights", "loss", "prompt", "negative_prompt"}


class ReportError(ValueError):
    """A run folder whose record cannot be read; the message is one line."""


def read_record(run_dir: Path) -> dict:
    path = Path(run_dir) / RUN_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path} does not exist: {str(run_dir)!r} is not a run folder") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReportError(f"{path} cannot be read: {error}") from None
    problem = record_problem(record)
    if problem:
        raise ReportError(f"{path} is not a complete run record: {problem}")
    return record


def record_problem(record) -> str | None:
    """What keeps `record` from being reported, or None."""
    if not isinstance(record, dict):
        return "it is not a JSON object"
    if not _has_keys(record, {"options", "genome", "generations"}) or not isinstance(record["generations"], list):
        return "it lacks the options, the genome or the list of generations"
    if not _has_keys(record["options"], {"seeds", "search"}):
        return "its options lack the seeds or the search settings"
    if not _has_keys(record["genome"], GENOME_KEYS):
        return f"its genome lacks one of {sorted(GENOME_KEYS)}"
    for generation in record["generations"]:
        if not _has_keys(generation, GENERATION_KEYS):
            return f"a generation lacks one of {sorted(GENERATION_KEYS)}"
        for individual in generation["individuals"]:
            if not _has_keys(individual, INDIVIDUAL_KEYS):
                return f"an individual of generation {generation['index']} lacks one of {sorted(INDIVIDUAL_KEYS)}"
            if not PLAIN_NAME.fullmatch(str(individual["id"])) or individual["id"] in (".", ".."):
                return f"individual id {individual['id']!r} is not a plain folder name"
    return None


def _has_keys(entry, keys: set[str]) -> bool:
    return isinstance(entry, dict) and keys <= entry.keys()


def rebuild_report(run_dir: str | Path) -> list[str]:
    """Write every derived file of the run in `run_dir`; returns the ids of individuals without saved images."""
    run_dir = Path(run_dir)
    record = read_record(run_dir)
    context = RunContext.from_record(run_dir, record)
    baseline = read_images(context, run_dir / files.BASELINE)
    if baseline is not None:
        write_batch_summary(run_dir / files.BASELINE, baseline)
    loss_plot = LossPlot()
    without_images = []
    for generation in record["generations"]:
        for individual in generation["individuals"]:
            pixels = read_images(context, files.individual_dir(run_dir, generation["index"], individual["id"]))
            if pixels is None:
                without_images.append(individual["id"])
            write_individual(context, generation, individual, pixels, loss_plot)
        write_generation(run_dir, generation)
    source = best_folder(record)
    best = read_images(context, run_dir / source) if source else None
    if best is not None:
        write_best(context, record, best)
    write_run(run_dir, record)
    return without_images
