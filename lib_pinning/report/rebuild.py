"""`python -m lib_pinning report RUN_DIR`: every derived file again, from run.json and the saved images.

Works on a run that crashed or was interrupted too: individuals whose images were never saved still get
their stats and loss plot, and are listed. A run.json that cannot be read is one RecordError naming the field.
"""

from __future__ import annotations

from pathlib import Path

from ..record import RunRecord, read_record
from . import files
from .context import RunContext
from .figures import GenerationPlot, LossPlot
from .writers import read_images, write_batch_summary, write_best, write_generation, write_individual, write_run


def rebuild_report(run_dir: str | Path) -> list[str]:
    """Write every derived file of the run in `run_dir`; returns the ids of individuals without saved images."""
    run_dir = Path(run_dir)
    record = read_record(run_dir)
    without_images = write_derived(run_dir, record)
    context = RunContext.from_record(run_dir, record)
    best = read_images(context, run_dir / record.best.folder) if record.best is not None else None
    if best is not None:
        write_best(context, record.best, best)
    write_run(run_dir, record)
    return without_images


def write_derived(run_dir: Path, record: RunRecord, only_missing: bool = False) -> list[str]:
    """The files derived from each batch's saved images (all of them, or those missing); returns the ids of
    individuals without saved images."""
    context = RunContext.from_record(run_dir, record)
    if record.baseline is not None:
        folder = run_dir / record.baseline.folder
        baseline = None if only_missing and (folder / files.GIF).is_file() else read_images(context, folder)
        if baseline is not None:
            write_batch_summary(folder, baseline)
    loss_plot, generation_plot = LossPlot(), GenerationPlot()
    without_images = []
    for generation in record.generations:
        for individual in generation.individuals:
            folder = run_dir / individual.folder
            if only_missing and all((folder / name).is_file() for name in (files.STATS, files.LOSS_PLOT, files.GIF)):
                continue
            pixels = read_images(context, folder)
            if pixels is None:
                without_images.append(individual.id)
            write_individual(context, generation, individual, pixels, loss_plot)
        plot = files.generation_dir(run_dir, generation.index) / files.GENERATION_PLOT
        if not (only_missing and plot.is_file()):
            write_generation(run_dir, generation, generation_plot)
    return without_images
