"""The run's plots, drawn from run.json's record: CMA-ES state, loss history, word looseness, size front.

Lines carry a `gid` naming what they show ("best loss", "centroid 3", ...), so tests and tools can read the
plotted data back from the returned Figure. Labels drawn from the user's words are literal text (no mathtext:
a "$" in a prompt is a dollar sign).
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from ..record import Individual, RunRecord
from .context import gene_labels
from .figures import IMAGE_COLOUR, LOSS_COLOUR, PAIR_COLOUR, label, new_figure

MAX_LABELLED = 40  # words a plot names one by one; beyond, the ones at the ends (a 500-word prompt stays fast)


def cumulative_evaluations(record: RunRecord) -> np.ndarray:
    """x axis of the CMA plots: evaluations done when each generation's state was recorded."""
    return np.cumsum([generation.evaluations for generation in record.generations])


def cma_series(record: RunRecord) -> dict[str, np.ndarray]:
    """The per-generation values the 4-panel CMA plot shows, one row per generation."""
    generations = record.generations
    states = [generation.cma for generation in generations]
    return {
        "best loss": np.array([generation.best_loss for generation in generations]),
        "mean loss": np.array([generation.mean_loss for generation in generations]),
        "sigma": np.array([state.sigma for state in states]),
        "axis ratio": np.array([state.axis_ratio for state in states]),
        "centroid": np.array([state.centroid for state in states]),
        "scale": np.array([state.scales for state in states]),
        "std": np.array([state.stds for state in states]),
    }


def cma_figure(record: RunRecord) -> Figure:
    """pycma's/DEAP's 4-panel plot: f-values, sigma and axis ratio; centroid; principal axis scales; stds."""
    series, labels = cma_series(record), gene_labels(record)
    x = cumulative_evaluations(record)
    figure = new_figure(12, max(7.0, 0.14 * min(len(labels), MAX_LABELLED) * 2))
    figure.subplots_adjust(left=0.07, right=0.86, bottom=0.07, top=0.93, hspace=0.3, wspace=0.35)
    (values, centroid), (scales, stds) = figure.subplots(2, 2, sharex=True)
    for name, style in (("best loss", "-"), ("mean loss", ":"), ("sigma", "-"), ("axis ratio", "-")):
        values.semilogy(x, series[name], style, gid=name, label=name)
    values.legend(fontsize="small")
    label(values, "f-values (loss), sigma, axis ratio")
    _gene_lines(centroid, x, series["centroid"], "centroid", labels, log=False)
    label(centroid, "Object variables (centroid per word)")
    _gene_lines(scales, x, series["scale"], "scale", None, log=True)
    label(scales, "Scaling (all main axes)", xlabel="evaluations")
    _gene_lines(stds, x, series["std"], "std", labels, log=True)
    label(stds, "Standard deviations in all coordinates", xlabel="evaluations")
    for axes in (values, centroid, scales, stds):
        axes.grid(True, alpha=0.3)
    figure.suptitle("CMA-ES state per generation")
    return figure


def tags_shares(record: RunRecord) -> dict[str, np.ndarray]:
    """Per generation (rows) and tag (columns) of a run evolving tags: the share of its candidates with the tag
    present, and of its chosen ones (NaN where none was chosen)."""
    bases = np.asarray(record.genome.base_weights, dtype=float)
    shares = {"rendered": [], "chosen": []}
    for generation in record.generations:
        present = np.array([np.abs(bases + np.asarray(individual.weights)) > 0 for individual in generation.individuals])
        chosen = np.array([individual.chosen for individual in generation.individuals])
        shares["rendered"].append(present.mean(0))
        shares["chosen"].append(present[chosen].mean(0) if chosen.any() else np.full(len(bases), np.nan))
    return {name: np.array(rows) for name, rows in shares.items()}


