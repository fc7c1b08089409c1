"""Efficiency benchmark: how often and how soon a search pins its target (BENCHMARKS.md, "efficiency").

Embedded model; each task pins a prompt to one of the model's prototypes of moderate prior; the thresholds are
half (and a fifth) of the unperturbed prompt's loss. Each method is a set of search options (lib_pinning.options)
driven through the real `Search`, with its own stop criteria, at a budget of evaluations; random search draws
uniformly in the box of sane weights. Per method, over tasks x CMA seeds:

- success: the share of runs that reached the threshold within the budget;
- median evaluations to the threshold (a run that never reached it counts as the whole budget);
- ERT, the expected running time: every evaluation any run spent, divided by the successes;
- after last improvement: the median share of a run's evaluations spent after its best loss last improved;
- used: the median evaluations a run spent (a run that stops by itself spends less than the budget);
- improved after the first generation: the share of runs whose best loss last improved after their first
  generation (the first look, for a search that has one): how often the search itself found something better.

    .venv/bin/python bench/efficiency.py [--seeds 5] [--first-seed 0] [--batch 8] [--methods NAME ...] [--screened]
        [--optuna BOX ...] [--write]
    .venv/bin/python bench/efficiency.py --reach BOX ... [--reach-budget 2000] [--write]

`--reach` measures instead how low a long search gets each target within a box: a target it leaves above half the
unperturbed prompt's loss is at least rare there (a search can miss what exists: evidence, not a bound).
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
NO_STOP = {"first_look": 0, "patience": 0, "restarts": 0, "stop_share": 0}
WHOLE = "whole generations"  # not an option: the engine before 2026-12-01's second session, which stopped a pinned
# run at the end of its generation instead of at the individual that pinned it
METHODS = {  # option values by name; whatever is not given is the project's default
    "original defaults (radius 0.25, sigma 0.05)": {**ORIGINAL, **NO_STOP},
    "0.1 defaults (sigma 0.5, no stop)": {"sigma": 0.5, **NO_STOP},
    "the defaults of 2026-11-30 (patience 6, no stop share)": {"patience": 6, "stop_share": 0},
    "the defaults of 2026-12-01 (patience 6)": {"patience": 6, WHOLE: True},
    "the defaults of 2026-12-01, later (patience 4, pinned runs end with their generation)": {WHOLE: True},
    "project defaults": {},
}
RANDOM_SEARCH = "random search (uniform in the box)"
SCREENED = {  # what the defaults were chosen from (docs/BENCHMARKS.md, "efficiency screening"); --screened runs them
    "sigma 1 at the prompt, no stop": {"sigma": 1.0, **NO_STOP},
    "look 16, box 1, sigma 0.5, patience 8": {"first_look": 16, "box": 1.0, "sigma": 0.5, "patience": 8,
                                              "restarts": 0},
    "look 32, box 1.5, sigma 0.5, patience 6, 3 restarts": {"first_look": 32, "box": 1.5, "sigma": 0.5},
    "look 32, box 2, sigma 0.7, patience 6, 3 restarts": {"sigma": 0.7},
    "look 64, box 2, sigma 0.7, patience 6, 2 restarts": {"first_look": 64, "sigma": 0.7, "restarts": 2},
    "look 16, box 2, sigma 1, patience 4, 5 restarts": {"first_look": 16, "patience": 4, "restarts": 5},
    "look 32, box 2.5, sigma 1, patience 6, 3 restarts": {"box": 2.5},
    "look 16, box 3, sigma 1, patience 6, 3 restarts": {"first_look": 16, "box": 3.0},
    "the defaults, stop share 0.05": {"stop_share": 0.05},
    "the defaults, stop share 0.3": {"stop_share": 0.3},
}
# screened before the stop share existed, at the patience of then
SCREENED = {name: {"stop_share": 0, "patience": 6, WHOLE: True, **values} for name, values in SCREENED.items()}
SCREENED.update({name: {WHOLE: True, **values} for name, values in {  # screened with the stop share (0.1)
    "stop share, patience 3, 3 restarts": {"patience": 3},
    "stop share, patience 5, 3 restarts": {"patience": 5},
    "stop share, patience 6, 1 restart": {"patience": 6, "restarts": 1},
    "stop share, patience 4, 1 restart": {"restarts": 1},
    "stop share, patience 4, 0 restarts": {"restarts": 0},
    "stop share, patience 4, 3 restarts, look 16": {"first_look": 16},
}.items()})
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
    first: int          # evaluations of the first generation


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
        self.first = 0  # the first call's evaluations: the first generation

    @property
    def spent(self) -> bool:
        return self.used >= self.budget

    def __call__(self, gene_vectors, ends=lambda loss: False) -> list[float]:
        """The losses of the vectors the budget allows, in order, up to the first that `ends` the run (as the engine
        stops inside a generation: the rest is never rendered)."""
        vectors = list(gene_vectors)[: self.budget - self.used]
        rendered = self.task.renderer.render([self.task.genome.prompt(genes) for genes in vectors])
        losses = [self.task.objective.score(batch.images).loss for batch in rendered]
        cut = next((index + 1 for index, loss in enumerate(losses) if ends(loss)), len(losses))
        losses = losses[:cut]
        self.first = self.first or len(losses)
        for loss in losses:
            self.used += 1
            if loss < self.best - self.tolerance:
                self.best, self.last_improvement = loss, self.used
            for share, hit in self.hits.items():
                if hit is None and loss <= share * self.task.baseline:
                    self.hits[share] = self.used
        return losses

    def run(self) -> Run:
        return Run(dict(self.hits), self.used, self.last_improvement, self.first)


def search_run(task: Task, values: dict, seed: int, budget: int, clip: float | None = None,
               counter: Counter | None = None) -> Run:
    """One run of the real `Search`; with `clip`, every gene is clipped to ±clip before it is rendered. It stops
    where the engine does: at the individual that ends the run (with `WHOLE` in `values`: at its generation's end)."""
    dimension = len(task.genome)
    values = dict(values)
    whole = values.pop(WHOLE, False)
    options = resolve(parse(PinOptions, {"log": False, "cma_seed": seed, **values}), Context(dimension))
    generations = math.ceil(budget / options.lambda_)
    search = Search(dimension, dataclasses.replace(options, generations=generations))
    search.reference_loss = task.baseline  # as the engine sets it from the unperturbed prompt's batch
    counter = counter or Counter(task, budget)
    while not search.done and not counter.spent:
        candidates = search.ask()
        losses = counter([c.rendered if clip is None else np.clip(c.rendered, -clip, clip) for c in candidates],
                         (lambda loss: False) if whole else search.ends_run)
        if len(losses) < len(candidates) and not (losses and search.ends_run(losses[-1])):
            break  # the budget ran out inside this generation
        search.tell(candidates[:len(losses)], losses)
    return counter.run()


def random_run(task: Task, seed: int, budget: int, box: float) -> Run:
    rng = np.random.default_rng(seed)
    counter = Counter(task, budget)
    while not counter.spent:
        counter(rng.uniform(-box, box, (10, len(task.genome))))
    return counter.run()


def optuna_run(task: Task, seed: int, budget: int, box: float) -> Run:
    """Optuna's CmaEsSampler over ±box, its defaults otherwise (the issue's comparison; optuna is not a dependency
    of this project: `pip install optuna` to run it)."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    counter = Counter(task, budget)
    study = optuna.create_study(sampler=optuna.samplers.CmaEsSampler(seed=seed))
    names = [f"gene{index}" for index in range(len(task.genome))]
    while not counter.spent:
        study.optimize(lambda trial: counter([[trial.suggest_float(name, -box, box) for name in names]])[0],
                       n_trials=1)
    return counter.run()


def reach(task: Task, box: float, budget: int) -> float:
    """The lowest loss a long search finds within ±box, as a share of the unperturbed prompt's: a first look of
    half the budget, then CMA-ES (σ box/4) with restarts, genes clipped to the box. What it finds can be reached;
    a target it leaves above ½ is at least rare in that box (evidence, not proof: the search may miss it)."""
    values = {"first_look": budget // 2, "box": box, "sigma": box / 4, "patience": 6, "restarts": 5}
    counter = Counter(task, budget)
    search_run(task, values, 0, budget, clip=box, counter=counter)
    return counter.best / task.baseline


def summary(runs: list[Run], budget: int, share: float = 0.5) -> dict:
    hits = [run.hits[share] for run in runs]
    successes = sum(hit is not None for hit in hits)
    return {"success": successes / len(runs),
            "median": float(np.median([hit if hit is not None else budget for hit in hits])),
            "ert": sum(run.used for run in runs) / successes if successes else math.inf,
            "after": float(np.median([(run.used - run.last_improvement) / run.used for run in runs])),
            "used": float(np.median([run.used for run in runs])),
            "searched": sum(run.last_improvement > run.first for run in runs) / len(runs),
            "success_fifth": sum(run.hits[0.2] is not None for run in runs) / len(runs)}


def table(results: dict[str, list[Run]], budget: int) -> str:
    lines = ["| method | reached ½ | median evaluations | ERT | after last improvement | used | reached ⅕ | "
             "improved after the first generation |", "|---|---|---|---|---|---|---|---|"]
    for name, runs in results.items():
        s = summary(runs, budget)
        lines.append(f"| {name} | {s['success']:.0%} | {s['median']:.0f} | {s['ert']:.0f} | {s['after']:.0%} | "
                     f"{s['used']:.0f} | {s['success_fifth']:.0%} | {s['searched']:.0%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0, help="CMA seeds from this one on (a second sample)")
    parser.add_argument("--budget", type=int, default=300, help="evaluations per run")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--methods", nargs="*", help="only these methods (names of METHODS, or 'random')")
    parser.add_argument("--screened", action="store_true", help="also the methods the defaults were chosen from")
    parser.add_argument("--optuna", type=float, nargs="*", metavar="BOX", default=(),
                        help="also Optuna's CmaEsSampler within these boxes (needs optuna installed)")
    parser.add_argument("--reach", type=float, nargs="*", metavar="BOX",
                        help="instead: how low a long search gets each task within these boxes (its budget: "
                             "--reach-budget)")
    parser.add_argument("--reach-budget", type=int, default=2000)
    parser.add_argument("--write", action="store_true", help="append the table to docs/BENCHMARKS.md")
    args = parser.parse_args()
    started = time.perf_counter()
    tasks = make_tasks(EmbeddedModel(size=args.size), args.batch, args.steps)
    if args.reach:
        return reach_table(tasks, args, started)
    box = PinOptions().box
    every = {**METHODS, **(SCREENED if args.screened else {})}
    methods = {name: values for name, values in every.items() if not args.methods or name in args.methods}
    unknown = sorted(set(args.methods or ()) - set(every) - {"random"})
    if unknown:
        parser.error(f"no such method: {', '.join(unknown)} (the screened ones need --screened)")
    results: dict[str, list[Run]] = {}
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    for name, values in methods.items():
        results[name] = [search_run(task, values, seed, args.budget) for task in tasks for seed in seeds]
        print(table({name: results[name]}, args.budget).splitlines()[-1], flush=True)
    if not args.methods or "random" in args.methods:
        for size in sorted({box, *(SCREENED_BOXES if args.screened else ())}):
            name = RANDOM_SEARCH if size == box else f"random search, box {size:g}"
            results[name] = [random_run(task, seed, args.budget, size) for task in tasks for seed in seeds]
    for size in args.optuna:
        results[f"Optuna CmaEsSampler, box {size:g}"] = [optuna_run(task, seed, args.budget, size) for task in tasks
                                                         for seed in seeds]
    text = table(results, args.budget)
    print(text)
    if args.write:
        section = (f"\n### efficiency — {date.today()} — {machine()}\n\n"
                   f"{len(tasks)} targets x {args.seeds} CMA seeds ({seeds.start}–{seeds.stop - 1}), budget "
                   f"{args.budget} evaluations, thresholds ½ and ⅕ of the unperturbed prompt's loss; embedded model "
                   f"{args.size}x{args.size}, batch {args.batch}, {args.steps} steps DPM++ 2M "
                   f"({time.perf_counter() - started:.0f} s).\n\n{text}\n")
        append_section("## efficiency", section)


def reach_table(tasks: list[Task], args, started: float) -> None:
    shares = {box: [reach(task, box, args.reach_budget) for task in tasks] for box in args.reach}
    lines = ["| target | " + " | ".join(f"lowest in ±{box:g}" for box in shares) + " |",
             "|---|" + "---|" * len(shares)]
    for index, task in enumerate(tasks):
        prompt = PROMPTS[index // len(TARGET_RANKS)][0]
        lines.append(f"| {prompt.split(',')[0]}, prototype of rank {TARGET_RANKS[index % len(TARGET_RANKS)]} | "
                     + " | ".join(f"{values[index]:.3f}" for values in shares.values()) + " |")
    lines.append("| **targets this search brought below ½** | " + " | ".join(
        f"**{sum(value <= 0.5 for value in values)} of {len(values)}**" for values in shares.values()) + " |")
    text = "\n".join(lines)
    print(text)
    if args.write:
        append_section("## efficiency", (
            f"\n### reachable — {date.today()} — {machine()}\n\n"
            f"The lowest loss, as a share of the unperturbed prompt's, that a long search finds for each target within "
            f"a box ({args.reach_budget} evaluations: a first look of half of them, then CMA-ES with σ box/4 and 5 "
            f"restarts, genes clipped to the box; `bench/efficiency.py --reach`); batch {args.batch}, embedded model "
            f"{args.size}x{args.size} ({time.perf_counter() - started:.0f} s).\n\n{text}\n"))


if __name__ == "__main__":
    main()
