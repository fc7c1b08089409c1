"""The weight map: every evaluated individual's gene vector projected to 2-D (UMAP), clustered (HDBSCAN), coloured
by loss, the best marked; each cluster summarised as the words it raises and lowers.

It needs two optional packages, umap-learn and scikit-learn (with pynndescent, about 56 MB in A1111's venv):
`available()` says what to install when they are missing, and `weight_map` then returns a map with that reason
instead of points. They are imported on first use only (importing umap costs seconds).

How the map is made, and why not with `umap.UMAP` itself:
- the neighbour graph is exact (scikit-learn's NearestNeighbors) and its fuzzy memberships are computed here in
  numpy, the same formulas as umap-learn's `smooth_knn_dist` and `compute_membership_strengths` (the tests check
  them against umap's own). umap's versions are numba functions with `parallel=True`: they cost about 10 s of
  compilation in every process, and numba's default threading layer aborts the process when two threads run
  parallel functions at once; the report is written on its own thread.
- the layout is umap-learn's own `simplicial_set_embedding` (PCA start, 200 epochs, single-threaded, seeded): it
  takes about a second for 2000 points. Its epoch function is compiled once and cached on disk by numba.
- HDBSCAN (scikit-learn's) clusters the 2-D points, so the clusters are the groups the picture shows.

Every random choice takes the explicit seed (a `numpy.random.RandomState(seed)` of its own); numpy's and torch's
global generators are never touched. Clusters are numbered by increasing mean loss (cluster 0 is the best);
HDBSCAN's noise is -1. A cluster is good when its mean loss is below the median loss of the points mapped.

Artists carry a `gid` ("individuals", "best", "cluster 0", "summary", "reason"), as in run_figures, so tests can
read the plotted data back. Words are drawn as literal text (no mathtext).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from matplotlib.figure import Figure

from ..record import RunRecord
from .context import gene_labels
from .figures import LOSS_COLOUR, label, new_figure
from .run_figures import every_individual

UMAP_REQUIREMENT = "umap-learn==0.5.12"  # installs beside A1111's numpy 1.26.2 (and numpy 1.26.4 here)
SKLEARN_REQUIREMENT = "scikit-learn==1.9.1"
EXTRA = "weightmap"                      # pip install "sd-prompt-pinning[weightmap]"
MAX_POINTS = 2000      # a longer run maps its best MAX_POINTS individuals (by loss)
MIN_POINTS = 10        # fewer individuals than this make no map
REPORT_POINTS = 100    # the report draws one for runs of this many individuals or more: fewer show no structure
                       # a 15-neighbour map can be trusted with, and a short run need not pay the import
MIN_GENES = 2          # nor does a prompt of one word
NEIGHBOURS = 15        # umap's default n_neighbors; fewer when there are fewer points
EPOCHS = 200           # umap's default for large data sets (500 for small ones costs 2.5 times as long)
MIN_DIST = 0.1         # umap's defaults
SPREAD = 1.0
SUMMARY_WORDS = 3      # words raised and lowered named per cluster
NOISE_ERRORS = 3.0     # ... when their mean gene value is this many standard errors from 0
FIGURE_CLUSTERS = 8    # good clusters the figure's text panel lists

# umap-learn's constants for the fuzzy memberships (umap/umap_.py)
_SMOOTH_K_TOLERANCE = 1e-5
_MIN_K_DIST_SCALE = 1e-3
_SEARCH_STEPS = 64


def installed() -> bool:
    """Whether umap-learn and scikit-learn are installed (without importing them: that costs seconds)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("umap", "sklearn"))


def missing_message() -> str:
    return (f"No weight map: it needs umap-learn and scikit-learn, an optional extra: pip install "
            f"\"{UMAP_REQUIREMENT}\" \"{SKLEARN_REQUIREMENT}\" into the WebUI's venv (or pip install "
            f"\"sd-prompt-pinning[{EXTRA}]\"), then rebuild the report: python -m lib_pinning report RUN_FOLDER")


def enough_individuals(record: RunRecord) -> bool:
    return sum(len(generation.individuals) for generation in record.generations) >= REPORT_POINTS


def available() -> str | None:
    """None when umap-learn and scikit-learn import; else one line saying what to install."""
    try:
        _modules()
    except Exception as error:  # noqa: BLE001 - ImportError, or numba refusing this numpy: either way, not usable
        why = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return (f"the weight map needs umap-learn and scikit-learn ({why}): pip install \"{UMAP_REQUIREMENT}\" "
                f"\"{SKLEARN_REQUIREMENT}\" into the WebUI's venv (or pip install \"sd-prompt-pinning[{EXTRA}]\")")
    return None


def _modules():
    import sklearn.cluster
    import sklearn.neighbors
    import umap.umap_

    _cache_layout(umap)
    return umap.umap_, sklearn.neighbors, sklearn.cluster


