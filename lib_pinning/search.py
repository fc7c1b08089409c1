"""CMA-ES over gene vectors (DEAP), with the original extension's options and its multi-objective size limiter.

Gene value 0 is the user's prompt; a word's weight is |base weight + gene|. DEAP samples from numpy's global
RNG: every DEAP call that draws runs with this search's own RNG state swapped in and the caller's swapped back,
so a run neither depends on nor changes the process's global state. Individuals use classes defined here, not
DEAP's `creator`, whose namespace is global to the process (a WebUI process runs many jobs).
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field

import numpy as np
from deap import base, cma, tools

from .options import AUTO, OptionError, PinOptions, spec_of

log = logging.getLogger(__name__)
DEAP_CONSTANTS = {"cs": "cs", "damps": "damps", "ccum": "cc", "ccov1": "ccov1", "ccovmu": "ccovmu"}  # option: attribute


class _LossFitness(base.Fitness):
    weights = (-1.0,)


class _LossAndSizeFitness(base.Fitness):
    weights = (-1.0, -1.0)


class _Individual(list):
    fitness_class: type[base.Fitness] = _LossFitness

    def __init__(self, values=()):
        super().__init__(float(v) for v in values)
        self.fitness = self.fitness_class()


class _SizeLimitedIndividual(_Individual):
    fitness_class = _LossAndSizeFitness


@dataclass
class Candidate:
    """One individual: the genes CMA-ES proposed and the genes that are rendered and scored.

    They differ only with the size limiter, which scores an out-of-limit proposal at its closest valid point
    and adds a penalty (DEAP's closest-valid-penalty scheme).
    """

    genes: np.ndarray
    rendered: np.ndarray
    penalty: float = 0.0
    individual: list = field(repr=False, default=None)


class Search:
    """Ask/tell CMA-ES. `ask()` gives a generation's candidates, `tell(candidates, losses)` updates the strategy."""

    def __init__(self, dimension: int, options: PinOptions):
        """`options` resolved for `dimension` genes (lib_pinning.options.resolve): only DEAP's constants may be -1.

        Raises OptionError when DEAP's learning rates, explicit or from its formulas, cannot work together.
        """
        if AUTO in (options.generations, options.lambda_, options.mu, options.cma_seed):
            raise ValueError("the search needs resolved options (lib_pinning.options.resolve)")
        self.options = options
        self.dimension = dimension
        self.generation = 0
        self.logbook = tools.Logbook()
        self.logbook.header = ["gen", "evals", "min", "avg", "std", "max", "sigma", "axis_ratio"]
        rng = np.random.default_rng(self.options.cma_seed)
        # DEAP's draws come from this private state (see _own_rng).
        self._rng_state = np.random.RandomState(rng.integers(2**32)).get_state()
        centroid = rng.uniform(-self.options.init_radius, self.options.init_radius, dimension)
        self._multi_objective = self.options.size_limit > 0
        if self._multi_objective:
            self._strategy = None  # built from the first evaluated generation
            self._centroid = centroid
        else:
            self._strategy = cma.Strategy(centroid=centroid, sigma=self.options.sigma, **self._deap_params())
            self._check_learning_rates()

    def _deap_params(self) -> dict:
        params = {"lambda_": self.options.lambda_, "mu": self.options.mu, "weights": self.options.weights}
        params.update({name: getattr(self.options, name) for name in DEAP_CONSTANTS
                       if getattr(self.options, name) != AUTO})
        if self.options.cmatrix is not None:
            params["cmatrix"] = np.asarray(self.options.cmatrix, dtype=float)
        return params

    def _check_learning_rates(self) -> None:
        """ccov1 + ccovmu must stay below 1: at 1 or more the covariance loses rank or turns indefinite and CMA-ES
        divides by zero mid-run (DEAP quietly lowers ccovmu to 1 - ccov1, which is already too much)."""
        ccov1 = self._strategy.ccov1
        ccovmu = self.options.ccovmu if self.options.ccovmu != AUTO else self._strategy.ccovmu
        if ccov1 + ccovmu >= 1:
            names = spec_of(PinOptions, "ccov1").title, spec_of(PinOptions, "ccovmu").title
            raise OptionError(f"{names[0]} + {names[1]} must be less than 1, got {ccov1:.4g} + {ccovmu:.4g} "
                              "(-1 leaves one to DEAP's formula)")

    def constants(self) -> dict:
        """The CMA-ES constants in use, DEAP's formulas resolved (for run.json)."""
        if self._multi_objective:
            return {}
        return {name: float(getattr(self._strategy, attribute)) for name, attribute in DEAP_CONSTANTS.items()}

    @contextlib.contextmanager
    def _own_rng(self):
        outside = np.random.get_state()
        np.random.set_state(self._rng_state)
        try:
            yield
        finally:
            self._rng_state = np.random.get_state()
            np.random.set_state(outside)

    @property
    def done(self) -> bool:
        return self.generation >= self.options.generations

    @property
    def sigma(self) -> float:
        if self._strategy is None:
            return self.options.sigma
        if self._multi_objective:
            return float(np.mean(self._strategy.sigmas))
        return float(self._strategy.sigma)

    def ask(self) -> list[Candidate]:
        with self._own_rng():
            if self._strategy is None:  # size limiter: the first parents come from the initial distribution
                noise = np.random.standard_normal((self.options.lambda_, self.dimension))
                individuals = [_SizeLimitedIndividual(self._centroid + self.options.sigma * z) for z in noise]
            else:
                kind = _SizeLimitedIndividual if self._multi_objective else _Individual
                individuals = self._strategy.generate(kind)
        return [self._candidate(ind) for ind in individuals]

    def _candidate(self, individual: list) -> Candidate:
        genes = np.asarray(individual, dtype=float)
        if not self._multi_objective:
            return Candidate(genes, genes, 0.0, individual)
        limit, tolerance = self.options.size_limit, self.options.size_limit_error
        size = float(np.linalg.norm(genes))
        if size <= limit + tolerance:
            return Candidate(genes, genes, 0.0, individual)
        closest_valid = genes * (limit / size)
        penalty = self.options.size_limit_weight * float(np.sum((genes - closest_valid) ** 2))
        return Candidate(genes, closest_valid, penalty, individual)

    def tell(self, candidates: list[Candidate], losses: list[float]) -> None:
        if len(candidates) != len(losses):
            raise ValueError("one loss per candidate is needed")
        for candidate, loss in zip(candidates, losses):
            if not math.isfinite(loss):
                raise ValueError(f"the loss of an individual is {loss}: the objective cannot rank it")
            penalised = loss + candidate.penalty
            if self._multi_objective:
                candidate.individual.fitness.values = (penalised, float(np.linalg.norm(candidate.rendered)))
            else:
                candidate.individual.fitness.values = (penalised,)
        individuals = [c.individual for c in candidates]
        with self._own_rng():
            if self._strategy is None:
                params = {"mu": len(individuals), "lambda_": self.options.lambda_}
                self._strategy = cma.StrategyMultiObjective(individuals, self.options.sigma, **params)
            else:
                self._strategy.update(individuals)
        self._record(losses)
        self.generation += 1

    def _record(self, losses: list[float]) -> None:
        values = np.asarray(losses, dtype=float)
        record = dict(gen=self.generation, evals=len(values), min=float(values.min()), avg=float(values.mean()),
                      std=float(values.std()), max=float(values.max()), sigma=self.sigma,
                      axis_ratio=self.axis_ratio())
        self.logbook.record(**record)
        if self.options.log:
            log.info(self.logbook.stream)

    def axis_ratio(self) -> float:
        """Ratio of the longest to the shortest principal axis of the search distribution."""
        if self._strategy is None or self._multi_objective:
            return 1.0
        return float(self._strategy.diagD.max() / self._strategy.diagD.min())

    def state(self) -> dict:
        """Summary of the distribution for the report: centroid, sigma, axis ratio, per-coordinate spread."""
        if self._strategy is None:
            return {"centroid": [0.0] * self.dimension, "sigma": self.sigma, "axis_ratio": 1.0,
                    "scales": [1.0] * self.dimension, "stds": [self.sigma] * self.dimension}
        if self._multi_objective:
            parents = np.asarray(self._strategy.parents, dtype=float)
            return {"centroid": parents.mean(0).tolist(), "sigma": self.sigma, "axis_ratio": 1.0,
                    "scales": [1.0] * self.dimension, "stds": parents.std(0).tolist()}
        strategy = self._strategy
        return {"centroid": np.asarray(strategy.centroid).tolist(), "sigma": float(strategy.sigma),
                "axis_ratio": self.axis_ratio(), "scales": np.sort(strategy.diagD).tolist(),
                "stds": (strategy.sigma * np.sqrt(np.diag(strategy.C))).tolist()}
