import math

import numpy as np
import pytest
from deap import creator

from lib_pinning.search import Search, SearchOptions, default_generations


def run_search(dimension, options, objective, generations=None):
    search = Search(dimension, options)
    while not search.done and (generations is None or search.generation < generations):
        candidates = search.ask()
        search.tell(candidates, [objective(c.rendered) for c in candidates])
    return search


def sphere(shift):
    return lambda genes: float(np.sum((genes - shift) ** 2))


def test_original_defaults_follow_the_formulas():
    options = SearchOptions().resolved(8)
    assert options.lambda_ == int(4 + 3 * math.log(8)) == 10
    assert options.mu == 5
    assert options.generations == 16 * math.floor(math.log(8)) == 32
    assert options.sigma == 0.5 and options.init_radius == 0.0  # measured better than the original's 0.05, 0.25
    assert default_generations(2) == 16  # the bare formula would give 0 generations


def test_cma_es_minimises_a_shifted_sphere():
    shift = np.array([0.3, -0.2, 0.5, 0.1])
    search = run_search(4, SearchOptions(cma_seed=3, generations=60, sigma=0.1, log=False), sphere(shift))
    assert search.best_loss < 1e-3
    assert np.allclose(search.best.rendered, shift, atol=0.05)


def test_run_leaves_global_numpy_rng_and_deap_creator_untouched():
    np.random.seed(1234)
    before = np.random.get_state()
    names_before = set(vars(creator))
    run_search(5, SearchOptions(cma_seed=7, generations=4, log=False), sphere(np.ones(5)))
    run_search(5, SearchOptions(cma_seed=7, generations=3, size_limit=0.5, log=False), sphere(np.ones(5)))
    after = np.random.get_state()
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and before[2:] == after[2:]
    assert set(vars(creator)) == names_before


def test_same_seed_same_candidates_and_global_rng_does_not_leak_in():
    def trace(global_seed, cma_seed):
        np.random.seed(global_seed)
        search = run_search(6, SearchOptions(cma_seed=cma_seed, generations=3, log=False), sphere(np.zeros(6)))
        return [entry["min"] for entry in search.logbook], search.best.rendered

    first, second, other = trace(1, 11), trace(2, 11), trace(1, 12)
    assert first[0] == second[0] and np.array_equal(first[1], second[1])
    assert first[0] != other[0]


def test_explicit_cma_parameters_reach_deap():
    options = SearchOptions(lambda_=6, mu=2, weights="equal", cs=0.3, damps=2.0, ccum=0.2, ccov1=0.01,
                            ccovmu=0.02, cmatrix=np.diag([1.0, 2.0, 3.0]).tolist(), log=False)
    strategy = Search(3, options)._strategy
    assert (strategy.lambda_, strategy.mu, strategy.cs, strategy.damps) == (6, 2, 0.3, 2.0)
    assert (strategy.cc, strategy.ccov1, strategy.ccovmu) == (0.2, 0.01, 0.02)
    assert np.allclose(strategy.weights, 0.5)
    assert np.allclose(strategy.C, np.diag([1.0, 2.0, 3.0]))


@pytest.mark.parametrize("options, message", [
    (SearchOptions(generations=0), "generations"),
    (SearchOptions(lambda_=1), "lambda_"),
    (SearchOptions(lambda_=4, mu=5), "mu"),
    (SearchOptions(sigma=0), "sigma"),
    (SearchOptions(weights="cubic"), "weights"),
    (SearchOptions(cs=-1.0), "cs"),
    (SearchOptions(cmatrix=[[1.0, 0.0], [0.0, 1.0]]), "cmatrix"),
    (SearchOptions(cmatrix=[[1.0, 2.0, 0], [2.0, 1.0, 0], [0, 0, 1.0]]), "positive definite"),
    (SearchOptions(size_limit=-1), "size limit"),
])
def test_bad_options_are_refused_with_a_message(options, message):
    with pytest.raises(ValueError, match=message):
        Search(3, options)


def test_nan_loss_is_refused():
    search = Search(3, SearchOptions(log=False))
    candidates = search.ask()
    with pytest.raises(ValueError, match="nan"):
        search.tell(candidates, [float("nan")] * len(candidates))


def test_size_limiter_keeps_rendered_genes_within_the_limit():
    limit = 0.4
    options = SearchOptions(cma_seed=5, generations=25, sigma=0.3, size_limit=limit, log=False)
    rendered, penalties = [], []
    search = Search(3, options)
    shift = np.array([2.0, 0.0, 0.0])  # the unconstrained optimum lies far outside the limit
    while not search.done:
        candidates = search.ask()
        rendered += [c.rendered for c in candidates]
        penalties += [c.penalty for c in candidates if np.linalg.norm(c.genes) > limit * 1.01]
        search.tell(candidates, [sphere(shift)(c.rendered) for c in candidates])
    tolerance = options.size_limit / 100
    assert max(np.linalg.norm(r) for r in rendered) <= limit + tolerance + 1e-12
    assert penalties and min(penalties) > 0
    # The best point is pushed to the boundary, towards the optimum.
    assert search.best.rendered[0] > 0.3


@pytest.mark.parametrize("options, message", [
    (SearchOptions(init_radius=float("inf")), "radius"),
    (SearchOptions(size_limit=1.0, size_limit_weight=-1.0), "size_limit_weight"),
    (SearchOptions(size_limit=1.0, size_limit_error=float("nan")), "size_limit_error"),
])
def test_unusable_radius_and_size_limit_settings_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        Search(3, options)
