"""A genetic algorithm over tags present or absent with their weights (lib_pinning.tags), with DEAP's operators: the
search of a prompt evolution run that evolves tags ("Evolve: tags").

Each generation's best are selected (`tools.selBest`): those better than the worst — a chooser's favourites, or the
ranked ones — at most μ unless they tie with the best (every favourite is selected). Every child of the next
generation has two of them as its parents (drawn at random) and is their uniform crossover (DEAP's `cxUniform`:
each tag and its weight from one parent or the other; with one selected, every child is its mutant), then mutated:
each tag switches on or off with the mutation rate (DEAP's `mutFlipBit`: a present tag is left out, an absent one
comes in at weight 1) and each present tag's weight moves by a Gaussian of σ with the same rate (DEAP's
`mutGaussian`), its multiplier kept within WEIGHT_RANGE (a tag written with its own emphasis, `(x:1.5)`, is
multiplied by it). The first generation is the prompt itself, mutated. A child that repeats a parent or an earlier
sibling (which would render the same pictures again) is drawn again, up to TRIES times; the children of a breeding
(lib_pinning.breeding) are taken as bred.

It has the interface of lib_pinning.search.Search that the engine uses (ask, tell, ends_run, injected, done,
state, snapshot, restore). `drawn_around` holds, for each child of the next generation, the indices of its two parents
(one, when one was selected: its children are its mutants) in the generation just told.

DEAP's three random operators draw from Python's global `random`, which other threads of a WebUI use too (A1111
draws seed -1 there): swapping a state in and out would let their draws into a run and throw theirs away. So
`cx_uniform`, `mut_flip_bit` and `mut_gaussian` are DEAP's operators line for line with a `random.Random` of the
run's own, drawing exactly what DEAP draws from the same state (tests/test_tag_evolution.py holds DEAP as the
oracle).
"""

from __future__ import annotations

import math
import random

import numpy as np
from deap import base, tools

from .options import AUTO, PinOptions
from .search import Candidate

WEIGHT_RANGE = (0.1, 2.0)  # a present tag's weight; beyond ~2 Stable Diffusion burns the picture
TRIES = 20  # draws of a child before one that repeats a parent or a sibling is taken anyway


def _key(weights) -> tuple:
    """Weights as the prompt is written with them (4 decimals): equal keys render the same pictures."""
    return tuple(round(float(weight), 4) for weight in weights)


def cx_uniform(rng: random.Random, first: list, second: list, indpb: float) -> tuple[list, list]:
    """deap.tools.cxUniform with `rng`."""
    for index in range(min(len(first), len(second))):
        if rng.random() < indpb:
            first[index], second[index] = second[index], first[index]
    return first, second


def mut_flip_bit(rng: random.Random, individual: list, indpb: float) -> tuple[list]:
    """deap.tools.mutFlipBit with `rng`."""
    for index in range(len(individual)):
        if rng.random() < indpb:
            individual[index] = type(individual[index])(not individual[index])
    return individual,


def mut_gaussian(rng: random.Random, individual: list, mu: float, sigma: float, indpb: float) -> tuple[list]:
    """deap.tools.mutGaussian (one mu and sigma for all) with `rng`."""
    for index in range(len(individual)):
        if rng.random() < indpb:
            individual[index] += rng.gauss(mu, sigma)
    return individual,


class _Fitness(base.Fitness):
    weights = (-1.0,)


class _Tags(list):
    """A child as DEAP's operators take it: one weight per tag (0: absent)."""

    def __init__(self, values=()):
        super().__init__(float(value) for value in values)
        self.fitness = _Fitness()


