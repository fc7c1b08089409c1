"""The pinning loop: search proposes gene vectors, the renderer draws them, the objective scores them.

The engine knows neither the WebUI nor CMA-ES internals: it talks to a `Renderer` (prompts -> images with the
run's fixed seeds), an `Objective` and a `Search`, and writes run.json after every generation.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from .genome import Genome
from .objective import Objective
from .recorder import Recorder, RecordingError
from .report import ReportRecorder
from .runfile import FORMAT_VERSION, RUN_FILE, write_json_atomic
from .search import Candidate, Search, SearchOptions


# Losses closer than this are the same picture to FLIP: the best individual is then the one nearest the prompt.
LOSS_TIE = 1e-3


class Renderer(Protocol):
    seeds: list[int]

    def render(self, prompts: Sequence[tuple[str, str]]) -> list[torch.Tensor]:
        """For each (positive, negative) prompt, its (B, 3, H, W) images in [0, 1], one per seed."""


class RunStopped(Exception):
    """Raised by a `should_stop` check or a renderer to end the run early, keeping finished generations."""


@dataclass
class RunResult:
    status: str
    record: dict
    best_images: torch.Tensor | None = None
    run_dir: Path | None = None


@dataclass
class PinningJob:
    genome: Genome
    renderer: Renderer
    objective: Objective
    search_options: SearchOptions = field(default_factory=SearchOptions)
    run_dir: Path | None = None
    options_record: dict = field(default_factory=dict)  # everything else the user chose, for run.json
    should_stop: Callable[[], bool] = lambda: False
    progress: bool = True
    recorder: Recorder | None = None  # default: ReportRecorder when there is a run folder
    on_best: Callable[[dict, torch.Tensor], None] | None = None  # called with record["best"] and its images


def prepare_run_dir(run_dir: Path) -> None:
    """Create the run folder; an earlier run in it (it has a run.json) is replaced, anything else refused."""
    run_dir = Path(run_dir)
    if run_dir.exists():
        if not run_dir.is_dir():
            raise ValueError(f"output {str(run_dir)!r} exists and is not a folder")
        entries = list(run_dir.iterdir())
        if entries and not (run_dir / RUN_FILE).exists():
            raise ValueError(f"output folder {str(run_dir)!r} is not empty and holds no earlier run: "
                             "choose another --out")
        for entry in entries:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)


class PinningRun:
    def __init__(self, job: PinningJob):
        self.job = job
        self.genome = job.genome
        self.search = Search(len(job.genome), job.search_options)
        self.record = {
            "version": FORMAT_VERSION,
            "options": {**job.options_record, "search": dataclasses.asdict(self.search.options),
                        "seeds": list(job.renderer.seeds), "loss_mode": job.objective.mode},
            "genome": {"words": job.genome.words, "negative_words": job.genome.negative_words,
                       "base_weights": job.genome.base_weights(),
                       "frozen": list(job.genome.frozen)},
            "generations": [],
            "baseline": None,
            "best": None,
            "status": "running",
        }
        self.best_images: torch.Tensor | None = None
        self._lowest_loss = math.inf
        self._best_distance = math.inf
        self._progress = None
        if job.recorder is not None:
            self.recorder = job.recorder
        else:
            self.recorder = ReportRecorder(job.run_dir) if job.run_dir is not None else Recorder()

    # -- bookkeeping -------------------------------------------------------------------------------------
    def _save(self) -> None:
        if self.job.run_dir is not None:
            write_json_atomic(Path(self.job.run_dir) / RUN_FILE, self.record)

    def _log(self, message: str) -> None:
        (self._progress.write if self._progress is not None else print)(message)

    # -- the loop ----------------------------------------------------------------------------------------
    def _evaluate(self, weights_list: Sequence) -> tuple[list[tuple[str, str]], list[torch.Tensor], list, float]:
        prompts = [self.genome.prompt(weights) for weights in weights_list]
        started = time.perf_counter()
        images = self.job.renderer.render(prompts)
        seconds_render = (time.perf_counter() - started) / max(len(prompts), 1)
        scores = []
        for batch in images:
            started = time.perf_counter()
            scores.append((self.job.objective.score(batch), time.perf_counter() - started))
        return prompts, images, scores, seconds_render

    def _baseline(self) -> None:
        zeros = [0.0] * len(self.genome)
        prompt = self.genome.prompt(zeros)
        baseline_images = self.job.renderer.render([prompt])[0]
        if self.job.objective.targets is None and self.job.objective.mode != "consistency":
            self.job.objective.set_targets(baseline_images)
            self._log("no target images: the unperturbed prompt's first batch is the target")
        score = self.job.objective.score(baseline_images)
        self.record["baseline"] = {"loss": score.loss, "prompt": prompt[0], "negative_prompt": prompt[1],
                                   "pairs": score.pairs, "pair_losses": score.pair_losses,
                                   "image_losses": score.image_losses}  # pairs: the same for every individual
        self._update_best(score.loss, prompt, zeros, -1, baseline_images)
        self.recorder.on_baseline(self.record, baseline_images, self.job.objective.targets)

    def _update_best(self, loss: float, prompt: tuple[str, str], weights, generation: int,
                     images: torch.Tensor) -> None:
        """Keep the individual closest to the user's prompt among those within LOSS_TIE of the lowest loss.

        Once every seed shows the target, the loss is flat up to noise and CMA-ES wanders; the lowest loss by a
        hair would often be a far-fetched prompt, while an equally good, tamer one came earlier.
        """
        self._lowest_loss = min(self._lowest_loss, loss)
        distance = float(np.linalg.norm(weights))
        best = self.record["best"]
        best_is_stale = best is None or best["loss"] > self._lowest_loss + LOSS_TIE
        if best_is_stale or (loss <= self._lowest_loss + LOSS_TIE and distance < self._best_distance):
            self.record["best"] = {"loss": loss, "prompt": prompt[0], "negative_prompt": prompt[1],
                                   "weights": [float(w) for w in weights], "generation": generation}
            self.best_images = images
            self._best_distance = distance
            if self.job.on_best is not None:
                self.job.on_best(self.record["best"], images)

    def _generation(self) -> None:
        started = time.perf_counter()
        index = self.search.generation
        candidates: list[Candidate] = self.search.ask()
        prompts, images, scores, seconds_render = self._evaluate([c.rendered for c in candidates])
        individuals = []
        for number, (candidate, prompt, batch, (score, seconds_loss)) in enumerate(
                zip(candidates, prompts, images, scores)):
            individuals.append({"id": f"{index:04d}-{number:03d}", "weights": candidate.rendered.tolist(),
                                "loss": score.loss, "prompt": prompt[0], "negative_prompt": prompt[1],
                                "seconds_render": seconds_render, "seconds_loss": seconds_loss,
                                "image_losses": score.image_losses, "pair_losses": score.pair_losses})
            self._update_best(score.loss, prompt, candidate.rendered, index, batch)
        losses = [score.loss for score, _ in scores]
        self.search.tell(candidates, losses)
        generation = {"index": index, "evaluations": len(candidates), "best_loss": min(losses),
                      "mean_loss": sum(losses) / len(losses), "sigma": self.search.sigma,
                      "cma": self.search.state(), "individuals": individuals}
        self.record["generations"].append(generation)
        self._save()
        self.recorder.on_generation(self.record, generation, images)
        # Wall time of the whole generation, bookkeeping included (in run.json from the next save on).
        generation["seconds"] = time.perf_counter() - started
        if self._progress is not None:
            self._progress.update(len(candidates))
            self._progress.set_postfix(best=f"{self.record['best']['loss']:.4f}")

    def run(self) -> RunResult:
        options = self.search.options
        total = options.generations * options.lambda_
        self._progress = tqdm(total=total, unit="eval", desc="pinning", disable=not self.job.progress,
                              dynamic_ncols=True)
        if options.log:
            self.search.log_writer = self._log
        try:
            self._save()
            self.recorder.on_start(self.record)
            self._baseline()
            self._save()
            while not self.search.done:
                if self.job.should_stop():
                    raise RunStopped()
                self._generation()
            self.record["status"] = "done"
        except (KeyboardInterrupt, RunStopped):
            self.record["status"] = "interrupted"
            self.record["message"] = f"stopped after {len(self.record['generations'])} finished generations"
        except Exception as error:  # recorded, then re-raised for the caller to report
            self.record["status"] = "failed"
            self.record["message"] = f"{type(error).__name__}: {error}"
            self._finish()
            raise
        self._finish()
        return RunResult(self.record["status"], self.record, self.best_images, self.job.run_dir)

    def _finish(self) -> None:
        """Save run.json and let the recorder finish; each is tried even when the other fails."""
        self._progress.close()
        self._progress = None
        self._try_save()
        if self.job.progress and self.job.run_dir is not None:
            print(f"writing the report in {self.job.run_dir} …", flush=True)  # it may still be catching up
        try:
            self.recorder.on_finish(self.record, self.best_images)  # also stops the report's writer thread
        except (RecordingError, OSError) as error:  # the search's results are intact, the report is not
            self._fail_record(str(error))
            self._try_save()

    def _try_save(self) -> None:
        try:
            self._save()
        except (OSError, ValueError, TypeError) as error:  # e.g. a full disk: the record is still returned
            self._fail_record(f"could not write {RUN_FILE}: {error}")
            print(f"error: could not write {RUN_FILE}: {error}")

    def _fail_record(self, message: str) -> None:
        self.record["status"] = "failed"
        self.record["message"] = "; ".join(filter(None, [self.record.get("message"), message]))


def run_pinning(job: PinningJob) -> RunResult:
    return PinningRun(job).run()
