"""`python -m lib_pinning report RUN_DIR`: every derived file again, from run.json and the saved images.

Works on a run that crashed or was interrupted too: individuals whose images were never saved still get
their stats and loss plot, and are listed. A run.json that cannot be read is one RecordError naming the field.
"""

from __future__ import annotations

from pathlib import Path

from ..record import read_record
from . import files
from .context import RunContext
from .figures import LossPlot
from .writers import read_images, write_batch_summary, write_best, write_generation, write_individual, write_run


def rebuild_report(run_dir: str | Path) -> list[str]:
    """Write every derived file of the run in `run_dir`; returns the ids of individuals without saved images."""
    run_dir = Path(run_dir)
    record = read_record(run_dir)
    context = RunContext.from_record(run_dir, record)
    if record.baseline is not None:
        baseline = read_images(context, run_dir / record.baseline.folder)
        if baseline is not None:
            write_batch_summary(run_dir / record.baseline.folder, baseline)
    loss_plot = LossPlot()
    without_images = []
    for generation in record.generations:
        for individual in generation.individuals:
            pixels = read_images(context, run_dir / individual.folder)
            if pixels is None:
                without_images.append(individual.id)
            write_individual(context, generation, individual, pixels, loss_plot)
        write_generation(run_dir, generation)
    best = read_images(context, run_dir / record.best.folder) if record.best is not None else None
    if best is not None:
        write_best(context, record.best, best)
    write_run(run_dir, record)
    return without_images
