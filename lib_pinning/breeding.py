"""Breeding two individuals of a prompt evolution run ("breed these two"): children from their genes.

The children take the place of the first candidates CMA-ES draws for the next generation (the search updates from
whichever of them the chooser picks, as from any other candidate): evenly spaced interpolations between the two
parents' genes, then uniform crossovers (each gene from one parent or the other, from a seeded generator). A
gene is a word's weight offset, so an interpolation is a prompt whose every weight lies between the parents'.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

CHILDREN = 4  # how many of a generation's candidates are the bred pair's children (at most the generation)


def litter(count: int) -> int:
    """How many of a generation of `count` candidates are a bred pair's children."""
    return min(CHILDREN, count)


def lineage(count: int, drawn_around: Sequence[str], bred: dict | None) -> list[list[str]]:
    """Each of a generation's `count` candidates' parents: the bred pair's ids for its children (`bred`: the
    engine's {"parents": [id, id], "genes": [...]}, or None), the ids CMA-ES drew the others around."""
    if bred is None:
        return [list(drawn_around) for _ in range(count)]
    children = litter(count)
    return [list(bred["parents"]) for _ in range(children)] + [list(drawn_around) for _ in range(count - children)]


def children(first: Sequence[float], second: Sequence[float], count: int, seed: Sequence[int]) -> list[np.ndarray]:
    """`count` children of two gene vectors: ⌈count/2⌉ interpolations at k/(n+1) of the way from `first` to
    `second`, then crossovers drawn from `seed` (a seed sequence: the same seed breeds the same children)."""
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if first.shape != second.shape:
        raise ValueError("two parents of one run have as many genes each")
    between = math.ceil(count / 2)
    bred = [first + (second - first) * (k / (between + 1)) for k in range(1, between + 1)]
    rng = np.random.default_rng(list(seed))
    for _ in range(count - between):
        bred.append(np.where(rng.random(first.shape) < 0.5, first, second))
    return bred