class GeneticSearch:
    def __init__(self, base_weights: list[float], options: PinOptions):
        """`base_weights`: the genome's (1 a prompt's tag, 0 a pool tag); `options` resolved."""
        if AUTO in (options.generations, options.lambda_, options.cma_seed, options.mutation_rate):
            raise ValueError("the search needs resolved options (lib_pinning.options.resolve)")
        self.options = options
        self.base = np.asarray(base_weights, dtype=float)
        self.dimension = len(self.base)
        self.lambda_ = options.lambda_
        self.budget = options.generations * options.lambda_
        self.generation = 0
        self.evaluations = 0
        self.best_loss = math.inf
        self.restarts = 0
        self.stop: str | None = None
        self.drawn_around: list[list[int]] = []   # per child of the next generation: its parents' indices
        self._parents: dict[int, list[float]] = {}  # the selected of the last generation told: index -> weights
        self._rng = random.Random(options.cma_seed)

    # -- what the engine and the record read ------------------------------------------------------------
    @property
    def done(self) -> bool:
        if self.stop is None and self.evaluations + self.next_size > self.budget:
            self.stop = "generations"
        return self.stop is not None

    @property
    def next_size(self) -> int:
        return self.lambda_

    @property
    def sigma(self) -> float:
        return self.options.sigma

    def constants(self) -> dict:
        return {}

    def state(self) -> dict:
        """The selected parents' spread, in the record's terms (centroid and spread of the genes)."""
        genes = np.asarray([self._genes(weights) for weights in self._parents.values()] or [np.zeros(self.dimension)])
        return {"centroid": genes.mean(0).tolist(), "sigma": self.sigma, "axis_ratio": 1.0,
                "scales": [1.0] * self.dimension, "stds": genes.std(0).tolist()}

    # -- ask and tell ------------------------------------------------------------------------------------
    def ask(self) -> list[Candidate]:
        seen = {_key(weights) for weights in self._parents.values()} or {_key(np.abs(self.base))}
        children = []
        for pair in self.drawn_around if self._parents else [[]] * self.lambda_:
            for _ in range(TRIES):  # a child that repeats a parent or a sibling would render their pictures
                child = self._child(pair)
                if _key(child) not in seen:
                    break
            seen.add(_key(child))
            children.append(child)
        return [self._candidate(child) for child in children]

    def injected(self, genes) -> Candidate:
        """A candidate at `genes` in place of one `ask` drew (bred children): told like any other."""
        return self._candidate(_Tags(np.abs(self.base + np.asarray(genes, dtype=float))))

    def ends_run(self, loss: float) -> bool:
        """No loss ends a genetic search inside a generation (see lib_pinning.search.Search.ends_run)."""
        return False

    def tell(self, candidates: list[Candidate], losses: list[float]) -> None:
        if len(candidates) != len(losses):
            raise ValueError("one loss per candidate is needed")
        individuals = []
        for candidate, loss in zip(candidates, losses):
            if not math.isfinite(loss):
                raise ValueError(f"the loss of an individual is {loss}: the objective cannot rank it")
            individual = _Tags(np.abs(self.base + candidate.rendered))
            individual.fitness.values = (loss,)
            individual.index = len(individuals)
            individuals.append(individual)
        selected = tools.selBest(individuals, self._selected_count(losses))
        self._parents = {individual.index: list(individual) for individual in selected}
        indices = sorted(self._parents)
        self.drawn_around = [sorted(self._rng.sample(indices, 2)) if len(indices) > 1 else indices[:1]
                             for _ in range(self.lambda_)]
        self.evaluations += len(candidates)
        self.best_loss = min(self.best_loss, min(losses))
        self.generation += 1

    def _selected_count(self, losses: list[float]) -> int:
        """How many parents: those better than the worst (favourites, the ranked), at most μ of them unless they tie
        with the best (every favourite is a parent); all when none stands out."""
        better = sum(loss < max(losses) for loss in losses) or len(losses)
        tied = sum(loss == min(losses) for loss in losses)
        return min(better, max(self.options.mu, tied))

    def _child(self, pair: list[int]) -> _Tags:
        """The crossover of the pair's parents, mutated; of no parents (the first generation): the prompt's."""
        if not pair:
            return self._mutated(_Tags(np.abs(self.base)))
        first = _Tags(self._parents[pair[0]])
        if len(pair) > 1:
            first, _ = cx_uniform(self._rng, first, _Tags(self._parents[pair[1]]), 0.5)
        return self._mutated(first)

    def _mutated(self, child: _Tags) -> _Tags:
        rate = self.options.mutation_rate
        (child,) = mut_flip_bit(self._rng, child, rate)  # float(not w): present -> 0.0, absent -> 1.0
        present = [index for index, weight in enumerate(child) if weight > 0]
        (moved,) = mut_gaussian(self._rng, [child[index] for index in present], 0.0, self.options.sigma, rate)
        low, high = WEIGHT_RANGE
        for index, weight in zip(present, moved):
            child[index] = min(high, max(low, round(weight, 4)))
        return child

    def _genes(self, weights) -> np.ndarray:
        """Gene values for tag weights: weight = |base + gene|, with base + gene of the base's sign (≥ 0)."""
        return np.asarray(weights, dtype=float) - self.base

    def _candidate(self, child: _Tags) -> Candidate:
        genes = self._genes(child)
        return Candidate(genes, genes, 0.0, child)

    # -- the whole state, for resuming a run exactly ------------------------------------------------------
    def snapshot(self) -> dict:
        version, internal, gauss = self._rng.getstate()
        return {"generation": self.generation, "evaluations": self.evaluations, "stop": self.stop,
                "best_loss": None if math.isinf(self.best_loss) else self.best_loss,
                "random": [version, list(internal), gauss], "drawn_around": self.drawn_around,
                "parents": [[index, weights] for index, weights in sorted(self._parents.items())]}

    def restore(self, snapshot: dict) -> None:
        self.generation, self.evaluations = snapshot["generation"], snapshot["evaluations"]
        self.stop = None if snapshot["stop"] == "generations" else snapshot["stop"]  # a larger budget goes on
        self.best_loss = math.inf if snapshot["best_loss"] is None else snapshot["best_loss"]
        version, internal, gauss = snapshot["random"]
        self._rng.setstate((version, tuple(internal), gauss))
        self.drawn_around = [list(pair) for pair in snapshot["drawn_around"]]
        self._parents = {index: list(weights) for index, weights in snapshot["parents"]}
