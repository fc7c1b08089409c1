"""CMA-ES over gene vectors (DEAP), with the original extension's options and its multi-objective size limiter.

Gene value 0 is the user's prompt; a word's weight is |base weight + gene|. DEAP's `generate` draws from numpy's
global RNG, which every thread of a WebUI process shares: a search draws its generations here instead
(`_generate`: DEAP's formulas, the same draws in the same order) from a `RandomState` of its own, so a run
neither depends on nor changes the process's global state, even while other threads draw from it. Individuals
use classes defined here, not DEAP's `creator`, whose namespace is global to the process (a WebUI process runs
many jobs).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
from deap import base, cma, tools
from scipy.stats import qmc

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
    """Ask/tell CMA-ES. `ask()` gives a generation's candidates, `tell(candidates, losses)` updates the strategy.

    Besides DEAP's CMA-ES it decides:
    - the first look: with `first_look` > 0 the first generation is that many points (at most half the
      budget) of a Latin hypercube (each gene's range cut into as many slices, each slice tried once) over the
      box of ±`box` around your prompt, and CMA-ES starts at the best of them;
    - when to stop (`stop`, once `done`): the evaluation budget (`generations` × λ) is spent; the best loss
      reached `target_loss`, or `stop_share` × `reference_loss` (the unperturbed prompt's loss, which the engine
      sets after rendering it: the run is pinned; `ends_run` tells it of each loss, so the engine stops at the
      individual that pinned it, inside its generation); or it has not improved by more than `tolerance` for
      `patience` generations, or `patience` generations in a row were flat (all losses within `tolerance`) —
      with `restarts` left, such a stall restarts CMA-ES instead (IPOP: twice the population, from a random
      point of the box);
    - its whole state, for a resumed run (`snapshot`, `restore`).
    """

    def __init__(self, dimension: int, options: PinOptions):
        """`options` resolved for `dimension` genes (lib_pinning.options.resolve): only DEAP's constants may be -1.

        Raises OptionError when DEAP's learning rates, explicit or from its formulas, cannot work together.
        """
        if AUTO in (options.generations, options.lambda_, options.mu, options.cma_seed):
            raise ValueError("the search needs resolved options (lib_pinning.options.resolve)")
        self.options = options
        self.dimension = dimension
        self.generation = 0
        self.evaluations = 0
        self.budget = options.generations * options.lambda_
        self.logbook = tools.Logbook()
        self.logbook.header = ["gen", "evals", "min", "avg", "std", "max", "sigma", "axis_ratio"]
        rng = np.random.default_rng(self.options.cma_seed)
        self._random = np.random.RandomState(rng.integers(2**32))  # every draw of CMA-ES and of restarts
        self._look_seed = int(rng.integers(2**32))
        centroid = rng.uniform(-self.options.init_radius, self.options.init_radius, dimension)
        self._multi_objective = self.options.size_limit > 0
        self.best_loss = math.inf          # the lowest loss told so far
        self.reference_loss: float | None = None  # the unperturbed prompt's loss, set by the engine
        self._stalled = 0                  # generations since it last improved by more than the tolerance
        self._flat = 0                     # generations in a row whose losses all lay within the tolerance
        self.restarts = 0                  # restarts done
        self.lambda_ = self.options.lambda_  # the population now (IPOP doubles it at each restart)
        self.stop: str | None = None       # why the search is done: a cause of lib_pinning.record.CAUSES
        self.drawn_around: list[int] = []  # the last told generation's candidates the next is drawn around
        # the first look takes at most half the budget, so that CMA-ES always gets the other half
        self.look_size = min(self.options.first_look, self.budget // 2)
        self._looking = self.look_size >= 2 and not self._multi_objective
        if self._multi_objective:
            self._strategy = None  # built from the first evaluated generation
            self._centroid = centroid
        else:
            self._strategy = self._new_strategy(centroid)
            self._check_learning_rates()

    def _new_strategy(self, centroid) -> cma.Strategy:
        return cma.Strategy(centroid=np.asarray(centroid, dtype=float), sigma=self.options.sigma,
                            **self._deap_params())

    def _deap_params(self) -> dict:
        params = {"lambda_": self.lambda_, "mu": max(1, round(self.options.mu * self.lambda_ / self.options.lambda_)),
                  "weights": self.options.weights}
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

    # -- the whole state, for resuming a run exactly ----------------------------------------------------------
    _COUNTERS = ("generation", "evaluations", "best_loss", "_stalled", "_flat", "restarts", "lambda_", "stop",
                 "_looking")

    def snapshot(self) -> dict:
        """Everything the search would need to go on exactly as it would have: counters, RNG, strategy.

        JSON values only (floats print exactly), so run.json can hold it.
        """
        strategy = None
        if self._strategy is not None:
            strategy = {name: _encode(value) for name, value in vars(self._strategy).items() if not callable(value)}
        counters = {name: getattr(self, name) for name in self._COUNTERS}
        counters["best_loss"] = None if math.isinf(self.best_loss) else self.best_loss
        return {**counters, "reference_loss": self.reference_loss, "rng": _encode(list(self._random.get_state())),
                "strategy": strategy, "centroid": _encode(getattr(self, "_centroid", None))}

    def restore(self, snapshot: dict) -> None:
        """Go on from a snapshot this search's options and dimension made (see `snapshot`)."""
        for name in self._COUNTERS:
            setattr(self, name, snapshot[name])
        self.best_loss = math.inf if snapshot["best_loss"] is None else snapshot["best_loss"]
        self.reference_loss = snapshot.get("reference_loss")  # absent from runs of earlier versions: no stop share
        if self.stop == "generations":  # the budget is this search's own: a larger one goes on
            self.stop = None
        state = _decode(snapshot["rng"])
        self._random.set_state((state[0], np.asarray(state[1], dtype=np.uint32), *state[2:]))
        values = snapshot["strategy"]
        if values is None:
            self._strategy = None
            self._centroid = _decode(snapshot["centroid"])
            return
        values = {name: _decode(value) for name, value in values.items()}
        if self._multi_objective:
            self._strategy = cma.StrategyMultiObjective(values["parents"], self.options.sigma,
                                                        mu=values["mu"], lambda_=values["lambda_"])
        for name, value in values.items():
            setattr(self._strategy, name, value)

    # -- ask and tell --------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        if self.stop is None and self.evaluations + self.next_size > self.budget:
            self.stop = "generations"
        return self.stop is not None

    @property
    def next_size(self) -> int:
        """The candidates of the next generation: the first look's, or CMA-ES's population."""
        return self.look_size if self._looking else self.lambda_

    @property
    def sigma(self) -> float:
        if self._strategy is None:
            return self.options.sigma
        if self._multi_objective:
            return float(np.mean(self._strategy.sigmas))
        return float(self._strategy.sigma)

    def ask(self) -> list[Candidate]:
        if self._looking:
            points = qmc.LatinHypercube(self.dimension, seed=self._look_seed).random(self.look_size)
            individuals = [_Individual((2 * point - 1) * self.options.box) for point in points]
        elif self._strategy is None:  # size limiter: the first parents come from the initial distribution
            noise = self._random.standard_normal((self.lambda_, self.dimension))
            individuals = [_SizeLimitedIndividual(self._centroid + self.options.sigma * z) for z in noise]
        else:
            kind = _SizeLimitedIndividual if self._multi_objective else _Individual
            individuals = _generate(self._strategy, kind, self._random)
        return [self._candidate(ind) for ind in individuals]

    def injected(self, genes) -> Candidate:
        """A candidate at `genes` in place of one `ask` drew (bred children): told like any other."""
        return self._candidate(_Individual(np.asarray(genes, dtype=float)))

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

    def ends_run(self, loss: float) -> bool:
        """True when this loss alone ends the run: it reaches the loss target or the stop share (the run is pinned).

        The engine scores a generation's candidates in order and stops at the first such one: the rest of the
        generation is not rendered, and `tell` takes the generation up to it.
        """
        return self._reached(loss) is not None

    def _reached(self, best: float) -> str | None:
        """The stop cause a best loss reaches by itself: "target", "pinned" or None."""
        options = self.options
        if options.target_loss > 0 and best <= options.target_loss:
            return "target"
        reference = self.reference_loss  # None (not known) or 0: no share of it to stop at
        if options.stop_share > 0 and reference and best <= options.stop_share * reference:
            return "pinned"
        return None

    def tell(self, candidates: list[Candidate], losses: list[float]) -> None:
        """Update the search with a generation's losses. A generation cut short (fewer candidates than `ask` gave)
        is taken only when its last loss ends the run (`ends_run`): it then updates nothing but the counters."""
        if len(candidates) != len(losses):
            raise ValueError("one loss per candidate is needed")
        cut = len(candidates) < self.next_size
        if cut and not (losses and self.ends_run(losses[-1])):
            raise ValueError(f"a generation of {self.next_size} candidates can be cut short only at a loss that "
                             "ends the run")
        for candidate, loss in zip(candidates, losses):
            if not math.isfinite(loss):
                raise ValueError(f"the loss of an individual is {loss}: the objective cannot rank it")
            penalised = loss + candidate.penalty
            if self._multi_objective:
                candidate.individual.fitness.values = (penalised, float(np.linalg.norm(candidate.rendered)))
            else:
                candidate.individual.fitness.values = (penalised,)
        if cut:  # cut short where the run ends (`_judge` stops it): nothing to learn from it, no generation follows
            self.drawn_around = []
        else:
            self._update([c.individual for c in candidates])
        self.evaluations += len(candidates)
        self._record(losses)
        self.generation += 1
        self._judge(losses)

    def _update(self, individuals: list) -> None:
        """Update the strategy with a whole generation's individuals, their fitness set."""
        # DEAP sorts a generation by fitness (a stable sort): its first mu make the next centroid.
        by_fitness = sorted(range(len(individuals)), key=lambda index: individuals[index].fitness.values[0])
        self.drawn_around = [] if self._strategy is None or self._multi_objective else by_fitness[:self._strategy.mu]
        if self._looking:  # CMA-ES starts at the best point of the first look
            self._strategy = self._new_strategy(individuals[by_fitness[0]])
            self._looking = False
            self.drawn_around = by_fitness[:1]
        elif self._strategy is None:
            params = {"mu": len(individuals), "lambda_": self.options.lambda_}
            self._strategy = cma.StrategyMultiObjective(individuals, self.options.sigma, **params)
        else:
            self._strategy.update(individuals)  # DEAP's update draws nothing

    def _judge(self, losses: list[float]) -> None:
        """Stop or restart after a generation, by the stop criteria (see the class docstring)."""
        options = self.options
        lowest = min(losses)
        self._stalled = 0 if lowest < self.best_loss - options.tolerance else self._stalled + 1
        self._flat = self._flat + 1 if max(losses) - lowest <= options.tolerance else 0
        self.best_loss = min(self.best_loss, lowest)
        self.stop = self._reached(self.best_loss)
        if self.stop is not None:
            return
        stalled = options.patience and (self._stalled >= options.patience or self._flat >= options.patience)
        if not stalled:
            return
        if self.restarts < options.restarts and not self._multi_objective:
            self.restarts += 1
            self.lambda_ *= 2
            centroid = self._random.uniform(-options.box, options.box, self.dimension)
            self._strategy = self._new_strategy(centroid)
            self._stalled = self._flat = 0
            self.drawn_around = []
            log.info("restart %d: no improvement above %g in %d generations; CMA-ES starts again with %d children "
                     "per generation", self.restarts, options.tolerance, options.patience, self.lambda_)
            return
        self.stop = "flat" if self._flat >= options.patience else "stagnation"

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


def _generate(strategy, kind, random: np.random.RandomState) -> list:
    """`strategy.generate(kind)` of DEAP 1.4 drawing from `random` instead of numpy's global RNG.

    The same formulas and the same draws in the same order, so a run recorded while DEAP drew from a swapped-in
    global state resumes identically (tests/test_search.py checks it against DEAP's own `generate`).
    """
    if not isinstance(strategy, cma.StrategyMultiObjective):
        noise = random.standard_normal((strategy.lambda_, strategy.dim))
        return [kind(point) for point in strategy.centroid + strategy.sigma * np.dot(noise, strategy.BD.T)]
    noise = random.randn(strategy.lambda_, strategy.dim)
    for index, parent in enumerate(strategy.parents):
        parent._ps = "p", index
    if strategy.lambda_ == strategy.mu:  # each parent has one child
        chosen = range(strategy.lambda_)
    else:  # parents drawn from the first front, one draw per child
        front = tools.sortLogNondominated(strategy.parents, len(strategy.parents), first_front_only=True)
        chosen = [front[random.randint(0, len(front))]._ps[1] for _ in range(strategy.lambda_)]
    children = []
    for row, parent in zip(noise, chosen):
        children.append(kind(strategy.parents[parent] + strategy.sigmas[parent] * np.dot(strategy.A[parent], row)))
        children[-1]._ps = "o", parent
    return children


def _encode(value):
    """A strategy's attribute as JSON: arrays with their dtype, individuals with their class and fitness."""
    if isinstance(value, np.ndarray):  # with its memory order: BLAS rounds differently for another layout
        order = "F" if value.flags.f_contiguous and not value.flags.c_contiguous else "C"
        return {"ndarray": value.tolist(), "dtype": str(value.dtype), "order": order}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, _Individual):
        return {"individual": [float(gene) for gene in value], "multi": isinstance(value, _SizeLimitedIndividual),
                "fitness": list(value.fitness.values)}
    if isinstance(value, (list, tuple)):
        return [_encode(item) for item in value]
    if isinstance(value, dict):
        return {"dict": {key: _encode(item) for key, item in value.items()}}
    return value


def _decode(value):
    if isinstance(value, list):
        return [_decode(item) for item in value]
    if isinstance(value, dict):
        if "ndarray" in value:
            return np.asarray(value["ndarray"], dtype=value["dtype"], order=value.get("order", "C"))
        if "individual" in value:
            individual = (_SizeLimitedIndividual if value["multi"] else _Individual)(value["individual"])
            if value["fitness"]:
                individual.fitness.values = tuple(value["fitness"])
            return individual
        return {key: _decode(item) for key, item in value["dict"].items()}
    return value
