"""The loss of one individual: FLIP differences between its images and the targets, aggregated by a loss mode
(`lib_pinning.losses`: which pairs, how they aggregate, the optional Hyperbatch tree weighting).

Each image is preprocessed for FLIP once; every pair reuses the preprocessed tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from . import flip
from .images import prepare_targets
from .losses import LossMode, TreeWeighting, loss_mode


@dataclass
class Score:
    loss: float
    pairs: list[tuple[int, int]]     # indices into targets ∪ batch (targets first)
    pair_losses: list[float]
    image_losses: list[float]        # per batch image: mean FLIP error of the pairs it is in


class Objective:
    """Scores batches of images against fixed targets with the FLIP loss of its mode."""

    def __init__(self, targets: torch.Tensor | Sequence[Image.Image] | None = None,
                 mode: LossMode | str = "pairwise", tree: TreeWeighting | None = None):
        """`targets`: a (T, 3, H, W) tensor, or images brought to the render size by `prepare_targets`."""
        self.mode = loss_mode(mode) if isinstance(mode, str) else mode
        self.tree = tree  # when set, the loss weights the pair losses level by level of the fork tree
        self.targets: torch.Tensor | None = None
        self._pending: list[Image.Image] = []
        if targets is not None and self.mode.uses_targets:
            if isinstance(targets, torch.Tensor):
                self.targets = targets
            elif len(targets):
                self._pending = list(targets)

    def prepare_targets(self, size: tuple[int, int]) -> list[str]:
        """Bring target images to the render size (height, width); one notice per resized target."""
        if not self._pending:
            return []
        self.targets, notices = prepare_targets(self._pending, size)
        self._pending = []
        return notices

    @property
    def needs_targets(self) -> bool:
        """True until targets are set for a mode that compares with them (the first batch then stands in)."""
        return self.mode.uses_targets and self.targets is None and not self._pending

    @property
    def target_count(self) -> int:
        """Targets given (0 until the first batch stands in)."""
        return len(self._pending) if self._pending else 0 if self.targets is None else len(self.targets)

    def set_targets(self, targets: torch.Tensor) -> None:
        if self.mode.uses_targets:
            self.targets = targets

    def score(self, images: torch.Tensor) -> Score:
        """The loss of one individual's (B, 3, H, W) images."""
        if self.needs_targets:
            raise ValueError("the objective has no targets yet")
        targets = images[:0] if self.targets is None else self.targets.to(images.device, images.dtype)
        if targets.shape[1:] != images.shape[1:]:
            raise ValueError(f"targets are {tuple(targets.shape[1:])} but images are {tuple(images.shape[1:])}")
        pairs = self.mode.pairs(len(targets), len(images))
        if not pairs:
            raise ValueError("the loss needs at least two images (use a batch size of 2 or more)")
        errors = flip.FlipImages(torch.cat([targets, images])).errors(pairs).double().cpu().numpy()
        if self.tree is None:
            loss = self.mode.aggregate(errors)
        else:
            loss = self.tree.loss(self.mode, pairs, errors, len(targets), len(images))
        return Score(loss, pairs, errors.tolist(), _image_losses(pairs, errors, len(targets), len(images)))


def _image_losses(pairs, errors, target_count: int, batch_size: int) -> list[float]:
    sums, counts = np.zeros(batch_size), np.zeros(batch_size)
    for (i, j), error in zip(pairs, errors):
        for index in (i, j):
            if index >= target_count:
                sums[index - target_count] += error
                counts[index - target_count] += 1
    return (sums / np.maximum(counts, 1)).tolist()
