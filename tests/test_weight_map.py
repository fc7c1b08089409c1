"""The weight map (lib_pinning.report.weight_map): UMAP of every individual's genes, HDBSCAN clusters, summaries.

Records are built from run.json's own types with chosen gene vectors, so what the map must find is known.
"""

import sys

import numpy as np
import pytest
import torch

from lib_pinning.record import (Best, CmaState, Generation, GenomeRecord, Individual, ObjectiveRecord, RenderRecord,
                                RunRecord, individual_folder)
from lib_pinning.report import weight_map as wm

needs_umap = pytest.mark.skipif(not wm.installed(), reason="umap-learn / scikit-learn are not installed")

WORDS = ["a", "red", "circle", "$x$", "sky"]
NEGATIVE = ["dark", "blurry", "ugly"]
LABELS = [*WORDS, *(f"{word} (negative)" for word in NEGATIVE)]
# Two groups far apart in gene space: the good one raises "red", "$x$" and "blurry (negative)" and lowers "sky";
# the bad one raises "circle" and lowers "a" and "ugly (negative)".
GOOD_SHIFT = {1: 1.0, 3: 0.8, 6: 0.6, 4: -0.9}
BAD_SHIFT = {2: 1.0, 0: -0.8, 7: -0.7}


def make_record(genes: list[list[float]], losses: list[float], per_generation: int = 10,
                words=WORDS, negative=NEGATIVE) -> RunRecord:
    """A finished run whose individuals, in evaluation order, have these genes and losses."""
    count = len(words) + len(negative)
    generations = []
    for index, start in enumerate(range(0, len(genes), per_generation)):
        individuals = []
        for number, (weights, loss) in enumerate(zip(genes[start:start + per_generation],
                                                     losses[start:start + per_generation])):
            identifier = f"{index:04d}-{number:03d}"
            individuals.append(Individual(identifier, individual_folder(index, identifier), list(map(float, weights)),
                                          float(loss), "prompt", "", [0.5], [], 0.1, 0.01))
        batch = [individual.loss for individual in individuals]
        cma = CmaState([0.0] * count, 0.1, 1.0, [1.0] * count, [0.1] * count)
        generations.append(Generation(index, len(individuals), min(batch), float(np.mean(batch)), 0.1, cma,
                                      individuals))
    generation, best = min(((g.index, i) for g in generations for i in g.individuals), key=lambda e: e[1].loss)
    options = {"size_limit": 0.0}
    return RunRecord(
        prompt=" ".join(words), negative_prompt=" ".join(negative), options=options, resolved=options,
        cma_constants={}, render=RenderRecord([0], "Euler", None, 4, 3.0, 8, 8, "embedded"),
        objective=ObjectiveRecord("consistency", 0, "none", [], None),
        genome=GenomeRecord(list(words), list(negative), [1.0] * count, []),
        best=Best(best.loss, best.prompt, "", best.weights, generation, best.id, best.folder),
        generations=generations, status="done")


def two_groups(per_group: int = 30, seed: int = 0):
    """Genes and losses of two interleaved groups (as CMA-ES could sample them): (record, is_good per point)."""
    rng = np.random.default_rng(seed)
    genes, losses, good = [], [], []
    for number in range(2 * per_group):
        is_good = number % 2 == 0
        vector = rng.normal(0, 0.05, len(LABELS))
        for gene, shift in (GOOD_SHIFT if is_good else BAD_SHIFT).items():
            vector[gene] += shift
        genes.append(vector)
        losses.append(rng.uniform(0.1, 0.3) if is_good else rng.uniform(0.6, 0.9))
        good.append(is_good)
    return make_record(genes, losses), np.array(good)


@pytest.fixture(scope="module")
def grouped():
    record, good = two_groups()
    return record, good, wm.weight_map(record, seed=0)


@needs_umap
def test_two_separated_groups_make_two_clusters_and_the_good_one_raises_exactly_its_shifted_words(grouped):
    record, good, result = grouped
    assert result.reason is None and result.points.shape == (60, 2) and np.isfinite(result.points).all()
    assert sorted(set(result.labels.tolist())) == [0, 1]  # two clusters, nothing left as noise
    # cluster 0 is the one with the lower mean loss: exactly the good group
    assert (result.labels == 0).tolist() == good.tolist()
    best, worst = result.clusters
    assert (best.cluster, best.size, best.good) == (0, 30, True)
    assert (worst.cluster, worst.size, worst.good) == (1, 30, False)
    assert best.mean_loss == pytest.approx(np.mean([i.loss for g in record.generations for i in g.individuals][::2]))
    assert [word for word, _ in best.raises] == ["red", "$x$", "blurry (negative)"]  # by decreasing shift
    assert [word for word, _ in best.lowers] == ["sky"]  # the only gene shifted down; noise genes are not named
    assert best.raises[0][1] == pytest.approx(1.0, abs=0.05) and best.lowers[0][1] == pytest.approx(-0.9, abs=0.05)
    assert [word for word, _ in worst.raises] == ["circle"]
    assert [word for word, _ in worst.lowers] == ["a", "ugly (negative)"]
    assert [cluster.cluster for cluster in result.good_clusters] == [0]


