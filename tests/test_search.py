import copy
import json
import math

import numpy as np
import pytest
from deap import cma, creator

from lib_pinning import search as search_module
from lib_pinning.options import Context, OptionError, PinOptions, parse, resolve
from lib_pinning.search import Search


def options_for(dimension, **values):
    """The options as a user gives them (checked), with their formula defaults resolved for `dimension` genes."""
    return resolve(parse(PinOptions, {"log": False, **values}), Context(dimension))


def run_search(dimension, objective, **values):
    search = Search(dimension, options_for(dimension, **values))
    best = (math.inf, None)
    while search.generation < search.options.generations:
        candidates = search.ask()
        losses = [objective(c.rendered) for c in candidates]
        search.tell(candidates, losses)
        best = min(best, *zip(losses, [c.rendered for c in candidates]), key=lambda entry: entry[0])
    return search, best


def sphere(shift):
    return lambda genes: float(np.sum((genes - shift) ** 2))


def test_original_defaults_follow_the_formulas():
    options = options_for(8)
    assert options.lambda_ == int(4 + 3 * math.log(8)) == 10
    assert options.mu == 5
    assert options.generations == 16 * math.floor(math.log(8)) == 32
    assert options.sigma == 1.0 and options.init_radius == 0.0  # measured better than the original's 0.05, 0.25
    assert (options.first_look, options.box, options.patience, options.restarts) == (32, 2.0, 4, 3)  # "Defaults"
    assert options_for(2).generations == 16  # the bare formula would give 0 generations
    assert resolve(PinOptions(), Context(3, image_seed=77)).cma_seed == 77  # -1: the image seed


def test_cma_es_minimises_a_shifted_sphere():
    shift = np.array([0.3, -0.2, 0.5, 0.1])
    _, (loss, genes) = run_search(4, sphere(shift), cma_seed=3, generations=60, sigma=0.1)
    assert loss < 1e-3
    assert np.allclose(genes, shift, atol=0.05)


def test_run_leaves_global_numpy_rng_and_deap_creator_untouched():
    np.random.seed(1234)
    before = np.random.get_state()
    names_before = set(vars(creator))
    run_search(5, sphere(np.ones(5)), cma_seed=7, generations=4)
    run_search(5, sphere(np.ones(5)), cma_seed=7, generations=3, size_limit=0.5)
    after = np.random.get_state()
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and before[2:] == after[2:]
    assert set(vars(creator)) == names_before


def test_same_seed_same_candidates_and_global_rng_does_not_leak_in():
    def trace(global_seed, cma_seed):
        np.random.seed(global_seed)
        search, (_, genes) = run_search(6, sphere(np.zeros(6)), cma_seed=cma_seed, generations=3)
        return [entry["min"] for entry in search.logbook], genes

    first, second, other = trace(1, 11), trace(2, 11), trace(1, 12)
    assert first[0] == second[0] and np.array_equal(first[1], second[1])
    assert first[0] != other[0]


def test_another_thread_drawing_from_numpys_global_rng_mid_generation_changes_nothing(monkeypatch):
    # A WebUI process has many threads; one drawing from numpy's global RNG while a search generates (simulated
    # here by an individual that draws as it is built) must neither shift the search's candidates nor have its
    # own draws undone (a search that swapped its state into the global RNG did both).
    def generations(individual_class):
        monkeypatch.setattr(search_module, "_Individual", individual_class)
        search = Search(4, options_for(4, cma_seed=5, first_look=0, lambda_=6))
        return [drive_one(search) for _ in range(3)]

    def drive_one(search):
        candidates = search.ask()
        search.tell(candidates, [sphere(np.ones(4))(c.rendered) for c in candidates])
        return np.array([c.genes for c in candidates])

    drawn = []

    class Busy(search_module._Individual):
        def __init__(self, values=()):
            super().__init__(values)
            drawn.append(np.random.random())

    quiet = generations(search_module._Individual)
    np.random.seed(9)
    busy = generations(Busy)
    assert all(np.array_equal(a, b) for a, b in zip(quiet, busy))
    np.random.seed(9)
    assert drawn == list(np.random.random(len(drawn)))  # the other thread's draws went on, none repeated


