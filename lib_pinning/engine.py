"""The pinning loop: the search proposes gene vectors, the renderer draws them, the objective scores them.

The engine knows neither the WebUI nor the report: a `Job` (lib_pinning.job builds it) brings the genome, the
renderer, the objective, the search, the record's header and the observers. The engine writes run.json after
every generation, with the search's and its own whole state, and ends the run in exactly one status with a typed
cause (lib_pinning.record.CAUSES): it never raises for what happens during the run; the result says how it ended,
with the exception of a fault. A generation is rendered and scored in order and ends at the individual that ends
the run (the loss target, the stop share): the rest of it is never rendered.

Resuming (`run_pinning(job, resume=record)`) continues a run from its last saved state: it renders the
unperturbed prompt again (its targets, and a check that the renderer still gives the run's images) and the best
individual (its images), restores the search, and goes on as the run would have; the finished record equals the
uninterrupted run's, timings aside.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import breeding
from .errors import InputError
from .interrupts import Interrupted, deferred
from .observer import ObserverError
from .record import (BASELINE_FOLDER, RUN_FILE, Baseline, Best, CmaState, Generation, Individual, RunRecord,
                     individual_folder)
from .rendering import Rendered, RunStopped
from .runfile import write_bytes_atomic

if TYPE_CHECKING:
    from .job import Job

log = logging.getLogger(__name__)

# Losses closer than this are the same picture to FLIP: the best individual is then the one nearest the prompt.
LOSS_TIE = 1e-3


@dataclass
class RunResult:
    record: RunRecord
    best: Rendered | None = None       # the best individual's batch, with its renderer's payload
    run_dir: Path | None = None
    error: BaseException | None = None  # the fault that ended a failed run, for callers that map it

    @property
    def status(self) -> str:
        return self.record.status


class _RecordNotSaved(Exception):
    """run.json could not be written (a full disk): the run ends with cause "record"."""


class ResumeRefused(InputError):
    """The run to resume cannot go on with this job: its targets or its renders differ. Nothing was written."""


def tensor_hash(images) -> list[str]:
    """SHA-256 of each image's float32 values: the same targets give the same hashes on any machine."""
    return [hashlib.sha256(image.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()
            for image in images]


class PinningRun:
    def __init__(self, job: Job, resume: RunRecord | None = None):
        self.job = job
        self.record = job.record
        self.search = job.search
        self.resume = resume
        self.best: Rendered | None = None
        self.error: BaseException | None = None
        self._lowest_loss = math.inf
        self._best_distance = math.inf
        self._parents: list = []  # the ids the next generation is drawn around, or each child's (a chooser run)
        self._bred: dict | None = None  # a chooser run: the pair whose children begin the next generation

    # -- bookkeeping -------------------------------------------------------------------------------------
    def _save(self) -> None:
        if self.job.run_dir is None:
            return
        try:
            write_bytes_atomic(Path(self.job.run_dir) / RUN_FILE, self.record.to_json().encode("utf-8"))
        except OSError as error:
            raise _RecordNotSaved(f"could not write {RUN_FILE}: {error}") from error

    def _notify(self, hook: str, *args) -> None:
        for observer in self.job.observers:
            getattr(observer, hook)(self.record, *args)

    # -- the loop ----------------------------------------------------------------------------------------
    def _render(self, weights_list: Sequence) -> tuple[list[tuple[str, str]], list[Rendered], float]:
        prompts = [self.job.genome.prompt(weights) for weights in weights_list]
        started = time.perf_counter()
        rendered = self.job.renderer.render(prompts)
        for notice in getattr(self.job.renderer, "take_notices", list)():
            self._notice(notice)
        if len(rendered) != len(prompts):
            raise RuntimeError(f"the renderer returned {len(rendered)} batches for {len(prompts)} prompts")
        return prompts, rendered, (time.perf_counter() - started) / max(len(prompts), 1)

    def _render_until_pinned(self, index: int, candidates: list) -> tuple[list, list[Rendered], list, float]:
        """Render and score a generation's candidates in order, in slices of the renderer's `parallel` (all at once
        without it), up to the first whose loss ends the run (`Search.ends_run`): the rest is never rendered.

        The cut is the same whatever the slices: a renderer that drew a few more in its last slice (workers, the
        embedded model) has them dropped, so the record does not depend on who rendered it.
        """
        step = max(1, getattr(self.job.renderer, "parallel", None) or len(candidates))
        prompts, rendered, scored, seconds = [], [], [], 0.0
        for start in range(0, len(candidates), step):
            some_prompts, some, seconds_each = self._render([c.rendered for c in candidates[start:start + step]])
            seconds += seconds_each * len(some)
            some_scored = self.job.objective.score_generation(index, some_prompts, some)
            for prompt, batch, (score, seconds_loss) in zip(some_prompts, some, some_scored):
                prompts.append(prompt)
                rendered.append(batch)
                scored.append((score, seconds_loss))
                if self.search.ends_run(score.loss):  # False for NaN; a non-finite loss fails the generation
                    return prompts, rendered, scored, seconds / len(rendered)
        return prompts, rendered, scored, seconds / max(len(rendered), 1)

    def _render_baseline(self) -> tuple[tuple[str, str], Rendered, list[str]]:
        """The unperturbed prompt's batch, with the targets brought to its size (or made from it)."""
        zeros = [0.0] * len(self.job.genome)
        (prompt,), (rendered,), _ = self._render([zeros])
        objective = self.job.objective
        notices = objective.prepare_targets(tuple(rendered.images.shape[-2:]))
        if objective.needs_targets:
            objective.set_targets(rendered.images)
            log.info("no target images: the unperturbed prompt's first batch is the target")
        return prompt, rendered, notices

    def _baseline(self) -> None:
        prompt, rendered, notices = self._render_baseline()
        for notice in notices:
            self._notice(notice)
        objective = self.job.objective
        self.record.objective.target_hashes = tensor_hash(objective.target_pixels()) if objective.targets is not None else []
        score = objective.score(rendered.images)
        with deferred():  # in the record only with its images queued
            self.record.baseline = Baseline(score.loss, prompt[0], prompt[1], score.image_losses, score.pair_losses)
            self.search.reference_loss = score.loss  # what the stop share is a share of
            self._notify("on_baseline", rendered, objective.target_pixels())
            self._update_best(score.loss, prompt, [0.0] * len(self.job.genome), -1, None, BASELINE_FOLDER,
                              rendered)

    def _restore(self) -> None:
        """Take up the run of `self.resume`: its record, its search, its best images; nothing is written here.

        Raises ResumeRefused when the targets or the renders differ from the run's.
        """
        stored, objective = self.resume, self.job.objective
        if stored.state is None or stored.baseline is None or stored.best is None:
            raise ResumeRefused("the run cannot be resumed: it ended before its first batch was scored (start it "
                                "again instead)")
        prompt, rendered, _ = self._render_baseline()
        hashes = tensor_hash(objective.target_pixels()) if objective.targets is not None else []
        if hashes != stored.objective.target_hashes:
            what = "its targets" if stored.objective.target_source == "given" else "the unperturbed prompt's images"
            raise ResumeRefused(f"the run cannot be resumed: {what} differ from the run's (another image, model, "
                                "device or settings)")
        record = self.record
        record.objective.target_hashes = hashes
        record.notices, record.baseline, record.best = stored.notices, stored.baseline, stored.best
        record.generations = stored.generations
        self.search.restore(stored.state["search"])
        engine = stored.state["engine"]
        self._lowest_loss, self._best_distance = engine["lowest_loss"], engine["best_distance"]
        self._parents = list(engine.get("parents", []))
        self._bred = engine.get("bred")
        self._keep_state()
        best = record.best
        self.best = rendered if best.generation < 0 else self._render([best.weights])[1][0]
        self._resumed_baseline = rendered

    def _keep_state(self) -> None:
        """The state a resume starts from: taken only where a generation (or the baseline) has just finished, so
        that a run stopped inside a generation is resumed from before it."""
        engine = {"lowest_loss": self._lowest_loss, "best_distance": self._best_distance}
        if self.job.objective.ranks_generation:
            engine.update(parents=self._parents, bred=self._bred)
        self.record.state = {"search": self.search.snapshot(), "engine": engine}

    def _notice(self, notice: str) -> None:
        self.record.notices.append(notice)
        log.warning("notice: %s", notice)

    def _update_best(self, loss: float, prompt: tuple[str, str], weights, generation: int, id: str | None,
                     folder: str, rendered: Rendered) -> None:
        """Keep the individual closest to the user's prompt among those within LOSS_TIE of the lowest loss.

        Once every seed shows the target, the loss is flat up to noise and CMA-ES wanders; the lowest loss by a
        hair would often be a far-fetched prompt, while an equally good, tamer one came earlier.
        """
        self._lowest_loss = min(self._lowest_loss, loss)
        distance = float(np.linalg.norm(weights))
        best = self.record.best
        best_is_stale = best is None or best.loss > self._lowest_loss + LOSS_TIE
        if best_is_stale or (loss <= self._lowest_loss + LOSS_TIE and distance < self._best_distance):
            self._set_best(loss, prompt, weights, generation, id, folder, rendered)

    def _set_best(self, loss: float, prompt: tuple[str, str], weights, generation: int, id: str | None,
                  folder: str, rendered: Rendered) -> None:
        self.record.best = Best(loss, prompt[0], prompt[1], [float(w) for w in weights], generation, id, folder)
        self.best = rendered
        self._best_distance = float(np.linalg.norm(weights))
        self._notify("on_best", rendered)

    def _generation(self) -> None:
        started = time.perf_counter()
        index = self.search.generation
        candidates = self.search.ask()
        objective = self.job.objective
        parents = breeding.lineage(len(candidates), self._parents if objective.ranks_generation else [], self._bred)
        if self._bred is not None:  # the chosen pair's children take the first places
            bred = breeding.children(*self._bred["genes"], breeding.litter(len(candidates)),
                                     (self.search.options.cma_seed, index))
            candidates[:len(bred)] = [self.search.injected(genes) for genes in bred]
        if objective.ranks_generation:  # a chooser sees the whole generation, and may end the run here
            prompts, rendered, seconds_render = self._render([c.rendered for c in candidates])
            scored = objective.score_generation(index, prompts, rendered)
        else:
            prompts, rendered, scored, seconds_render = self._render_until_pinned(index, candidates)
            candidates = candidates[:len(rendered)]
        individuals = []
        for number, (candidate, prompt, (score, seconds_loss)) in enumerate(zip(candidates, prompts, scored)):
            if not math.isfinite(score.loss):
                raise FloatingPointError(f"the loss of individual {index:04d}-{number:03d} is {score.loss}: the "
                                         "objective cannot rank it")
            identifier = f"{index:04d}-{number:03d}"
            folder = individual_folder(index, identifier)
            individuals.append(Individual(identifier, folder, candidate.rendered.tolist(), score.loss, prompt[0],
                                          prompt[1], score.image_losses, score.pair_losses, seconds_render,
                                          seconds_loss, score.place, score.chosen, parents[number]))
        losses = [individual.loss for individual in individuals]
        self.search.tell(candidates, losses)  # refuses a loss that is not finite
        self._parents = breeding.named(self.search.drawn_around, [individual.id for individual in individuals])
        self._bred = None if objective.bred is None else {
            "parents": [individuals[number].id for number in objective.bred],
            "genes": [individuals[number].weights for number in objective.bred]}
        state = CmaState(**self.search.state())
        if not all(math.isfinite(value) for value in (state.sigma, state.axis_ratio, *state.centroid, *state.stds)):
            raise FloatingPointError(f"the CMA-ES state is no longer finite after generation {index} (sigma "
                                     f"{state.sigma}): its learning rates or covariance cannot work together")
        generation = Generation(index, len(candidates), min(losses), sum(losses) / len(losses), self.search.sigma,
                                state, individuals)
        # The best changes only with a whole generation: a run that ends inside one (a fault, Ctrl-C) keeps a best
        # from the generations its record holds. A generation enters the record only with its images queued.
        with deferred():
            entries, update = list(zip(candidates, individuals, rendered)), self._update_best
            if objective.ranks_generation:  # losses compare only within a generation: the best is its first choice
                entries, update = [min(entries, key=lambda entry: entry[1].loss)], self._set_best
            for candidate, individual, batch in entries:
                update(individual.loss, (individual.prompt, individual.negative_prompt), candidate.rendered, index,
                       individual.id, individual.folder, batch)
            self.record.generations.append(generation)
            self._keep_state()
            self._save()
            self._notify("on_generation", generation, rendered)
        # Wall time of the whole generation, bookkeeping included (in run.json from the next save on).
        generation.seconds = time.perf_counter() - started

    def run(self) -> RunResult:
        """Run (or resume) the job to its end. Raises only ResumeRefused, before anything was written."""
        if self.resume is not None:
            self._restore()
        try:
            self._save()
            self._notify("on_start", 1 + self.search.budget)
            if self.resume is None:
                self._baseline()
                self._keep_state()
                self._save()
            else:
                self._notify("on_baseline", self._resumed_baseline, self.job.objective.target_pixels())
                self._notify("on_best", self.best)
            while not self.search.done:
                if self.job.should_stop():
                    raise RunStopped()
                self._generation()
            self.record.end(self.search.stop, self._stop_message())
        except (KeyboardInterrupt, RunStopped) as stop:
            cause = stop.cause if isinstance(stop, Interrupted) else "interrupt"
            self.record.end(cause, f"stopped after {counted(len(self.record.generations), 'finished generation')}")
        except _RecordNotSaved as error:
            self.error = error.__cause__
            self.record.end("record", str(error))
        except Exception as error:  # a fault of the run: recorded, and kept for the caller
            self.error = error
            self.record.end("fault", f"{type(error).__name__}: {error}")
        self._finish()
        return RunResult(self.record, self.best, self.job.run_dir, self.error)

    def _stop_message(self) -> str:
        options, search = self.search.options, self.search
        ran = f"after {counted(search.generation, 'generation')}, {counted(search.evaluations, 'evaluation')}"
        restarts = f" and {counted(search.restarts, 'restart')}" if search.restarts else ""
        budget = f"the budget of {counted(search.budget, 'evaluation')}"
        messages = {  # each made only for its own cause: what one cause's text reads need not exist for another's
            "generations": lambda: f"{budget} is spent ({ran})" if search.evaluations >= search.budget else
                                   f"{budget} has no room for another generation of {search.next_size} ({ran})",
            "target": lambda: f"the best loss reached {options.target_loss} ({ran})",
            "pinned": lambda: f"pinned: the best loss {search.best_loss:.4g} is at most {options.stop_share:g} × "
                              f"your prompt's loss {search.reference_loss:.4g} ({ran})",
            "stagnation": lambda: f"the best loss improved by no more than {options.tolerance} in "
                                  f"{counted(options.patience, 'generation')}{restarts} ({ran})",
            "flat": lambda: f"{counted(options.patience, 'generation')} in a row had every loss within "
                            f"{options.tolerance}{restarts} ({ran})"}
        return messages[search.stop]()

    def _finish(self) -> None:
        """Save run.json and let every observer finish; each is tried even when another fails."""
        for observer in self.job.observers:
            observer.on_end(self.record)
        self._try_save()
        for observer in self.job.observers:
            try:
                observer.on_finish(self.record, self.best)
            except (ObserverError, OSError) as error:  # the search's results are intact, the report is not
                self._fail("report", str(error))
                self._try_save()

    def _try_save(self) -> None:
        try:
            self._save()
        except (_RecordNotSaved, ValueError) as error:  # e.g. a full disk: the record is still returned
            self._fail("record", str(error))
            log.error("error: %s", error)

    def _fail(self, cause: str, message: str) -> None:
        """A later failure: a run that was not failed yet takes its cause; the messages add up."""
        ending = self.record.ending
        if self.record.status != "failed" or ending is None:
            self.record.end(cause, "; ".join(filter(None, [ending and ending.message, message])))
        elif message not in ending.message:
            ending.message = f"{ending.message}; {message}"


def counted(count: int, noun: str) -> str:
    """"1 generation", "9 generations": a count with its noun, for the messages a run ends with."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def run_pinning(job: Job, resume: RunRecord | None = None) -> RunResult:
    """Run `job`, or with `resume` (the record of an earlier run of the same job) continue that run."""
    try:
        return PinningRun(job, resume).run()
    finally:
        job.objective.release()