_layout_cached = False


def _cache_layout(umap) -> None:
    """Let numba cache umap's (serial) epoch function on disk: its compilation costs ~2 s in every process."""
    global _layout_cached
    if not _layout_cached:
        _layout_cached = True
        try:
            umap.layouts._nb_optimize_layout_euclidean_single_epoch.enable_caching()
        except Exception:  # noqa: BLE001 - another umap-learn, or nowhere to cache: compile each time instead
            pass


@dataclass
class ClusterSummary:
    cluster: int                        # numbered by increasing mean loss: 0 is the best cluster
    size: int
    mean_loss: float
    good: bool                          # mean loss below the median loss of the points mapped
    raises: list[tuple[str, float]]     # the words whose genes its members raise most: (word, mean gene value)
    lowers: list[tuple[str, float]]     # ... and lower most (most negative first)

    def as_dict(self) -> dict:
        return {"cluster": self.cluster, "size": self.size, "mean_loss": self.mean_loss, "good": self.good,
                "raises": [[word, value] for word, value in self.raises],
                "lowers": [[word, value] for word, value in self.lowers]}


@dataclass
class WeightMap:
    points: np.ndarray                  # (N, 2) UMAP coordinates, in the order of `individuals`
    losses: np.ndarray                  # (N,)
    labels: np.ndarray                  # (N,) cluster of each point, -1: noise
    best: int | None                    # index of the run's best individual among the points
    individuals: list[tuple[int, str]]  # (generation, id) of each point, in the order they were evaluated
    clusters: list[ClusterSummary]      # by cluster number
    evaluated: int                      # individuals in the run; more than N when only the best were mapped
    seed: int = 0
    reason: str | None = None           # why there is no map (then the arrays are empty)
    median_loss: float = field(default=float("nan"))

    @property
    def good_clusters(self) -> list[ClusterSummary]:
        return [cluster for cluster in self.clusters if cluster.good]


def _empty(record: RunRecord, reason: str, seed: int) -> WeightMap:
    return WeightMap(np.zeros((0, 2)), np.zeros(0), np.zeros(0, dtype=int), None, [], [],
                     len(every_individual(record)), seed, reason)


