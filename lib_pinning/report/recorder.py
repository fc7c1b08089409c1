"""The observer that writes a run's report while the search goes on.

Each hook copies what it needs (the engine keeps changing its record) and converts images to 8-bit pixels,
then queues the writing for a background thread, so rendering never waits for PNG encoding or plotting. The
images (PNGs with infotext) are queued before the files derived from them, so when the run is asked to hurry
(a second Ctrl-C) the derived files are skipped and every image still reaches the disk. `on_finish` drains the
queue, writes the best images, the run's plots and index.html, and raises ObserverError when any file could not
be written.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from ..observer import Observer, ObserverError
from ..record import Generation, RunRecord
from ..rendering import Rendered
from .context import RunContext
from .figures import GenerationPlot, LossPlot
from .rebuild import write_derived
from .images import to_pixels
from .worker import BackgroundWriter
from .writers import (write_batch_summary, write_best, write_generation, write_images, write_individual, write_index,
                      write_run, write_targets)


class ReportRecorder(Observer):
    def __init__(self, run_dir: str | Path, complete: bool = False):
        """`complete`: the run is resumed; at its end, write the derived files its earlier part is missing."""
        self.run_dir = Path(run_dir)
        self.complete = complete
        self._writer = BackgroundWriter()
        self._loss_plot = LossPlot()  # these two are used by the writer thread only
        self._generation_plot = GenerationPlot()
        self._context: RunContext | None = None

    def on_baseline(self, record: RunRecord, rendered: Rendered, targets: torch.Tensor | None) -> None:
        self._context = RunContext.from_record(self.run_dir, record)
        if targets is not None:
            self._writer.submit("the target images", write_targets, self.run_dir, to_pixels(targets))
        baseline, pixels = copy.deepcopy(record.baseline), to_pixels(rendered.images)
        folder = self.run_dir / baseline.folder
        self._writer.submit("the unperturbed prompt's images", write_images, self._context, folder, baseline.prompt,
                            baseline.negative_prompt, pixels)
        self._writer.submit("the unperturbed prompt's summary", write_batch_summary, folder, pixels, derived=True)

    def on_generation(self, record: RunRecord, generation: Generation, rendered: list[Rendered]) -> None:
        generation = copy.deepcopy(generation)
        for individual, batch in zip(generation.individuals, rendered):
            pixels = to_pixels(batch.images)
            self._writer.submit(f"individual {individual.id}'s images", write_images, self._context,
                                self.run_dir / individual.folder, individual.prompt, individual.negative_prompt,
                                pixels)
            self._writer.submit(f"individual {individual.id}'s files", write_individual, self._context, generation,
                                individual, pixels, self._loss_plot, derived=True)
        self._writer.submit(f"generation {generation.index}'s plot", write_generation, self.run_dir, generation,
                            self._generation_plot, derived=True)

    def hurry(self) -> None:
        self._writer.hurry()

    def on_finish(self, record: RunRecord, best: Rendered | None) -> None:
        self._writer.finish()
        if best is not None and record.best is not None and self._context is not None:
            self._writer.run("the best images", write_best, self._context, record.best, to_pixels(best.images))
        if self._writer.hurried:  # the page of what exists; its plots and GIFs are for a rebuild
            self._writer.run("index.html", write_index, self.run_dir, record)
        else:
            if self.complete:
                self._writer.run("the earlier generations' files", write_derived, self.run_dir, record, True)
            self._writer.run("the run's plots and index.html", write_run, self.run_dir, record)
        failure = self._writer.failure()
        if failure:
            raise ObserverError(f"the report is incomplete ({failure}); once that is fixed, rebuild it with: "
                                f"python -m lib_pinning report {self.run_dir}")