@needs_umap
def test_cluster_summaries_are_plain_data_for_the_page(grouped):
    _, _, result = grouped
    summaries = wm.cluster_summaries(result)
    assert [summary["cluster"] for summary in summaries] == [0, 1]
    assert summaries[0]["raises"][0] == ["red", pytest.approx(result.clusters[0].raises[0][1])]
    assert set(summaries[0]) == {"cluster", "size", "mean_loss", "good", "raises", "lowers"}
    assert [summary["cluster"] for summary in wm.cluster_summaries(result, good_only=True)] == [0]


def test_clusters_are_numbered_by_increasing_mean_loss_and_noise_stays_noise():
    labels = np.array([0, 0, 1, 1, -1, 2, 2])
    losses = np.array([0.9, 0.7, 0.1, 0.3, 0.0, 0.5, 0.5])
    assert wm._renumber(labels, losses).tolist() == [2, 2, 0, 0, -1, 1, 1]


@needs_umap
def test_the_best_individual_is_marked_at_its_projected_point(grouped):
    record, _, result = grouped
    assert result.individuals[result.best] == (record.best.generation, record.best.id)
    assert result.losses[result.best] == record.best.loss == result.losses.min()
    figure = wm.weight_map_figure(record, wmap=result)
    star = figure.findobj(lambda artist: artist.get_gid() == "best")[0]
    assert (star.get_xdata()[0], star.get_ydata()[0]) == pytest.approx(tuple(result.points[result.best]))
    scatter = figure.findobj(lambda artist: artist.get_gid() == "individuals")[0]
    order = np.argsort(-result.losses, kind="stable")  # drawn worst first
    np.testing.assert_allclose(scatter.get_offsets(), result.points[order])
    np.testing.assert_allclose(scatter.get_array(), result.losses[order])
    labels = {artist.get_gid(): artist for artist in figure.findobj(lambda a: str(a.get_gid()).startswith("cluster"))}
    assert sorted(labels) == ["cluster 0", "cluster 1"]
    assert labels["cluster 0"].get_position() == pytest.approx(tuple(np.median(result.points[result.labels == 0], 0)))
    summary = figure.findobj(lambda artist: artist.get_gid() == "summary")[0].get_text()
    assert "cluster 0" in summary and "red +" in summary and "$x$" in summary and "cluster 1:" not in summary
    figure.canvas.draw()  # "$x$" is literal text, not mathtext


@needs_umap
def test_the_same_seed_gives_the_same_map_and_the_global_generators_are_untouched(grouped):
    record, _, result = grouped
    np.random.seed(123)
    torch.manual_seed(456)
    numpy_state, torch_state = np.random.get_state(), torch.random.get_rng_state()
    again = wm.weight_map(record, seed=0)
    assert np.array_equal(again.points, result.points) and np.array_equal(again.labels, result.labels)
    other = wm.weight_map(record, seed=1)
    assert not np.array_equal(other.points, result.points)
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]
    assert torch.equal(torch.random.get_rng_state(), torch_state)


@needs_umap
def test_graph_matches_umaps_own_formulas():
    umap_ = pytest.importorskip("umap.umap_")
    from sklearn.neighbors import NearestNeighbors

    points = np.random.default_rng(3).normal(size=(40, 6))
    points[5] = points[4]  # a duplicate: distance 0 to a neighbour other than itself
    distances, indices = NearestNeighbors(n_neighbors=8).fit(points).kneighbors(points)
    sigmas, rhos = wm.smooth_knn_dist(distances, 8)
    # the pure-Python bodies of umap's numba functions (compiling them costs ~10 s)
    their_sigmas, their_rhos = umap_.smooth_knn_dist.py_func(distances.astype(np.float32), 8.0)
    np.testing.assert_allclose(rhos, their_rhos, rtol=1e-5)
    np.testing.assert_allclose(sigmas, their_sigmas, rtol=1e-3)
    rows, cols, values, _ = umap_.compute_membership_strengths.py_func(
        indices, distances.astype(np.float32), their_sigmas, their_rhos)
    theirs = np.zeros((40, 40))
    theirs[rows, cols] = values
    ours = np.zeros((40, 40))
    strengths = wm.membership_strengths(indices, distances, sigmas, rhos)
    ours[np.repeat(np.arange(40), 8), indices.ravel()] = strengths.ravel()
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-6)
    graph = wm.fuzzy_graph(indices, distances).toarray()
    np.testing.assert_allclose(graph, graph.T)
    np.testing.assert_allclose(graph, ours + ours.T - ours * ours.T, atol=1e-12)