def weight_map(record: RunRecord, seed: int = 0) -> WeightMap:
    """Every evaluated individual's genes in 2-D, clustered; or, for a run too small (or without the packages), a
    WeightMap whose `reason` says why there is none."""
    missing = available()
    if missing:
        return _empty(record, missing, seed)
    umap_, neighbours_module, cluster_module = _modules()
    names = gene_labels(record)
    pairs = [(generation.index, individual) for generation in record.generations
             for individual in generation.individuals]
    if len(names) < MIN_GENES:
        return _empty(record, f"no weight map: the prompt has {len(names)} word(s) to weigh, it needs "
                              f"{MIN_GENES}", seed)
    if len(pairs) < MIN_POINTS:
        return _empty(record, f"no weight map: {len(pairs)} individual(s) evaluated, it needs {MIN_POINTS}", seed)
    losses = np.array([individual.loss for _, individual in pairs], dtype=float)
    kept = np.arange(len(pairs))
    if len(pairs) > MAX_POINTS:
        kept = np.sort(np.argsort(losses, kind="stable")[:MAX_POINTS])
    pairs, losses = [pairs[index] for index in kept], losses[kept]
    genes = np.array([individual.weights for _, individual in pairs], dtype=float)
    if not np.isfinite(genes).all():
        return _empty(record, "no weight map: some gene values are not finite", seed)
    if (genes == genes[0]).all():
        return _empty(record, "no weight map: every individual mapped has the same weights", seed)

    random_state = np.random.RandomState(seed)  # a generator of its own: the global ones are left alone
    points = _embed(umap_, neighbours_module, genes, random_state)
    clusterer = cluster_module.HDBSCAN(min_cluster_size=max(5, len(points) // 20), copy=True)
    labels = _renumber(clusterer.fit_predict(points), losses)
    median = float(np.median(losses))
    clusters = [_summary(number, labels == number, losses, genes, names, median)
                for number in range(labels.max() + 1)]
    ids = [(generation, individual.id) for generation, individual in pairs]
    best = _best_index(record, ids, losses)
    return WeightMap(points, losses, labels, best, ids, clusters, len(every_individual(record)), seed, None, median)


def _best_index(record: RunRecord, ids: list[tuple[int, str]], losses: np.ndarray) -> int:
    """The run's best individual among the points; the lowest loss mapped when the best is the baseline."""
    if record.best is not None and (record.best.generation, record.best.id) in ids:
        return ids.index((record.best.generation, record.best.id))
    return int(np.argmin(losses))


def _renumber(labels: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """Clusters numbered by increasing mean loss; noise stays -1."""
    numbers = [number for number in np.unique(labels) if number >= 0]
    order = sorted(numbers, key=lambda number: (float(losses[labels == number].mean()), number))
    renumbered = np.full(len(labels), -1, dtype=int)
    for new, old in enumerate(order):
        renumbered[labels == old] = new
    return renumbered


def _summary(number: int, members: np.ndarray, losses: np.ndarray, genes: np.ndarray, names: list[str],
             median: float) -> ClusterSummary:
    """The words a cluster raises and lowers most: its members' mean gene value, named only when it stands out of
    their spread (|mean| above NOISE_ERRORS standard errors), so a word the cluster leaves alone is not named."""
    chosen = genes[members]
    mean_genes = chosen.mean(axis=0)
    error = chosen.std(axis=0, ddof=1) / np.sqrt(len(chosen))
    mean_genes = np.where(np.abs(mean_genes) > NOISE_ERRORS * error, mean_genes, 0.0)
    order = np.argsort(-mean_genes, kind="stable")
    raises = [(names[gene], float(mean_genes[gene])) for gene in order if mean_genes[gene] > 0][:SUMMARY_WORDS]
    lowers = [(names[gene], float(mean_genes[gene])) for gene in order[::-1]
              if mean_genes[gene] < 0][:SUMMARY_WORDS]
    mean_loss = float(losses[members].mean())
    return ClusterSummary(number, int(members.sum()), mean_loss, mean_loss < median, raises, lowers)


def cluster_summaries(wmap: WeightMap, good_only: bool = False) -> list[dict]:
    """For the HTML page: per cluster {cluster, size, mean_loss, good, raises: [[word, value]...], lowers}."""
    return [cluster.as_dict() for cluster in (wmap.good_clusters if good_only else wmap.clusters)]


# --- UMAP -------------------------------------------------------------------------------------------------

def _embed(umap_, neighbours_module, genes: np.ndarray, random_state: np.random.RandomState) -> np.ndarray:
    k = min(NEIGHBOURS, len(genes) - 1)
    distances, indices = neighbours_module.NearestNeighbors(n_neighbors=k).fit(genes).kneighbors(genes)
    graph = fuzzy_graph(indices, distances)
    a, b = umap_.find_ab_params(SPREAD, MIN_DIST)
    embedding, _ = umap_.simplicial_set_embedding(
        genes, graph, 2, 1.0, a, b, 1.0, 5, EPOCHS, "pca", random_state, "euclidean", {}, False, {}, False,
        parallel=False, verbose=False)
    return np.asarray(embedding, dtype=float)


def smooth_knn_dist(distances: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """umap's sigmas and rhos (local_connectivity 1, bandwidth 1), all rows at once; `distances` (N, k) sorted,
    each row's first column the point itself."""
    distances = np.asarray(distances, dtype=np.float32).astype(float)
    count = len(distances)
    positive = np.where(distances > 0, distances, np.inf)
    rhos = positive.min(axis=1)
    rhos[~np.isfinite(rhos)] = 0.0
    above = np.maximum(distances[:, 1:] - rhos[:, None], 0.0)
    target = np.log2(k)
    low, high, mid = np.zeros(count), np.full(count, np.inf), np.ones(count)
    searching = np.ones(count, dtype=bool)
    for _ in range(_SEARCH_STEPS):
        total = np.exp(-above / mid[:, None]).sum(axis=1)
        searching &= np.abs(total - target) >= _SMOOTH_K_TOLERANCE
        if not searching.any():
            break
        over = searching & (total > target)
        under = searching & ~(total > target)
        high = np.where(over, mid, high)
        low = np.where(under, mid, low)
        mid = np.where(over | (under & np.isfinite(high)), (low + high) / 2,
                       np.where(under, mid * 2, mid))
    floor = _MIN_K_DIST_SCALE * np.where(rhos > 0, distances.mean(axis=1), distances.mean())
    return np.maximum(mid, floor), rhos


def membership_strengths(indices: np.ndarray, distances: np.ndarray, sigmas: np.ndarray,
                         rhos: np.ndarray) -> np.ndarray:
    """umap's edge weights, (N, k): 0 to itself, 1 within rho, exp(-(d - rho) / sigma) beyond."""
    distances = np.asarray(distances, dtype=np.float32).astype(float)
    excess = distances - rhos[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.where((excess <= 0) | (sigmas[:, None] == 0), 1.0,
                          np.exp(-excess / np.where(sigmas == 0, 1.0, sigmas)[:, None]))
    values[indices == np.arange(len(indices))[:, None]] = 0.0
    return values


def fuzzy_graph(indices: np.ndarray, distances: np.ndarray):
    """umap's fuzzy simplicial set (set_op_mix_ratio 1: the fuzzy union), as a scipy COO matrix."""
    import scipy.sparse

    count, k = indices.shape
    sigmas, rhos = smooth_knn_dist(distances, k)
    values = membership_strengths(indices, distances, sigmas, rhos)
    graph = scipy.sparse.coo_matrix((values.ravel(), (np.repeat(np.arange(count), k), indices.ravel())),
                                    shape=(count, count)).tocsr()
    graph.eliminate_zeros()
    transpose = graph.transpose()
    union = graph + transpose - graph.multiply(transpose)
    union.eliminate_zeros()
    return union.tocoo()


# --- the figure -------------------------------------------------------------------------------------------

def weight_map_figure(record: RunRecord, seed: int = 0, wmap: WeightMap | None = None) -> Figure:
    """The map: points coloured by loss (drawn worst first, so the good ones show), the best a star, each cluster
    numbered at its median point (good ones in bold), and a panel naming what the good clusters raise and lower.
    Without a map, a figure saying why. `wmap`: one already computed for this record."""
    wmap = wmap if wmap is not None else weight_map(record, seed)
    if wmap.reason is not None:
        figure = new_figure(8, 1.5)
        figure.text(0.5, 0.5, wmap.reason, ha="center", va="center", wrap=True, parse_math=False, gid="reason")
        return figure
    figure = new_figure(13, 6.5)
    figure.subplots_adjust(left=0.03, right=0.98, bottom=0.05, top=0.9, wspace=0.05)
    axes, panel = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1.5, 1]})
    order = np.argsort(-wmap.losses, kind="stable")
    scatter = axes.scatter(wmap.points[order, 0], wmap.points[order, 1], c=wmap.losses[order], cmap="viridis",
                           s=np.where(wmap.labels[order] >= 0, 14, 6), alpha=0.85, linewidths=0, gid="individuals")
    figure.colorbar(scatter, ax=axes, fraction=0.04, pad=0.01, label="loss (lower is better)")
    best = wmap.points[wmap.best]
    axes.plot([best[0]], [best[1]], marker="*", markersize=18, color=LOSS_COLOUR, markeredgecolor="black",
              linestyle="none", gid="best", label=f"best (loss {wmap.losses[wmap.best]:.4g})")
    for cluster in wmap.clusters:
        centre = np.median(wmap.points[wmap.labels == cluster.cluster], axis=0)
        axes.text(centre[0], centre[1], str(cluster.cluster), ha="center", va="center", fontsize=9,
                  fontweight="bold" if cluster.good else "normal", gid=f"cluster {cluster.cluster}",
                  bbox=dict(boxstyle="round,pad=0.2", facecolor="white", alpha=0.8,
                            edgecolor=LOSS_COLOUR if cluster.good else "grey"))
    axes.set_xticks([])
    axes.set_yticks([])
    axes.legend(loc="upper left", fontsize="small")
    shown = f"{len(wmap.points)} individuals" if len(wmap.points) == wmap.evaluated else \
        f"the best {len(wmap.points)} of {wmap.evaluated} individuals"
    label(axes, f"{shown}, {len(wmap.clusters)} clusters ({len(wmap.good_clusters)} good)",
          xlabel="UMAP 1", ylabel="UMAP 2")
    panel.axis("off")
    panel.text(0, 1, _panel_text(wmap), ha="left", va="top", fontsize=8.5, family="monospace", parse_math=False,
               transform=panel.transAxes, gid="summary")
    figure.suptitle("Weight map: every individual's word weights in 2-D (UMAP), clustered (HDBSCAN)")
    return figure


def _panel_text(wmap: WeightMap) -> str:
    good = wmap.good_clusters
    if not good:
        return (f"No good cluster (none has a mean loss below the median, {wmap.median_loss:.4g}).\n"
                f"{len(wmap.clusters)} cluster(s); {int((wmap.labels < 0).sum())} points in none.")
    lines = [f"Good clusters (mean loss below the median, {wmap.median_loss:.4g}):", ""]
    for cluster in good[:FIGURE_CLUSTERS]:
        lines.append(f"cluster {cluster.cluster}: {cluster.size} individuals, mean loss {cluster.mean_loss:.4g}")
        lines.append("  raises: " + (", ".join(f"{_short(word)} {value:+.3f}" for word, value in cluster.raises)
                                     or "nothing"))
        lines.append("  lowers: " + (", ".join(f"{_short(word)} {value:+.3f}" for word, value in cluster.lowers)
                                     or "nothing"))
    if len(good) > FIGURE_CLUSTERS:
        lines.append(f"... and {len(good) - FIGURE_CLUSTERS} more")
    return "\n".join(lines)


def _short(word: str, size: int = 24) -> str:
    return word if len(word) <= size else word[:size - 1] + "…"


__all__ = ["ClusterSummary", "WeightMap", "available", "cluster_summaries", "weight_map", "weight_map_figure"]
