"""How an individual's pair errors become its loss: the loss modes, and the Hyperbatch tree weighting.

A loss mode says which pairs of images are compared (indices into targets ∪ batch, targets first), whether
it needs targets (without any, the unperturbed prompt's first batch stands in) and how a set of pair errors
aggregates into one number:

- "pairwise" (the original's loss): every pair of targets ∪ batch; mean + std;
- "target": every (batch image, target) pair; mean;
- "consistency": every pair within the batch (targets unused); mean + std.

The tree weighting (the original's Hyperbatch weights) groups the batch's images by their ancestor at each
level K of the fork tree (K = 1 is the root). A group's value is the mode's own aggregate of the pairs
touching it (a pair once per group it touches; pairs between targets touch none); X_K is the mean over the
level's groups, and the loss is Σ_K weight(X_K): Geometric X^(scale/K), Exponential X·(0.5+scale)^K,
Polynomial (1+X)^(scale·K). At the leaf level every image is its own group, so X_leaf is the mode's loss
averaged per image. Pure numpy: no images here.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from . import forks


@dataclass(frozen=True)
class LossMode:
    name: str
    uses_targets: bool  # False: targets are ignored (and none are needed)
    spread: bool        # True: aggregate as mean + std (a batch that disagrees costs more); False: the mean

    def pairs(self, target_count: int, batch_size: int) -> list[tuple[int, int]]:
        raise NotImplementedError

    def aggregate(self, errors: Sequence[float] | np.ndarray) -> float:
        values = np.asarray(errors, dtype=np.float64)
        return float(values.mean() + values.std()) if self.spread else float(values.mean())


class _Pairwise(LossMode):
    def pairs(self, target_count: int, batch_size: int) -> list[tuple[int, int]]:
        return list(itertools.combinations(range(target_count + batch_size), 2))


class _Target(LossMode):
    def pairs(self, target_count: int, batch_size: int) -> list[tuple[int, int]]:
        return [(b, t) for b in range(target_count, target_count + batch_size) for t in range(target_count)]


class _Consistency(LossMode):
    def pairs(self, target_count: int, batch_size: int) -> list[tuple[int, int]]:
        return list(itertools.combinations(range(target_count, target_count + batch_size), 2))


LOSS_MODES: dict[str, LossMode] = {mode.name: mode for mode in (
    _Pairwise("pairwise", uses_targets=True, spread=True),
    _Target("target", uses_targets=True, spread=False),
    _Consistency("consistency", uses_targets=False, spread=True),
)}


def loss_mode(name: str) -> LossMode:
    try:
        return LOSS_MODES[name]
    except KeyError:
        raise ValueError(f"unknown loss mode {name!r}; choose one of: {', '.join(LOSS_MODES)}") from None


# --- the Hyperbatch tree weighting ------------------------------------------------------------------------

TREE_WEIGHTS: dict[str, Callable[[float, float, int], float]] = {
    "Geometric": lambda x, scale, level: x ** (scale / level),
    "Exponential": lambda x, scale, level: x * (0.5 + scale) ** level,
    "Polynomial": lambda x, scale, level: (1 + x) ** (scale * level),
}


def level_losses(mode: LossMode, pairs: Sequence[tuple[int, int]], pair_losses: Sequence[float],
                 image_traces: Sequence[Sequence[int]], target_count: int = 0) -> list[float]:
    """X_K for every level K = 1.. (root first); see the module docstring."""
    result = []
    for level in range(len(image_traces[0])):
        touching = defaultdict(list)
        for pair, loss in zip(pairs, pair_losses):
            for group in {image_traces[i - target_count][level] for i in pair if i >= target_count}:
                touching[group].append(loss)
        result.append(float(np.mean([mode.aggregate(losses) for losses in touching.values()])))
    return result


@dataclass(frozen=True)
class TreeWeighting:
    """The loss weighted level by level of the fork tree of `steps` sampling steps.

    `tree_size`: the rows of one sampling call, each call forked as its own trees (A1111 samples `batch_size`
    rows per call, for each of `n_iter` batches); None: all the images of an individual are one call.
    """

    kind: str = "Geometric"
    scale: float = 1.0
    steps: int = 20
    tree_size: int | None = None

    def __post_init__(self):
        if self.kind not in TREE_WEIGHTS:
            raise ValueError(f"unknown tree weighting {self.kind!r}; choose one of: {', '.join(TREE_WEIGHTS)}")

    def loss(self, mode: LossMode, pairs, pair_losses, target_count: int, batch_size: int) -> float:
        image_traces = forks.call_traces(batch_size, self.tree_size or batch_size, self.steps)
        weight = TREE_WEIGHTS[self.kind]
        return float(sum(weight(x, self.scale, level) for level, x in
                         enumerate(level_losses(mode, pairs, pair_losses, image_traces, target_count), 1)))


def tree_weighting(sampler: str, steps: int, tree_size: int | None, *, enabled: bool, kind: str, scale: float,
                   force: bool) -> TreeWeighting | None:
    """The weighting a run uses: with a Hyperbatch sampler (or `force`, the original's "force allowed"), when on."""
    if not enabled or not (force or forks.is_hyperbatch_sampler(sampler)):
        return None
    return TreeWeighting(kind, scale, steps, tree_size)
