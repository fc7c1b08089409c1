"""What a run tells the world while it goes: observers of its events; log lines go through `logging`.

The engine calls every observer's hooks in order: `on_start` (the record as it starts and how many evaluations
are planned), `on_baseline` (the unperturbed prompt's batch and the targets), `on_best` (each time the best
individual changes), `on_generation` (each finished generation with its batches), `on_end` (the run has ended)
and `on_finish`. `hurry` asks an observer still finishing to keep only what cannot be made again. The report
writer (lib_pinning.report.ReportRecorder), the command line's progress bar (`ProgressBar`) and the WebUI's
preview are observers. Hooks must not change what they are given. An observer whose work failed says so from
`on_finish` with an `ObserverError`: the run then ends "failed", its search results intact.

Log lines (notices, the CMA-ES logbook) go to the `lib_pinning` logger; the command line and the WebUI attach
their own handlers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from .record import Generation, RunRecord
    from .rendering import Rendered

log = logging.getLogger("lib_pinning")


class ObserverError(RuntimeError):
    """Raised by `on_finish` when an observer's part (e.g. report files) could not be done."""


class Observer:
    """Receives a run's events; every hook is optional."""

    def on_start(self, record: RunRecord, planned_evaluations: int) -> None:
        pass

    def on_baseline(self, record: RunRecord, rendered: Rendered, targets: torch.Tensor | None) -> None:
        pass

    def on_best(self, record: RunRecord, rendered: Rendered) -> None:
        pass

    def on_generation(self, record: RunRecord, generation: Generation, rendered: list[Rendered]) -> None:
        pass

    def on_end(self, record: RunRecord) -> None:
        """The run has ended (its status is decided); run.json and every observer's finishing come next."""

    def hurry(self) -> None:
        """Finish sooner: keep what cannot be made again (the images), skip what can (a rebuild makes it)."""

    def on_finish(self, record: RunRecord, best: Rendered | None) -> None:
        pass


class ProgressBar(Observer):
    """A console progress bar over the planned evaluations, with the best loss so far (tqdm, on stderr)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._bar = None

    def on_start(self, record: RunRecord, planned_evaluations: int) -> None:
        from tqdm.auto import tqdm

        done = record.evaluations + (record.baseline is not None)  # a resumed run starts where it was
        self._bar = tqdm(total=planned_evaluations, initial=done, unit="eval", desc="pinning",
                         disable=not self.enabled, dynamic_ncols=True)

    def on_baseline(self, record: RunRecord, rendered: Rendered, targets: torch.Tensor | None) -> None:
        if record.evaluations == 0:
            self._bar.update(1)

    def on_generation(self, record: RunRecord, generation: Generation, rendered: list[Rendered]) -> None:
        self._bar.update(generation.evaluations)
        self._bar.set_postfix(best=f"{record.best.loss:.4f}")

    def on_finish(self, record: RunRecord, best: Rendered | None) -> None:
        if self._bar is not None:
            self._bar.close()