@pytest.mark.parametrize("kind", ["single", "size limiter", "size limiter, fewer parents"])
def test_generations_are_drawn_as_deaps_own_generate_draws_them(kind):
    # DEAP is the oracle: the same state gives the same children and leaves the same state, so runs recorded by
    # earlier versions (DEAP drawing from a swapped-in global state) resume identically.
    rng = np.random.default_rng(3)
    if kind == "single":
        strategy = cma.Strategy(centroid=rng.normal(size=5), sigma=0.7, lambda_=8)
        individual = search_module._Individual
    else:
        individual = search_module._SizeLimitedIndividual
        parents = [individual(rng.normal(size=5)) for _ in range(6)]
        for parent in parents:
            parent.fitness.values = tuple(rng.random(2))
        mu = 6 if kind == "size limiter" else 4
        strategy = cma.StrategyMultiObjective(parents[:mu], 0.7, mu=mu, lambda_=6)
    state = np.random.RandomState(42).get_state()
    random = np.random.RandomState()
    random.set_state(state)
    ours = search_module._generate(copy.deepcopy(strategy), individual, random)
    outside = np.random.get_state()
    np.random.set_state(state)
    try:
        theirs = strategy.generate(individual)
        after = np.random.get_state()
    finally:
        np.random.set_state(outside)
    assert [list(a) for a in ours] == [list(b) for b in theirs]
    assert [getattr(a, "_ps", None) for a in ours] == [getattr(b, "_ps", None) for b in theirs]
    assert np.array_equal(random.get_state()[1], after[1]) and random.get_state()[2:] == after[2:]


def test_explicit_cma_parameters_reach_deap_and_the_record():
    search = Search(3, options_for(3, lambda_=6, mu=2, weights="equal", cs=0.3, damps=2.0, ccum=0.2, ccov1=0.01,
                                   ccovmu=0.02, cmatrix=np.diag([1.0, 2.0, 3.0]).tolist()))
    strategy = search._strategy
    assert (strategy.lambda_, strategy.mu, strategy.cs, strategy.damps) == (6, 2, 0.3, 2.0)
    assert (strategy.cc, strategy.ccov1, strategy.ccovmu) == (0.2, 0.01, 0.02)
    assert np.allclose(strategy.weights, 0.5)
    assert np.allclose(strategy.C, np.diag([1.0, 2.0, 3.0]))
    assert search.constants() == {"cs": 0.3, "damps": 2.0, "ccum": 0.2, "ccov1": 0.01, "ccovmu": 0.02}


@pytest.mark.parametrize("values, message", [
    ({"lambda_": 4, "mu": 5}, r"Mu: parents \(-1: lambda / 2\) \(mu\): must be at most λ \(4\), got 5"),
    ({"cmatrix": [[1.0, 0.0], [0.0, 1.0]]}, r"cmatrix\): must be 3x3 \(one row and column per gene\), got 2x2"),
    ({"cmatrix": [[1.0, 2.0, 0], [2.0, 1.0, 0], [0, 0, 1.0]]}, "symmetric positive definite"),
    ({"cmatrix": [[1.0, 0], [0, 1.0], [0]]}, "rows of different lengths"),
])
def test_options_that_depend_on_the_genome_are_refused_when_resolved(values, message):
    with pytest.raises(OptionError, match=message):
        options_for(3, **values)


@pytest.mark.parametrize("values", [{"ccov1": 0.6, "ccovmu": 0.6}, {"ccov1": 1.0}, {"ccovmu": 1.0}])
def test_learning_rates_that_would_break_the_covariance_are_refused(values):
    # ccov1 + ccovmu >= 1: DEAP would quietly clamp ccovmu to 1 - ccov1 and then divide by zero mid-run.
    with pytest.raises(OptionError, match=r"ccov1\) \+ .* \(ccovmu\) must be less than 1"):
        Search(3, options_for(3, **values))


def test_the_search_needs_resolved_options():
    with pytest.raises(ValueError, match="resolved"):
        Search(3, PinOptions())