def tags_figure(record: RunRecord) -> Figure:
    """Two panels, one line per tag: the share of each generation's candidates with it, and of its chosen ones."""
    shares, labels = tags_shares(record), gene_labels(record)
    x = np.array([generation.index for generation in record.generations])
    figure = new_figure(12, max(4.5, 0.14 * min(len(labels), MAX_LABELLED)))
    figure.subplots_adjust(left=0.07, right=0.86, bottom=0.12, top=0.88, wspace=0.35)
    for axes, name, title in zip(figure.subplots(1, 2, sharey=True), ("rendered", "chosen"),
                                 ("Share of the candidates with the tag", "Share of the chosen with the tag")):
        _gene_lines(axes, x, shares[name], name, labels, log=False)
        label(axes, title, xlabel="generation")
        axes.set_ylim(-0.05, 1.05)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(True, alpha=0.3)
    figure.suptitle("Tags present per generation")
    return figure


def _gene_lines(axes: Axes, x: np.ndarray, rows: np.ndarray, name: str, labels: list[str] | None, log: bool):
    """One line per gene. Beyond MAX_LABELLED genes they are one collection (a line each costs an artist), and
    only the lines ending highest and lowest are named."""
    if log:
        axes.set_yscale("log")
    if rows.shape[1] > MAX_LABELLED:
        colours = [f"C{gene % 10}" for gene in range(rows.shape[1])]
        collection = LineCollection([np.column_stack([x, rows[:, gene]]) for gene in range(rows.shape[1])],
                                    colors=colours, linewidths=0.6, alpha=0.7, gid=f"{name} lines")
        axes.add_collection(collection)
        axes.autoscale_view()
        ends = [(x[-1], rows[-1, gene], colours[gene]) for gene in range(rows.shape[1])]
    else:
        lines = [axes.plot(x, rows[:, gene], gid=f"{name} {gene}", linewidth=1)[0] for gene in range(rows.shape[1])]
        ends = [(line.get_xdata()[-1], line.get_ydata()[-1], line.get_color()) for line in lines]
    if labels:
        _label_line_ends(axes, ends, labels)


def _label_line_ends(axes: Axes, ends: list[tuple], labels: list[str]) -> None:
    """pycma's trick: name each line at the right margin, evenly spaced in the order of their last values; of many
    lines, the MAX_LABELLED / 2 ending highest and lowest."""
    last = np.array([y for _, y, _ in ends], dtype=float)
    order = list(np.argsort(np.log(np.abs(last) + 1e-300) if axes.get_yscale() == "log" else last))
    if len(order) > MAX_LABELLED:
        order = order[:MAX_LABELLED // 2] + order[-MAX_LABELLED // 2:]
    positions = np.linspace(0.02, 0.98, len(order)) if len(order) > 1 else [0.5]
    size = float(np.clip(220 / max(len(order), 1), 4, 8))
    for position, index in zip(positions, order):
        x, y, colour = ends[index]
        axes.annotate(labels[index], xy=(x, y), xytext=(1.02, position), textcoords="axes fraction", fontsize=size,
                      va="center", color=colour, parse_math=False,
                      arrowprops=dict(arrowstyle="-", color=colour, linewidth=0.4, alpha=0.6))


def every_individual(record: RunRecord) -> list[Individual]:
    return [individual for generation in record.generations for individual in generation.individuals]


def history_figure(record: RunRecord) -> Figure:
    """The loss of every evaluation in order, the best so far, and the unperturbed prompt's loss."""
    losses = np.array([individual.loss for individual in every_individual(record)])
    evaluation = np.arange(1, len(losses) + 1)
    figure = new_figure(10, 4)
    figure.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.88)
    axes = figure.subplots()
    axes.plot(evaluation, losses, ".", color=PAIR_COLOUR, alpha=0.5, markersize=4, gid="loss", label="loss")
    axes.step(evaluation, np.minimum.accumulate(losses), where="post", color=LOSS_COLOUR, gid="best so far",
              label="best so far")
    if record.baseline is not None:
        axes.axhline(record.baseline.loss, color="grey", linestyle="--", gid="baseline",
                     label="unperturbed prompt")
    label(axes, "Loss per evaluation", xlabel="evaluation", ylabel="loss")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def final_weights(record: RunRecord) -> np.ndarray:
    """Each word's weight in the pinned prompt: |base weight + gene|, as the prompt writes it."""
    return np.abs(np.array(record.genome.base_weights) + np.array(record.best.weights))


