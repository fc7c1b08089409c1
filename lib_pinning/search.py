"""CMA-ES over gene vectors (DEAP), with the original extension's options and its multi-objective size limiter.

Gene value 0 is the user's prompt; a word's weight is |base weight + gene|. DEAP samples from numpy's global
RNG: every DEAP call that draws runs with this search's own RNG state swapped in and the caller's swapped back,
so a run neither depends on nor changes the process's global state. Individuals use classes defined here, not
DEAP's `creator`, whose namespace is global to the process (a WebUI process runs many jobs).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
from deap import base, cma, tools

WEIGHT_SCHEMES = ("superlinear", "linear", "equal")


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
class SearchOptions:
    """Options of the original extension (None = its formula, computed from the number of genes N)."""

    cma_seed: int = 0
    generations: int | None = None       # 16 * floor(ln N), at least 16 (the formula gives 0 for N < 3)
    # The original's defaults were sigma 0.05 and a centroid drawn within +-0.25 of the prompt; starting at the
    # user's prompt with sigma 0.5 reached the target in several times fewer evaluations (bench/efficiency.py).
    sigma: float = 0.5                   # initial population standard deviation
    init_radius: float = 0.0             # centroid drawn uniformly from [-r, r]^N; 0 = the user's prompt
    lambda_: int | None = None           # int(4 + 3 ln N) children per generation
    mu: int | None = None                # int(lambda_ / 2) parents
    cmatrix: list[list[float]] | None = None  # initial covariance, identity(N)
    weights: str = "superlinear"         # recombination weights: superlinear, linear or equal
    cs: float | None = None
    damps: float | None = None
    ccum: float | None = None
    ccov1: float | None = None
    ccovmu: float | None = None
    size_limit: float = 0.0              # > 0: multi-objective CMA-ES keeping genes within this L2 distance
    size_limit_error: float | None = None   # tolerance of the limit, size_limit / 100
    size_limit_weight: float | None = None  # penalty weight, size_limit * 10
    log: bool = True                     # print the CMA logbook to the console

    def resolved(self, dimension: int) -> "SearchOptions":
        """A copy with every formula default filled in for `dimension` genes; raises ValueError on bad values."""
        if dimension < 1:
            raise ValueError("there is nothing to search: the genome has no genes")
        lambda_ = self.lambda_ if self.lambda_ is not None else int(4 + 3 * math.log(dimension))
        generations = self.generations if self.generations is not None else default_generations(dimension)
        resolved = SearchOptions(**{**asdict(self), "lambda_": lambda_, "generations": generations,
                                    "mu": self.mu if self.mu is not None else lambda_ // 2})
        if self.size_limit > 0:
            if self.size_limit_error is None:
                resolved.size_limit_error = self.size_limit / 100
            if self.size_limit_weight is None:
                resolved.size_limit_weight = self.size_limit * 10
        resolved._validate(dimension)
        return resolved

    def _validate(self, dimension: int) -> None:
        checks = [
            (self.generations >= 1, f"generations must be at least 1, got {self.generations}"),
            (self.lambda_ >= 2, f"lambda_ (children per generation) must be at least 2, got {self.lambda_}"),
            (1 <= self.mu <= self.lambda_, f"mu must be between 1 and lambda_ ({self.lambda_}), got {self.mu}"),
            (self.sigma > 0 and math.isfinite(self.sigma), f"initial sigma must be positive, got {self.sigma}"),
            (0 <= self.init_radius < math.inf, f"initial centroid radius must be >= 0, got {self.init_radius}"),
            (self.weights in WEIGHT_SCHEMES, f"weights must be one of {WEIGHT_SCHEMES}, got {self.weights!r}"),
            (0 <= self.size_limit < math.inf, f"size limit must be >= 0, got {self.size_limit}"),
        ]
        for name in ("size_limit_error", "size_limit_weight"):
            value = getattr(self, name)
            checks.append((value is None or 0 <= value < math.inf, f"{name} must be >= 0, got {value}"))
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        for name in ("cs", "damps", "ccum", "ccov1", "ccovmu"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if self.cmatrix is not None:
            matrix = np.asarray(self.cmatrix, dtype=float)
            if matrix.shape != (dimension, dimension):
                raise ValueError(f"cmatrix must be {dimension}x{dimension}, got shape {matrix.shape}")
            if not np.allclose(matrix, matrix.T) or np.linalg.eigvalsh(matrix).min() <= 0:
                raise ValueError("cmatrix must be symmetric positive definite")


def default_generations(dimension: int) -> int:
    return max(16, 16 * math.floor(math.log(dimension)))


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

    def __init__(self, dimension: int, options: SearchOptions | None = None):
        self.options = (options or SearchOptions()).resolved(dimension)
        self.dimension = dimension
        self.generation = 0
        self.logbook = tools.Logbook()
        self.logbook.header = ["gen", "evals", "min", "avg", "std", "max", "sigma", "axis_ratio"]
        self.best: Candidate | None = None
        self.best_loss = math.inf
        self.log_writer: Callable[[str], None] = print
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

    def _deap_params(self) -> dict:
        names = ("lambda_", "mu", "weights", "cs", "damps", "ccum", "ccov1", "ccovmu")
        params = {name: getattr(self.options, name) for name in names if getattr(self.options, name) is not None}
        if self.options.cmatrix is not None:
            params["cmatrix"] = np.asarray(self.options.cmatrix, dtype=float)
        return params

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
            if loss < self.best_loss:
                self.best_loss, self.best = loss, candidate
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
            self.log_writer(self.logbook.stream)

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