def test_nan_loss_is_refused():
    search = Search(3, options_for(3))
    candidates = search.ask()
    with pytest.raises(ValueError, match="nan"):
        search.tell(candidates, [float("nan")] * len(candidates))


def test_size_limiter_keeps_rendered_genes_within_the_limit():
    limit = 0.4
    options = options_for(3, cma_seed=5, generations=25, sigma=0.3, size_limit=limit)
    rendered, penalties, best = [], [], (math.inf, None)
    search = Search(3, options)
    shift = np.array([2.0, 0.0, 0.0])  # the unconstrained optimum lies far outside the limit
    while search.generation < options.generations:
        candidates = search.ask()
        rendered += [c.rendered for c in candidates]
        penalties += [c.penalty for c in candidates if np.linalg.norm(c.genes) > limit * 1.01]
        losses = [sphere(shift)(c.rendered) for c in candidates]
        search.tell(candidates, losses)
        best = min(best, *zip(losses, [c.rendered for c in candidates]), key=lambda entry: entry[0])
    assert options.size_limit_error == limit / 100 and options.size_limit_weight == limit * 10
    assert max(np.linalg.norm(r) for r in rendered) <= limit + options.size_limit_error + 1e-12
    assert penalties and min(penalties) > 0
    # The best point is pushed to the boundary, towards the optimum.
    assert best[1][0] > 0.3


def drive(search, objective):
    """Ask and tell until the search is done; returns every generation's candidates' genes and losses."""
    history = []
    while not search.done:
        candidates = search.ask()
        losses = [objective(c.rendered) for c in candidates]
        search.tell(candidates, losses)
        history.append(([c.rendered for c in candidates], losses))
    return history


def test_the_first_look_spreads_a_latin_hypercube_over_the_box_and_cma_starts_at_the_best():
    options = options_for(4, first_look=16, box=0.8, generations=6, lambda_=6)
    search = Search(4, options)
    first = search.ask()
    points = np.array([c.rendered for c in first])
    assert len(first) == 16 and np.abs(points).max() <= 0.8 and np.abs(points).max() > 0.6
    assert np.ptp(points, axis=0).min() > 1.0  # spread over every coordinate
    losses = [sphere(np.array([0.5, -0.5, 0.2, 0.0]))(p) for p in points]
    search.tell(first, losses)
    assert np.allclose(search._strategy.centroid, points[int(np.argmin(losses))])
    assert search.evaluations == 16 and len(search.ask()) == 6


def test_the_first_look_takes_at_most_half_the_budget():
    search = Search(4, options_for(4, first_look=32, generations=3, lambda_=4))
    assert len(search.ask()) == 6  # half of 3 x 4: CMA-ES keeps the other half
    tiny = Search(4, options_for(4, first_look=32, generations=1, lambda_=3, box=0.1, sigma=3.0))
    assert len(tiny.ask()) == 3  # a budget of 3 leaves no room for a look: CMA-ES's own first generation


def test_the_budget_is_generations_times_lambda_evaluations():
    search = Search(3, options_for(3, first_look=10, generations=4, lambda_=5))
    history = drive(search, sphere(np.zeros(3)))
    assert search.stop == "generations" and search.evaluations <= 20
    assert [len(losses) for _, losses in history] == [10, 5, 5]


def test_a_search_that_stops_improving_stops_by_itself():
    flat = Search(3, options_for(3, generations=50, patience=4, first_look=0, restarts=0))
    assert len(drive(flat, lambda genes: 0.5)) == 4 and flat.stop == "flat"
    stalls = Search(3, options_for(3, generations=200, patience=5, tolerance=0.01, first_look=0, restarts=0))
    history = drive(stalls, lambda genes: max(0.3, float(np.sum(genes ** 2))))  # a floor it cannot pass
    assert stalls.stop in ("stagnation", "flat") and len(history) < 200
    best = [min(losses) for _, losses in history]
    assert min(best[-5:]) > min(best[:-5]) - 0.01  # the last `patience` generations improved nothing


def test_a_search_stops_at_the_loss_asked_for():
    search = Search(3, options_for(3, generations=200, target_loss=0.05, sigma=0.3))
    history = drive(search, sphere(np.full(3, 0.6)))
    assert search.stop == "target" and min(history[-1][1]) <= 0.05 < min(min(losses) for _, losses in history[:-1])