@needs_umap
def test_a_long_run_maps_only_its_best_individuals(monkeypatch):
    record, _ = two_groups(per_group=15)
    monkeypatch.setattr(wm, "MAX_POINTS", 20)
    result = wm.weight_map(record)
    every = [(g.index, i) for g in record.generations for i in g.individuals]
    lowest = sorted(every, key=lambda pair: pair[1].loss)[:20]
    assert result.points.shape == (20, 2) and result.evaluated == 30
    assert result.individuals == [(g, i.id) for g, i in every if any(i is kept for _, kept in lowest)]
    assert result.losses.tolist() == [i.loss for g, i in every if any(i is kept for _, kept in lowest)]
    title = wm.weight_map_figure(record, wmap=result).axes[0].get_title()
    assert title.startswith("the best 20 of 30 individuals")


@pytest.mark.parametrize("count, words, negative, why", [
    (9, WORDS, NEGATIVE, "9 individual(s) evaluated, it needs 10"),
    (30, ["one"], [], "1 word(s) to weigh"),
])
@needs_umap
def test_a_run_too_small_gives_the_reason_instead_of_a_map(count, words, negative, why):
    genes = np.random.default_rng(0).normal(size=(count, len(words) + len(negative)))
    record = make_record(genes.tolist(), np.linspace(0.2, 0.8, count).tolist(), words=words, negative=negative)
    result = wm.weight_map(record)
    assert why in result.reason and result.points.shape == (0, 2) and result.best is None and result.clusters == []
    figure = wm.weight_map_figure(record)
    assert why in figure.findobj(lambda artist: artist.get_gid() == "reason")[0].get_text()


@needs_umap
def test_ten_individuals_with_identical_weights_give_a_reason_and_ten_distinct_ones_a_map():
    record = make_record([[0.1] * 8] * 10, np.linspace(0.2, 0.8, 10).tolist())
    assert "same weights" in wm.weight_map(record).reason
    genes = np.random.default_rng(1).normal(size=(10, 8))
    result = wm.weight_map(make_record(genes.tolist(), np.linspace(0.2, 0.8, 10).tolist()))
    assert result.reason is None and result.points.shape == (10, 2) and np.isfinite(result.points).all()


def test_without_umap_the_map_names_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # import umap raises ImportError
    monkeypatch.setitem(sys.modules, "umap.umap_", None)
    message = wm.available()
    assert message is not None and "\n" not in message
    assert f'pip install "{wm.UMAP_REQUIREMENT}" "{wm.SKLEARN_REQUIREMENT}"' in message
    assert "sd-prompt-pinning[weightmap]" in message and "umap-learn" in message
    record, _ = two_groups(per_group=10)
    result = wm.weight_map(record)
    assert result.reason == message and result.points.shape == (0, 2)
    assert wm.weight_map_figure(record).findobj(lambda artist: artist.get_gid() == "reason")[0].get_text() == message


@needs_umap
def test_the_report_draws_the_map_and_names_the_extra_when_it_is_missing(tmp_path, monkeypatch):
    from lib_pinning.report import files, html, writers
    record = two_groups(per_group=wm.REPORT_POINTS // 2)[0]
    writers.write_run(tmp_path / "short", two_groups(per_group=wm.REPORT_POINTS // 2 - 1)[0])
    assert not (tmp_path / "short" / files.WEIGHT_MAP_PLOT).exists()  # a short run gets no map
    writers.write_run(tmp_path / "with", record)
    page = (tmp_path / "with" / files.INDEX).read_text(encoding="utf-8")
    assert (tmp_path / "with" / files.WEIGHT_MAP_PLOT).is_file() and files.WEIGHT_MAP_PLOT in page
    assert html.page_data(tmp_path / "with", record, [])["plots_missing"] == []
    monkeypatch.setattr(wm, "installed", lambda: False)
    writers.write_run(tmp_path / "without", record)
    assert not (tmp_path / "without" / files.WEIGHT_MAP_PLOT).exists()
    assert html.page_data(tmp_path / "without", record, [])["plots_missing"] == [wm.missing_message()]
    assert "umap-learn==0.5.12" in (tmp_path / "without" / files.INDEX).read_text(encoding="utf-8")
