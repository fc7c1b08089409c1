"""Efficiency benchmark: how often and how soon a search pins its target (BENCHMARKS.md, "efficiency").

Embedded model; each task pins a prompt to one of the model's prototypes of moderate prior; the thresholds are
half (and a fifth) of the unperturbed prompt's loss. Each method is a set of search options (lib_pinning.options)
driven through the real `Search`, with its own stop criteria, at a budget of evaluations; random search draws
uniformly in the box of sane weights. Per method, over tasks x CMA seeds:

- success: the share of runs that reached the threshold within the budget;
- median evaluations to the threshold (a run that never reached it counts as the whole budget);
- ERT, the expected running time: every evaluation any run spent, divided by the successes;
- after last improvement: the median share of a run's evaluations spent after its best loss last improved;
- used: the median evaluations a run spent (a run that stops by itself spends less than the budget).

    .venv/bin/python bench/efficiency.py [--seeds 5] [--batch 8] [--methods NAME ...] [--screened] [--write]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from datetime import date

import numpy as np

from benchlib import append_section, machine

from lib_pinning.embedded import EmbeddedModel, EmbeddedRenderer  # noqa: E402
from lib_pinning.genome import build_genome  # noqa: E402
from lib_pinning.objective import Objective  # noqa: E402
from lib_pinning.options import Context, PinOptions, parse, resolve  # noqa: E402
from lib_pinning.search import Search  # noqa: E402

PROMPTS = [
    ("a quiet painting of round shapes, warm colours, soft light, simple", "noise, stripes"),
    ("bold geometric poster, bright red and deep blue, sharp edges", "blurry"),
    ("a misty landscape at dawn, pale green hills, a small house", "dark, harsh"),
]
TARGET_RANKS = (1, 2, 3, 4)  # prototypes of moderate prior: reachable, not given
ORIGINAL = {"init_radius": 0.25, "sigma": 0.05}
METHODS = {  # option values by name; whatever is not given is the project's default
    "original defaults (radius 0.25, sigma 0.05)": {**ORIGINAL, "first_look": 0, "patience": 0, "restarts": 0},
    "0.1 defaults (sigma 0.5, no stop)": {"sigma": 0.5, "first_look": 0, "patience": 0, "restarts": 0},
    "project defaults": {},
}
RANDOM_SEARCH = "random search (uniform in the box)"
SCREENED = {  # what the defaults were chosen from (docs/BENCHMARKS.md, "efficiency screening"); --screened runs them
    "sigma 1 at the prompt, no stop": {"sigma": 1.0, "first_look": 0, "patience": 0, "restarts": 0},
    "look 16, box 1, sigma 0.5, patience 8": {"first_look": 16, "box": 1.0, "sigma": 0.5, "patience": 8,
                                              "restarts": 0},
    "look 32, box 1.5, sigma 0.5, patience 6, 3 restarts": {"first_look": 32, "box": 1.5, "sigma": 0.5},
    "look 32, box 2, sigma 0.7, patience 6, 3 restarts": {"sigma": 0.7},
    "look 64, box 2, sigma 0.7, patience 6, 2 restarts": {"first_look": 64, "sigma": 0.7, "restarts": 2},
    "look 16, box 2, sigma 1, patience 4, 5 restarts": {"first_look": 16, "patience": 4, "restarts": 5},
    "look 32, box 2.5, sigma 1, patience 6, 3 restarts": {"box": 2.5},
    "look 16, box 3, sigma 1, patience 6, 3 restarts": {"first_look": 16, "box": 3.0},
}
SCREENED_BOXES = (1.0, 1.5, 2.0, 3.0)  # random search in these boxes


@dataclasses.dataclass
class Task:
    genome: object
    renderer: EmbeddedRenderer
    objective: Objective
    baseline: float


@dataclasses.dataclass
class Run:
    hits: dict          # threshold share -> the evaluation that first reached it, or None
    used: int           # evaluations spent
    last_improvement: int


def make_tasks(model: EmbeddedModel, batch: int, steps: int) -> list[Task]:
    renderer = EmbeddedRenderer(model, list(range(batch)), steps=steps)
    tasks = []
    for prompt, negative in PROMPTS:
        genome = build_genome(prompt, negative)
        order = model.log_prior(prompt).argsort(descending=True)
        for rank in TARGET_RANKS:
            objective = Objective(model.prototypes[order[rank]][None])
            baseline = objective.score(renderer.render([genome.prompt([0.0] * len(genome))])[0].images).loss
            tasks.append(Task(genome, renderer, objective, baseline))
    return tasks


class Counter:
    """Scores gene vectors within a budget, noting when each threshold was first reached and the last improvement
    (a loss lower than the best by more than `tolerance`: smaller gains are the same picture to FLIP)."""

    def __init__(self, task: Task, budget: int, shares=(0.5, 0.2), tolerance: float = 1e-3):
        self.task, self.budget, self.used, self.best, self.last_improvement = task, budget, 0, math.inf, 0
        self.tolerance = tolerance
        self.hits = {share: None for share in shares}

    @property
    def spent(self) -> bool:
        return self.used >= self.budget

    def __call__(self, gene_vectors) -> list[float]:
        vectors = list(gene_vectors)[: self.budget - self.used]
        rendered = self.task.renderer.render([self.task.genome.prompt(genes) for genes in vectors])
        losses = [self.task.objective.score(batch.images).loss for batch in rendered]
        for loss in losses:
            self.used += 1
            if loss < self.best - self.tolerance:
                self.best, self.last_improvement = loss, self.used
            for share, hit in self.hits.items():
                if hit is None and loss <= share * self.task.baseline:
                    self.hits[share] = self.used
        return losses

    def run(self) -> Run:
        return Run(dict(self.hits), self.used, self.last_improvement)


def search_run(task: Task, values: dict, seed: int, budget: int) -> Run:
    dimension = len(task.genome)
    options = resolve(parse(PinOptions, {"log": False, "cma_seed": seed, **values}), Context(dimension))
    generations = math.ceil(budget / options.lambda_)
    search = Search(dimension, dataclasses.replace(options, generations=generations))
    counter = Counter(task, budget)
    while not search.done and not counter.spent:
        candidates = search.ask()
        losses = counter([c.rendered for c in candidates])
        if len(losses) < len(candidates):  # the budget ran out inside this generation
            break
        search.tell(candidates, losses)
    return counter.run()


def random_run(task: Task, seed: int, budget: int, box: float) -> Run:
    rng = np.random.default_rng(seed)
    counter = Counter(task, budget)
    while not counter.spent:
        counter(rng.uniform(-box, box, (10, len(task.genome))))
    return counter.run()


def summary(runs: list[Run], budget: int, share: float = 0.5) -> dict:
    hits = [run.hits[share] for run in runs]
    successes = sum(hit is not None for hit in hits)
    return {"success": successes / len(runs),
            "median": float(np.median([hit if hit is not None else budget for hit in hits])),
            "ert": sum(run.used for run in runs) / successes if successes else math.inf,
            "after": float(np.median([(run.used - run.last_improvement) / run.used for run in runs])),
            "used": float(np.median([run.used for run in runs])),
            "success_fifth": sum(run.hits[0.2] is not None for run in runs) / len(runs)}


def table(results: dict[str, list[Run]], budget: int) -> str:
    lines = ["| method | reached ½ | median evaluations | ERT | after last improvement | used | reached ⅕ |",
             "|---|---|---|---|---|---|---|"]
    for name, runs in results.items():
        s = summary(runs, budget)
        lines.append(f"| {name} | {s['success']:.0%} | {s['median']:.0f} | {s['ert']:.0f} | {s['after']:.0%} | "
                     f"{s['used']:.0f} | {s['success_fifth']:.0%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=300, help="evaluations per run")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--methods", nargs="*", help="only these methods (names of METHODS, or 'random')")
    parser.add_argument("--screened", action="store_true", help="also the methods the defaults were chosen from")
    parser.add_argument("--write", action="store_true", help="append the table to docs/BENCHMARKS.md")
    args = parser.parse_args()
    started = time.perf_counter()
    tasks = make_tasks(EmbeddedModel(size=args.size), args.batch, args.steps)
    box = PinOptions().box
    every = {**METHODS, **(SCREENED if args.screened else {})}
    methods = {name: values for name, values in every.items() if not args.methods or name in args.methods}
    results: dict[str, list[Run]] = {}
    for name, values in methods.items():
        results[name] = [search_run(task, values, seed, args.budget) for task in tasks for seed in range(args.seeds)]
        print(table({name: results[name]}, args.budget).splitlines()[-1], flush=True)
    if not args.methods or "random" in args.methods:
        for size in sorted({box, *(SCREENED_BOXES if args.screened else ())}):
            name = RANDOM_SEARCH if size == box else f"random search, box {size:g}"
            results[name] = [random_run(task, seed, args.budget, size) for task in tasks for seed in range(args.seeds)]
    text = table(results, args.budget)
    print(text)
    if args.write:
        section = (f"\n### efficiency — {date.today()} — {machine()}\n\n"
                   f"{len(tasks)} targets x {args.seeds} CMA seeds, budget {args.budget} evaluations, thresholds "
                   f"½ and ⅕ of the unperturbed prompt's loss; embedded model {args.size}x{args.size}, batch "
                   f"{args.batch}, {args.steps} steps DPM++ 2M ({time.perf_counter() - started:.0f} s).\n\n{text}\n")
        append_section("## efficiency", section)


if __name__ == "__main__":
    main()
