"""Matplotlib on the Agg canvas, object-oriented only: pyplot's global state is not safe off the main thread.

Holds the helpers every plot uses, an individual's loss plot and a generation's loss plot.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from ..record import Generation

DPI = 100
PNG_COMPRESSION = 1  # zlib's fastest level: a tenth larger files, several times less time
HISTOGRAM_BINS = 20
PAIR_COLOUR = "tab:blue"
IMAGE_COLOUR = "tab:orange"
LOSS_COLOUR = "tab:red"


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def label(axes, title: str, **labels) -> None:
    """Title and axis labels; the title at a fixed height, since placing it automatically costs a layout per draw."""
    axes.set_title(title, y=1.0)
    axes.set(**labels)


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", pil_kwargs={"compress_level": PNG_COMPRESSION})
    return buffer.getvalue()


def canvas_png(canvas: FigureCanvasAgg) -> bytes:
    """What the canvas shows now, as PNG (savefig would redraw the whole figure)."""
    width, height = canvas.get_width_height()
    image = Image.frombuffer("RGBA", (width, height), canvas.buffer_rgba(), "raw", "RGBA", 0, 1).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESSION)
    return buffer.getvalue()


def quantiles(count: int) -> np.ndarray:
    """x positions 0..1 for `count` sorted values, so sorted pair and image losses share an axis."""
    return np.linspace(0, 1, count) if count > 1 else np.zeros(count)


def shares(values, edges: np.ndarray) -> np.ndarray:
    """The fraction of `values` in each bin, values outside the edges counted in the outermost bins."""
    values = np.clip(np.asarray(values, dtype=float), edges[0], edges[-1])
    return np.histogram(values, bins=edges)[0] / max(len(values), 1)


def spanning_edges(values, bins: int = 16) -> np.ndarray:
    """Histogram edges from the smallest to the largest value (a small span when they are all equal)."""
    values = np.asarray(values, dtype=float)
    low, high = (values.min(), values.max()) if values.size else (0.0, 1.0)
    return np.linspace(low, high if high > low else low + 1e-3, bins + 1)


class LossPlot:
    """An individual's loss_plot.png: histogram and sorted values of its pair and image losses.

    It is drawn for every individual, so it is made cheap: FLIP errors lie in [0, 1], the axes are fixed, and
    the frame, ticks, labels and legend are drawn once; each individual only draws its bars and lines on a
    copy of that background (blitting). One instance per thread.
    """

    def __init__(self):
        self.figure = new_figure(8, 3)
        self.figure.subplots_adjust(left=0.08, right=0.98, bottom=0.17, top=0.84, wspace=0.22)
        histogram_axes, sorted_axes = self.figure.subplots(1, 2)
        self._pair_bars = histogram_axes.stairs([0], [0, 1], fill=True, color=PAIR_COLOUR, alpha=0.5,
                                                label="pairs", animated=True)
        self._image_bars = histogram_axes.stairs([0], [0, 1], color=IMAGE_COLOUR, linewidth=2, label="images",
                                                 animated=True)
        self._loss_line = histogram_axes.axvline(0, color=LOSS_COLOUR, linestyle="--", label="loss", animated=True)
        self._pair_line = sorted_axes.plot([], [], ".-", color=PAIR_COLOUR, label="pairs", animated=True)[0]
        self._image_line = sorted_axes.plot([], [], "o-", color=IMAGE_COLOUR, label="images", animated=True)[0]
        self._title = self.figure.suptitle("", animated=True)
        label(histogram_axes, "Histogram", xlabel="FLIP error", ylabel="share", xlim=(0, 1), ylim=(0, 1))
        label(sorted_axes, "Sorted", xlabel="quantile", ylabel="FLIP error", xlim=(0, 1), ylim=(0, 1))
        sorted_axes.legend(handles=[self._pair_line, self._image_line, self._loss_line], loc="upper left",
                           fontsize="small")
        self._background = None

    def png(self, title: str, loss: float, pair_losses: list[float], image_losses: list[float]) -> bytes:
        canvas = self.figure.canvas
        if self._background is None:
            canvas.draw()
            self._background = canvas.copy_from_bbox(self.figure.bbox)
        canvas.restore_region(self._background)
        edges = np.linspace(0, 1, HISTOGRAM_BINS + 1)
        self._pair_bars.set_data(shares(pair_losses, edges), edges)
        self._image_bars.set_data(shares(image_losses, edges), edges)
        self._loss_line.set_xdata([loss, loss])
        self._pair_line.set_data(quantiles(len(pair_losses)), np.sort(pair_losses))
        self._image_line.set_data(quantiles(len(image_losses)), np.sort(image_losses))
        self._title.set_text(title)
        for artist in (self._pair_bars, self._image_bars, self._loss_line, self._pair_line, self._image_line,
                       self._title):
            self.figure.draw_artist(artist)
        return canvas_png(canvas)


class GenerationPlot:
    """A generation's loss plot: distributions of its individual losses and of all its image losses, sorted and
    as histograms. Drawn once per generation, on one figure kept for the thread (making the figure and its axes
    costs as much as drawing them); only the data, limits and title change. One instance per thread."""

    def __init__(self):
        self.figure = new_figure(9, 6)
        self.figure.subplots_adjust(left=0.08, right=0.98, bottom=0.08, top=0.9, hspace=0.45, wspace=0.22)
        self._rows = self.figure.subplots(2, 2)
        for (sorted_axes, histogram_axes), name in zip(self._rows, ("individual", "image")):
            label(sorted_axes, f"{name.capitalize()} losses, sorted", xlabel="quantile", ylabel="loss")
            label(histogram_axes, f"{name.capitalize()} losses, histogram", xlabel="loss", ylabel="count")

    def draw(self, generation: Generation) -> Figure:
        individual_losses = [individual.loss for individual in generation.individuals]
        image_losses = [loss for individual in generation.individuals for loss in individual.image_losses]
        for (sorted_axes, histogram_axes), values, colour in zip(
                self._rows, (individual_losses, image_losses), (LOSS_COLOUR, IMAGE_COLOUR)):
            for axes in (sorted_axes, histogram_axes):
                for artist in [*axes.lines, *axes.patches]:
                    artist.remove()
            sorted_axes.plot(quantiles(len(values)), np.sort(values), "o-", color=colour, markersize=3)
            histogram_axes.hist(values, bins=spanning_edges(values), color=colour, alpha=0.7)
            for axes in (sorted_axes, histogram_axes):
                axes.relim()
                axes.autoscale_view()
        self.figure.suptitle(f"Generation {generation.index}: {len(individual_losses)} individuals, "
                             f"best {min(individual_losses):.4f}, mean {np.mean(individual_losses):.4f}")
        return self.figure

    def png(self, generation: Generation) -> bytes:
        return png(self.draw(generation))


def generation_figure(generation: Generation) -> Figure:
    """A generation's loss plot on a figure of its own."""
    return GenerationPlot().draw(generation)