def test_a_search_stops_when_pinned_at_its_share_of_the_prompts_loss_and_keeps_that_through_a_resume():
    values = dict(generations=200, stop_share=0.1, sigma=0.3, first_look=0)
    objective = sphere(np.full(3, 0.6))
    reference = objective(np.zeros(3))  # the unperturbed prompt's loss, which the engine sets
    pinned = Search(3, options_for(3, **values))
    pinned.reference_loss = reference
    history = drive(pinned, objective)
    assert pinned.stop == "pinned"
    assert min(history[-1][1]) <= 0.1 * reference < min(min(losses) for _, losses in history[:-1])
    unknown = Search(3, options_for(3, **values))  # the prompt's loss not known: no share to stop at
    assert len(drive(unknown, objective)) > len(history) and unknown.stop != "pinned"
    off = Search(3, options_for(3, **{**values, "stop_share": 0}))
    off.reference_loss = reference
    assert len(drive(off, objective)) > len(history) and off.stop != "pinned"
    part = Search(3, options_for(3, **values))
    part.reference_loss = reference
    for _ in range(2):
        candidates = part.ask()
        part.tell(candidates, [objective(c.rendered) for c in candidates])
    again = Search(3, options_for(3, **values))
    again.restore(json.loads(json.dumps(part.snapshot())))
    assert [losses for _, losses in drive(again, objective)] == [losses for _, losses in history[2:]]
    assert again.stop == "pinned"


@pytest.mark.parametrize("first_look", [0, 8])
def test_a_generation_is_cut_short_only_at_a_loss_that_ends_the_run_and_teaches_the_strategy_nothing(first_look):
    search = Search(3, options_for(3, generations=20, lambda_=6, stop_share=0.5, first_look=first_look))
    search.reference_loss = 1.0
    candidates = search.ask()
    assert not search.ends_run(0.51) and search.ends_run(0.5)
    before = copy.deepcopy(vars(search._strategy))
    with pytest.raises(ValueError, match="cut short only at a loss that ends the run"):
        search.tell(candidates[:2], [0.9, 0.8])  # the rest of the generation is missing for no reason
    assert search.evaluations == 0 and search.stop is None
    search.tell(candidates[:2], [0.9, 0.4])  # the second pinned the run: the rest is never rendered
    assert search.stop == "pinned" and search.done and search.evaluations == 2 and search.generation == 1
    assert search.best_loss == 0.4 and search.drawn_around == []
    after = vars(search._strategy)
    assert all(np.array_equal(after[name], value) for name, value in before.items() if not callable(value))
    target = Search(3, options_for(3, generations=20, lambda_=6, target_loss=0.2, stop_share=0, first_look=0))
    assert not target.ends_run(0.3) and target.ends_run(0.2)  # the loss target, with no prompt's loss known


def test_a_stall_restarts_cma_es_with_twice_the_population_until_the_restarts_are_used():
    search = Search(3, options_for(3, generations=100, lambda_=4, patience=3, restarts=2, first_look=0))
    history = drive(search, lambda genes: 0.5)
    sizes = [len(losses) for _, losses in history]
    assert sizes == [4] * 3 + [8] * 3 + [16] * 3 and search.restarts == 2 and search.stop == "flat"


@pytest.mark.parametrize("at", [1, 2, 4, 6])
def test_a_search_restored_from_a_snapshot_goes_on_exactly(at):
    values = dict(first_look=12, box=1.0, generations=30, lambda_=5, patience=2, restarts=2, tolerance=0.05)
    objective = sphere(np.array([0.6, -0.4, 0.3]))
    whole = drive(Search(3, options_for(3, **values)), objective)
    part = Search(3, options_for(3, **values))
    for _ in range(at):
        candidates = part.ask()
        part.tell(candidates, [objective(c.rendered) for c in candidates])
    again = Search(3, options_for(3, **values))
    again.restore(json.loads(json.dumps(part.snapshot())))
    rest = drive(again, objective)
    assert [losses for _, losses in whole[at:]] == [losses for _, losses in rest]
