"""Efficiency benchmark: evaluations until the loss falls below a threshold (BENCHMARKS.md, "efficiency").

Embedded model; each task pins a prompt to one of the model's prototypes; the threshold is half the loss of
the unperturbed prompt. Compared at the same budget: the project's default search options, the original
extension's defaults (centroid drawn within +-0.25, sigma 0.05), other candidate defaults, and random search.
Medians over tasks x CMA seeds; a run that never reaches the threshold counts as the whole budget (censored).

    .venv/bin/python bench/efficiency.py [--seeds 5] [--write]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from datetime import date

import numpy as np

from benchlib import append_section, machine

from lib_pinning.embedded import EmbeddedModel, EmbeddedRenderer  # noqa: E402
from lib_pinning.genome import build_genome  # noqa: E402
from lib_pinning.objective import Objective  # noqa: E402
from lib_pinning.options import Context, PinOptions, resolve  # noqa: E402
from lib_pinning.search import Search  # noqa: E402

PROMPTS = [
    ("a quiet painting of round shapes, warm colours, soft light, simple", "noise, stripes"),
    ("bold geometric poster, bright red and deep blue, sharp edges", "blurry"),
]
TARGET_RANKS = (1, 2, 3, 4, 5)  # prototypes of moderate prior: reachable, not given
METHODS = {
    "project default": PinOptions(),
    "original default (radius 0.25, sigma 0.05)": PinOptions(init_radius=0.25, sigma=0.05),
    "centred, sigma 0.05": PinOptions(init_radius=0.0, sigma=0.05),
    "centred, sigma 0.25": PinOptions(init_radius=0.0, sigma=0.25),
    "centred, sigma 1": PinOptions(init_radius=0.0, sigma=1.0),
    "centred, sigma 2": PinOptions(init_radius=0.0, sigma=2.0),
}
RANDOM_SEARCH = "random search (uniform in [-1, 1]^N)"


@dataclasses.dataclass
class Task:
    genome: object
    renderer: EmbeddedRenderer
    objective: Objective
    threshold: float


def make_tasks(model: EmbeddedModel, batch: int, steps: int) -> list[Task]:
    renderer = EmbeddedRenderer(model, list(range(batch)), steps=steps)
    tasks = []
    for prompt, negative in PROMPTS:
        genome = build_genome(prompt, negative)
        order = model.log_prior(prompt).argsort(descending=True)
        for rank in TARGET_RANKS:
            objective = Objective(model.prototypes[order[rank]][None])
            baseline = objective.score(renderer.render([genome.prompt([0.0] * len(genome))])[0].images).loss
            tasks.append(Task(genome, renderer, objective, 0.5 * baseline))
    return tasks


def losses_of(task: Task, gene_vectors) -> list[float]:
    rendered = task.renderer.render([task.genome.prompt(genes) for genes in gene_vectors])
    return [task.objective.score(batch.images).loss for batch in rendered]


def evaluations_to_threshold(task: Task, options: PinOptions, budget: int) -> int:
    resolved = resolve(dataclasses.replace(options, log=False), Context(len(task.genome)))
    search = Search(len(task.genome), dataclasses.replace(resolved, generations=10**6))
    used = 0
    while used < budget:
        candidates = search.ask()
        losses = losses_of(task, [c.rendered for c in candidates])
        for loss in losses:
            used += 1
            if loss <= task.threshold:
                return used
        search.tell(candidates, losses)
    return budget


def random_search(task: Task, seed: int, budget: int, chunk: int = 10) -> int:
    rng = np.random.default_rng(seed)
    used = 0
    while used < budget:
        for loss in losses_of(task, rng.uniform(-1, 1, (chunk, len(task.genome)))):
            used += 1
            if loss <= task.threshold:
                return used
    return budget


def run(seeds: int, budget: int, batch: int, steps: int, size: int) -> dict[str, list[int]]:
    model = EmbeddedModel(size=size)
    tasks = make_tasks(model, batch, steps)
    results: dict[str, list[int]] = {name: [] for name in [*METHODS, RANDOM_SEARCH]}
    for number, task in enumerate(tasks):
        for seed in range(seeds):
            for name, options in METHODS.items():
                results[name].append(evaluations_to_threshold(task, dataclasses.replace(options, cma_seed=seed),
                                                              budget))
            results[RANDOM_SEARCH].append(random_search(task, seed, budget))
        print(f"task {number + 1}/{len(tasks)}: " + ", ".join(f"{np.median(v[-seeds:]):.0f}"
                                                           for v in results.values()), flush=True)
    return results


def table(results: dict[str, list[int]], budget: int) -> str:
    reference = np.median(results["project default"])
    lines = ["| method | median evaluations | reached threshold | median vs project default |", "|---|---|---|---|"]
    for name, values in results.items():
        values = np.asarray(values)
        lines.append(f"| {name} | {np.median(values):.0f} | {np.mean(values < budget):.0%} | "
                     f"{np.median(values) / reference:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=300, help="evaluations per run")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--write", action="store_true", help="append the table to docs/BENCHMARKS.md")
    args = parser.parse_args()
    started = time.perf_counter()
    results = run(args.seeds, args.budget, args.batch, args.steps, args.size)
    text = table(results, args.budget)
    print(text)
    if args.write:
        section = (f"\n### efficiency — {date.today()} — {machine()}\n\n"
                   f"{len(PROMPTS) * len(TARGET_RANKS)} targets x {args.seeds} CMA seeds, budget {args.budget} "
                   f"evaluations, threshold = half the unperturbed prompt's loss; embedded model {args.size}x"
                   f"{args.size}, batch {args.batch}, {args.steps} steps DPM++ 2M "
                   f"({time.perf_counter() - started:.0f} s).\n\n{text}\n")
        append_section("## efficiency", section)


if __name__ == "__main__":
    main()
