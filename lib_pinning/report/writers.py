"""Writing the report's files, one function per unit of work: the live recorder queues these calls, a rebuild
makes them directly. Derived files depend only on the record and the 8-bit pixels, never on timing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..record import Best, Generation, Individual, RunRecord
from . import files, html, run_figures, weight_map
from .context import RunContext
from .figures import GenerationPlot, LossPlot, png
from .images import gif_bytes, png_bytes, read_png, thumbnail_strip
from .stats import individual_stats


def write_targets(run_dir: Path, pixels: np.ndarray) -> None:
    """target-K.png as scored; with masks (a 4th channel) the target carries its mask as alpha, and mask-K.png
    shows it (white counts, black is ignored)."""
    for index, image in enumerate(pixels):
        files.write_bytes(Path(run_dir) / files.TARGETS / f"target-{index}.png", png_bytes(image))
        if image.shape[-1] == 4:
            files.write_bytes(Path(run_dir) / files.TARGETS / f"mask-{index}.png", png_bytes(image[..., 3]))


def write_images(context: RunContext, folder: Path, prompt: str, negative_prompt: str, pixels: np.ndarray) -> None:
    """One PNG per seed, carrying the infotext that reproduces it in txt2img."""
    for seed, image in zip(context.seeds, pixels):
        text = context.infotext(prompt, negative_prompt, seed)
        files.write_bytes(folder / files.image_name(seed), png_bytes(image, text))


def read_images(context: RunContext, folder: Path) -> np.ndarray | None:
    """The saved images of one batch in seed order, or None when any is missing or unreadable."""
    try:
        return np.stack([read_png(folder / files.image_name(seed)) for seed in context.seeds])
    except (OSError, ValueError):
        return None


def write_batch_summary(folder: Path, pixels: np.ndarray) -> None:
    files.write_bytes(folder / files.THUMBNAILS, thumbnail_strip(pixels))
    files.write_bytes(folder / files.GIF, gif_bytes(pixels))


def write_individual(context: RunContext, generation: Generation, individual: Individual, pixels: np.ndarray | None,
                     loss_plot: LossPlot) -> None:
    """stats.json, loss_plot.png and, when its images exist, the thumbnails and the GIF of one individual."""
    folder = context.run_dir / individual.folder
    files.write_json(folder / files.STATS, individual_stats(context, generation, individual))
    title = f"{individual.id}: loss {individual.loss:.4f}"
    plot = loss_plot.png(title, individual.loss, individual.pair_losses, individual.image_losses)
    files.write_bytes(folder / files.LOSS_PLOT, plot)
    if pixels is not None:
        write_batch_summary(folder, pixels)


def write_generation(run_dir: Path, generation: Generation, plot: GenerationPlot) -> None:
    path = files.generation_dir(run_dir, generation.index) / files.GENERATION_PLOT
    files.write_bytes(path, plot.png(generation))


def write_best(context: RunContext, best: Best, pixels: np.ndarray) -> None:
    write_images(context, context.run_dir / files.BEST, best.prompt, best.negative_prompt, pixels)


def run_plots(record: RunRecord) -> dict:
    """The per-run plots this record gets (none before a generation has finished): file name -> figure maker."""
    if not record.generations:
        return {}
    if record.resolved.get("evolve") == "tags":  # a genetic algorithm's tags: no CMA-ES state, no weight to loosen
        return {files.TAGS_PLOT: run_figures.tags_figure, files.HISTORY_PLOT: run_figures.history_figure}
    plots = {files.CMA_PLOT: run_figures.cma_figure, files.HISTORY_PLOT: run_figures.history_figure,
             files.LOOSENESS_PLOT: run_figures.looseness_figure}
    if record.resolved.get("size_limit", 0) > 0:
        plots[files.FRONT_PLOT] = run_figures.front_figure
    if weight_map.installed() and weight_map.enough_individuals(record):
        plots[files.WEIGHT_MAP_PLOT] = weight_map.weight_map_figure
    return plots


def write_run(run_dir: Path, record: RunRecord) -> None:
    """The per-run plots and index.html."""
    run_dir = Path(run_dir)
    plots = run_plots(record)
    for name, figure in plots.items():
        files.write_bytes(run_dir / name, png(figure(record)))
    write_index(run_dir, record, list(plots))


def write_index(run_dir: Path, record: RunRecord, plots: list[str] | None = None) -> None:
    """index.html, showing `plots` (default: those already in the folder)."""
    run_dir = Path(run_dir)
    if plots is None:
        plots = [name for name in run_plots(record) if (run_dir / name).is_file()]
    files.write_bytes(run_dir / files.INDEX, html.index_html(run_dir, record, plots).encode("utf-8"))
