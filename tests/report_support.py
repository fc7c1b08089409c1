"""Runs, jobs and records shared by the engine and report tests."""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from lib_pinning.embedded import EmbeddedModel, EmbeddedRenderer
from lib_pinning.embedded_run import pin
from lib_pinning.job import RenderPlan, build_job
from lib_pinning.options import PinOptions, parse
from lib_pinning.record import (Baseline, Best, CmaState, Generation, GenomeRecord, Individual, ObjectiveRecord,
                                RenderRecord, RunRecord, individual_folder)
from lib_pinning.report import ReportRecorder

HOSTILE = "</script><img src=x onerror=alert(1)>"
SMALL = dict(batch=3, steps=4, prototypes=6, size=16, progress=False)
SEARCH = dict(cma_seed=1, generations=3, lambda_=4, log=False, first_look=0)  # 3 generations of 4


def small_run(folder, prompt=f"a red circle {HOSTILE}", **overrides):
    """A finished run of 3 generations of 4 individuals; its default prompt tries to break out of the HTML."""
    return pin(prompt, "dark", out=folder, **{**SMALL, **SEARCH, **overrides})


@functools.cache
def shared_small_run() -> Path:
    """One small_run folder for every test module of this process; read it, never change it."""
    folder = Path(tempfile.mkdtemp(prefix="report-run-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    small_run(folder / "run")
    return folder / "run"


def small_job(prompt="a red circle", negative="", *, seeds=(0, 1), steps=3, wrap=None, run_dir=None, **values):
    """A job on a 6-prototype 16² embedded model; `wrap(renderer)` may stand in for the renderer."""
    options = parse(PinOptions, {**SEARCH, **values})
    plan = RenderPlan(RenderRecord(list(seeds), "DPM++ 2M", "Karras", steps, 3.0, 16, 16, "embedded"), steps,
                      len(seeds))

    def make_renderer(resolved):
        renderer = EmbeddedRenderer(EmbeddedModel(count=6, size=16), list(seeds), steps=steps,
                                    fork_strength=resolved.fork_strength)
        return wrap(renderer) if wrap else renderer

    job = build_job(options, prompt, negative, plan, make_renderer)
    if run_dir is not None:
        job.run_dir = Path(run_dir)
        job.observers.append(ReportRecorder(run_dir))
    return job


def synthetic_record(generations: int, per_generation: int, genes: int = 16, seed: int = 0,
                     seeds: int = 8) -> RunRecord:
    """A run record with made-up numbers, for sizes no quick test can render."""
    rng = np.random.default_rng(seed)
    words = [f"word{i}" for i in range(genes)]

    def prompt(weights):
        return " ".join(f"({word}:{1 + w:.4f})" for word, w in zip(words, weights))

    pairs = [[a, b] for a in range(seeds) for b in range(a + 1, seeds)]
    records = []
    for index in range(generations):
        individuals = []
        for number in range(per_generation):
            weights = rng.normal(0, 0.1, genes).tolist()
            identifier = f"{index:04d}-{number:03d}"
            individuals.append(Individual(identifier, individual_folder(index, identifier), weights,
                                          float(rng.uniform(0.2, 1.0)), f"{HOSTILE} {prompt(weights)}", "",
                                          rng.uniform(0, 1, seeds).tolist(), rng.uniform(0, 1, len(pairs)).tolist(),
                                          0.5, 0.05))
        losses = [individual.loss for individual in individuals]
        cma = CmaState(rng.normal(0, 0.1, genes).tolist(), 0.05, 1.2, np.sort(rng.uniform(0.5, 2, genes)).tolist(),
                       rng.uniform(0.01, 0.1, genes).tolist())
        records.append(Generation(index, per_generation, min(losses), float(np.mean(losses)), 0.05, cma, individuals))
    best_generation, best = min(((g.index, i) for g in records for i in g.individuals), key=lambda e: e[1].loss)
    options = {"size_limit": 0.0}
    return RunRecord(
        prompt=HOSTILE, negative_prompt="", options=options, resolved=options, cma_constants={},
        render=RenderRecord(list(range(seeds)), "DPM++ 2M", "Karras", 10, 3.0, 8, 8, "embedded"),
        objective=ObjectiveRecord("consistency", 0, "none", pairs, None),
        genome=GenomeRecord(words, [], [1.0] * genes, []),
        baseline=Baseline(1.0, prompt([0] * genes), "", [0.5] * seeds, [0.5] * len(pairs)),
        best=Best(best.loss, best.prompt, "", best.weights, best_generation, best.id, best.folder),
        generations=records, status="done")


class StopAt:
    """Wraps a renderer: renders normally, then raises `exception` at render call `at` (1: the baseline; 0: never).
    With `parallel` it asks the engine for that many prompts at a time (lib_pinning.rendering); `prompts` counts
    the prompts it rendered."""

    def __init__(self, at, exception=None, parallel=None):
        self.at, self.exception, self.calls, self.prompts = at, exception or KeyboardInterrupt(), 0, 0
        if parallel is not None:
            self.parallel = parallel

    def __call__(self, renderer):
        self.renderer, self.seeds = renderer, renderer.seeds
        return self

    def render(self, prompts):
        self.calls += 1
        if self.calls == self.at:
            raise self.exception
        self.prompts += len(prompts)
        return self.renderer.render(prompts)


def without_timings(record) -> dict:
    """The record as JSON data without what legitimately differs between two equal runs: timings."""
    data = json.loads(record.to_json())
    for generation in data["generations"]:
        generation.pop("seconds")
        for individual in generation["individuals"]:
            individual.pop("seconds_render")
            individual.pop("seconds_loss")
    return data