def looseness_figure(record: RunRecord) -> Figure:
    """Per word: its weight in the pinned prompt, and the search's final spread on it relative to the median
    word's (below 1: the loss reacts to that word, the target pins it; above 1: it is free). Of more than
    MAX_LABELLED words, the most pinned and the most free, MAX_LABELLED / 2 each."""
    labels = gene_labels(record)
    spread = np.array(record.generations[-1].cma.stds, dtype=float)
    relative = spread / np.median(spread)
    weights = final_weights(record)
    shown = np.arange(len(labels))
    if len(labels) > MAX_LABELLED:
        order = np.argsort(relative)
        shown = np.sort(np.concatenate([order[:MAX_LABELLED // 2], order[-MAX_LABELLED // 2:]]))
    labels = [labels[gene] for gene in shown]
    relative, weights = relative[shown], weights[shown]
    rows = np.arange(len(labels))
    figure = new_figure(10, 1.4 + 0.28 * len(labels))
    margin = 0.65 / figure.get_figheight()
    figure.subplots_adjust(left=0.2, right=0.97, bottom=margin + 0.02, top=1 - margin, wspace=0.08)
    weight_axes, spread_axes = figure.subplots(1, 2, sharey=True)
    weight_axes.barh(rows, weights, color=PAIR_COLOUR, gid="weight")
    weight_axes.axvline(1.0, color="grey", linewidth=0.8, linestyle=":")
    label(weight_axes, "Weight in the pinned prompt", xlabel="A1111 weight")
    spread_axes.barh(rows, relative - 1, left=1, color=np.where(relative < 1, LOSS_COLOUR, IMAGE_COLOUR),
                     gid="spread")
    reach = max(float(np.abs(relative - 1).max()) * 1.15, 0.05)
    spread_axes.set_xlim(1 - reach, 1 + reach)
    spread_axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"×{value:.3g}"))
    spread_axes.axvline(1.0, color="grey", linewidth=0.8)
    label(spread_axes, "Final spread / median spread", xlabel="red: pinned by the target, orange: free")
    weight_axes.set_yticks(rows, labels, parse_math=False)
    weight_axes.invert_yaxis()
    shown_of = "" if len(shown) == len(record.genome.base_weights) else \
        f" ({len(shown)} of {len(record.genome.base_weights)} words: the most pinned and the most free)"
    figure.suptitle(f"Which words the target pins, and which stay free{shown_of}")
    return figure


def pareto_front(distances: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """Indices of the individuals no other beats on both distance and loss, by increasing distance."""
    order = np.lexsort((losses, distances))
    front, best = [], np.inf
    for index in order:
        if losses[index] < best:
            front.append(index)
            best = losses[index]
    return np.array(front, dtype=int)


def front_figure(record: RunRecord) -> Figure:
    """The size limiter's trade-off: loss against distance ||genes|| from the prompt, Pareto front highlighted."""
    individuals = every_individual(record)
    distances = np.array([np.linalg.norm(individual.weights) for individual in individuals])
    losses = np.array([individual.loss for individual in individuals])
    front = pareto_front(distances, losses)
    figure = new_figure(8, 5)
    figure.subplots_adjust(left=0.1, right=0.97, bottom=0.11, top=0.9)
    axes = figure.subplots()
    axes.plot(distances, losses, ".", color="grey", alpha=0.5, gid="individuals", label="individuals")
    axes.plot(distances[front], losses[front], "o-", color=LOSS_COLOUR, gid="front", label="Pareto front")
    axes.axvline(record.resolved["size_limit"], color=PAIR_COLOUR, linestyle="--", label="size limit")
    label(axes, "Loss against distance from the prompt", xlabel="distance ||genes||", ylabel="loss")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    return figure
