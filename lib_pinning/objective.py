"""The loss of one individual: how far its images are from the targets, aggregated by a loss mode
(`lib_pinning.losses`: which pairs, how they aggregate, the optional Hyperbatch tree weighting).

A pair's loss is ꟻLIP weight × its ꟻLIP error + semantic weight × its semantic distance (1 − cosine of the
images' embeddings, `lib_pinning.semantic`); the pairs' losses aggregate by the mode. With target tags, each
image adds tag weight × (1 − its mean tag score), averaged over the batch. Masks weigh the ꟻLIP error map: a pair
with a target counts that target's mask, a pair of targets the product of their masks, a pair of two batch
images the mean of the targets' masks (the part the targets keep); each map's weighted mean is its error.

With target tags and no target images, a mode that compares with targets has no pairs: the tags alone score.
Each image is preprocessed for FLIP once; every pair reuses the preprocessed tensors.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from . import flip
from .errors import InputError
from .images import check_masks, prepare_targets
from .losses import LossMode, TreeWeighting, loss_mode
from .semantic import Embedder, semantic_distances


@dataclass
class Score:
    loss: float
    pairs: list[tuple[int, int]]     # indices into targets ∪ batch (targets first)
    pair_losses: list[float]
    image_losses: list[float]        # per batch image: mean loss of the pairs it is in, plus its tag loss
    place: int | None = None         # a chooser run (lib_pinning.chooser): the place in the generation's choice
    chosen: bool = False             # … and whether it counts as chosen


@dataclass(frozen=True)
class Terms:
    """What a pair's loss is made of, and the tags each image is scored against."""

    flip: float = 1.0                 # weight of the ꟻLIP error
    semantic: float = 0.0             # weight of the semantic distance
    tags: tuple[str, ...] = ()
    tag: float = 1.0                  # weight of the tag loss
    embedder: Embedder | None = None  # needed for a semantic weight or tags

    def __post_init__(self):
        if self.embedder is None and (self.semantic > 0 or self.tags):
            raise InputError("the semantic loss and target tags need an image embedder (CLIP in the WebUI)")
        if not (self.flip > 0 or self.semantic > 0 or (self.tags and self.tag > 0)):
            raise InputError("the loss has nothing to score: give the ꟻLIP weight or the semantic weight a value "
                             "above 0, or target tags with a tag weight above 0")


class Objective:
    """Scores batches of images against fixed targets (and tags) with the loss of its mode."""

    ranks_generation = False  # True: losses are places in a choice made within each generation (a chooser)
    bred: tuple[int, int] | None = None  # a chooser's two candidates to breed into the next generation

    def __init__(self, targets: torch.Tensor | Sequence[Image.Image] | None = None,
                 mode: LossMode | str = "pairwise", tree: TreeWeighting | None = None, *,
                 masks: torch.Tensor | Sequence[Image.Image | None] = (), terms: Terms = Terms()):
        """`targets`: a (T, 3, H, W) tensor, or images brought to the render size by `prepare_targets`; `masks`:
        their (T, H, W) weights, or an image (or None) per target image."""
        self.mode = loss_mode(mode) if isinstance(mode, str) else mode
        self.tree = tree  # when set, the loss weights the pair losses level by level of the fork tree
        self.terms = terms
        self.targets: torch.Tensor | None = None
        self.masks: torch.Tensor | None = None
        self._pending: list[Image.Image] = []
        self._pending_masks: list[Image.Image | None] = []
        self._target_embeddings: torch.Tensor | None = None
        given = targets is not None and len(targets) > 0
        if isinstance(masks, torch.Tensor):
            self.masks = masks
        else:
            check_masks(list(masks), len(targets) if given else 0)
            self._pending_masks = list(masks)
        if given and self.mode.uses_targets:
            if isinstance(targets, torch.Tensor):
                self.targets = targets
            else:
                self._pending = list(targets)
        # Tags without target images: nothing to compare with (the first batch does not stand in).
        self.compares = not self.mode.uses_targets or given or not terms.tags

    def prepare_targets(self, size: tuple[int, int]) -> list[str]:
        """Bring target images (and masks) to the render size (height, width); one notice per resized image."""
        if not self._pending:
            return []
        self.targets, self.masks, notices = prepare_targets(self._pending, size, self._pending_masks)
        self._target_embeddings = None
        self._pending, self._pending_masks = [], []
        return notices

    @property
    def needs_targets(self) -> bool:
        """True until targets are set for a mode that compares with them (the first batch then stands in)."""
        return self.mode.uses_targets and self.compares and self.targets is None and not self._pending

    @property
    def target_count(self) -> int:
        """Targets given (0 until the first batch stands in)."""
        return len(self._pending) if self._pending else 0 if self.targets is None else len(self.targets)

    def set_targets(self, targets: torch.Tensor) -> None:
        if self.mode.uses_targets and self.compares:
            self.targets, self._target_embeddings = targets, None

    def target_pixels(self) -> torch.Tensor | None:
        """The targets as they are scored: (T, 3, H, W), or (T, 4, H, W) with the masks as alpha."""
        if self.targets is None or self.masks is None:
            return self.targets
        return torch.cat([self.targets, self.masks[:, None].to(self.targets)], dim=1)

    def release(self) -> None:
        """The run is over: the embedder gives back what it holds (CLIP leaves the GPU)."""
        if self.terms.embedder is not None:
            self.terms.embedder.release()

    def pairs(self, target_count: int, batch_size: int) -> list[tuple[int, int]]:
        return self.mode.pairs(target_count, batch_size) if self.compares else []

    def score_generation(self, generation: int, prompts: Sequence[tuple[str, str]],
                         batches: Sequence) -> list[tuple[Score, float]]:
        """Each candidate's score (its `Rendered` batch) and the seconds its scoring took."""
        scored = []
        for batch in batches:
            started = time.perf_counter()
            score = self.score(batch.images)
            scored.append((score, time.perf_counter() - started))
        return scored

    def score(self, images: torch.Tensor) -> Score:
        """The loss of one individual's (B, 3, H, W) images."""
        if self.needs_targets:
            raise ValueError("the objective has no targets yet")
        targets = images[:0] if self.targets is None else self.targets.to(images.device, images.dtype)
        if targets.shape[1:] != images.shape[1:]:
            raise ValueError(f"targets are {tuple(targets.shape[1:])} but images are {tuple(images.shape[1:])}")
        pairs = self.pairs(len(targets), len(images))
        if not pairs and not self.terms.tags:
            raise ValueError("the loss needs at least two images (use a batch size of 2 or more)")
        uses_embeddings = self.terms.semantic > 0 or self.terms.tags
        embeddings = self.terms.embedder.embed_images(images) if uses_embeddings else None  # once per batch
        errors = self._pair_losses(targets, images, embeddings, pairs)
        if not pairs:
            loss = 0.0
        elif self.tree is None:
            loss = self.mode.aggregate(errors)
        else:
            loss = self.tree.loss(self.mode, pairs, errors, len(targets), len(images))
        image_losses = np.asarray(_image_losses(pairs, errors, len(targets), len(images)))
        if self.terms.tags:
            tag_losses = self.terms.tag * (1 - self.terms.embedder.tag_scores(embeddings, self.terms.tags).mean(1))
            loss += float(tag_losses.mean())
            image_losses = image_losses + tag_losses.numpy()
        return Score(loss, pairs, errors.tolist(), image_losses.tolist())

    def _pair_losses(self, targets: torch.Tensor, images: torch.Tensor, embeddings: torch.Tensor | None,
                     pairs) -> np.ndarray:
        losses = np.zeros(len(pairs))
        if not pairs:
            return losses
        terms = self.terms
        if terms.flip > 0:
            flipped = flip.FlipImages(torch.cat([targets, images]))
            if self.masks is None:
                errors = flipped.errors(pairs)
            else:
                weights, index = self._pair_masks(pairs, len(targets), images.device)
                errors = flipped.weighted_errors(pairs, weights, index)
            losses += terms.flip * errors.double().cpu().numpy()
        if terms.semantic > 0:
            if len(targets) and self._target_embeddings is None:
                self._target_embeddings = terms.embedder.embed_images(targets)  # the targets never change
            if len(targets):
                embeddings = torch.cat([self._target_embeddings, embeddings])
            losses += terms.semantic * semantic_distances(embeddings, pairs).numpy()
        return losses

    def _pair_masks(self, pairs, target_count: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The weight maps of the pairs' ꟻLIP errors: the targets' masks, their products, their mean; and which
        map each pair uses."""
        masks = self.masks.to(device, torch.float32)
        maps, index, known = [masks[t] for t in range(target_count)] + [masks.mean(0)], [], {}
        for i, j in pairs:
            if i < target_count and j < target_count:
                if (i, j) not in known:
                    known[(i, j)] = len(maps)
                    maps.append(masks[i] * masks[j])
                index.append(known[(i, j)])
            else:
                target = i if i < target_count else j if j < target_count else None
                index.append(target_count if target is None else target)
        return torch.stack(maps), torch.tensor(index, dtype=torch.int64, device=device)


def _image_losses(pairs, errors, target_count: int, batch_size: int) -> list[float]:
    sums, counts = np.zeros(batch_size), np.zeros(batch_size)
    for (i, j), error in zip(pairs, errors):
        for index in (i, j):
            if index >= target_count:
                sums[index - target_count] += error
                counts[index - target_count] += 1
    return (sums / np.maximum(counts, 1)).tolist()
