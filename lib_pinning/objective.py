"""The loss of one individual: FLIP differences between its images and the targets.

Modes:
- "pairwise" (the original's loss): mean + std of the FLIP error of every pair in targets ∪ batch;
- "target": mean FLIP error of every (batch image, target) pair;
- "consistency": mean + std of the FLIP error of every pair within the batch (targets unused).
"""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from . import flip
from .hyperbatch import HyperbatchWeights

LOSS_MODES = ("pairwise", "target", "consistency")


class TargetError(ValueError):
    """A target image that cannot be used (missing, empty, not an image, corrupt)."""


@dataclass
class Score:
    loss: float
    pairs: list[tuple[int, int]]     # indices into targets ∪ batch (targets first)
    pair_losses: list[float]
    image_losses: list[float]        # per batch image: mean FLIP error of the pairs it is in


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as a (3, H, W) float tensor in [0, 1]; transparency is flattened onto white."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode.startswith("I") or image.mode == "F":  # 16/32-bit or float: convert("RGB") would clip them
        return _grey_tensor(image)
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _grey_tensor(image: Image.Image) -> torch.Tensor:
    """A high-bit-depth grey image as (3, H, W) in [0, 1]: 16-bit values over 65535, float values clipped."""
    values = np.asarray(image, dtype=np.float32)
    if image.mode != "F":
        values = values / (65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0)
    grey = torch.from_numpy(np.clip(values, 0.0, 1.0))
    return grey.expand(3, *grey.shape).contiguous()


def decode_image(source: str | Path | bytes, where: str, max_pixels: int | None = None) -> Image.Image:
    """Fully decode an image file or its bytes, or raise TargetError naming `where` in one clear line.

    With `max_pixels`, a larger image is refused from its header, before its pixels are decoded.
    """
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            width, height = image.size
            if max_pixels is None or width * height <= max_pixels:
                image.load()
                return image.copy()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise TargetError(f"{where} is not a readable image ({error})") from None
    raise TargetError(f"{where} is {width}x{height}: larger than the {max_pixels} pixels a target may have "
                      "(scale it down to the output size)")


def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image file, or raise TargetError with one clear line."""
    path = Path(path)
    if not path.is_file():
        raise TargetError(f"target image {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise TargetError(f"target image {str(path)!r} is empty")
    return decode_image(path, f"target image {str(path)!r}")


def prepare_targets(images: list[Image.Image], size: tuple[int, int]) -> tuple[torch.Tensor, list[str]]:
    """Targets as a (T, 3, H, W) tensor at the render size (height, width), plus one notice per resize."""
    height, width = size
    tensors, notices = [], []
    for index, image in enumerate(images):
        if image.size != (width, height):
            notices.append(f"target {index + 1} is {image.size[0]}x{image.size[1]}: resized to {width}x{height}")
            image = image.resize((width, height), Image.Resampling.LANCZOS)
        tensors.append(image_to_tensor(image))
    return torch.stack(tensors), notices


def load_targets(paths: list[str | Path], size: tuple[int, int]) -> tuple[torch.Tensor, list[str]]:
    """Read every target file (all are checked before any is used) and bring them to the render size."""
    return prepare_targets([open_image(p) for p in paths], size)


class Objective:
    """Scores batches of images against fixed targets with the FLIP loss of the chosen mode."""

    def __init__(self, targets: torch.Tensor | None = None, mode: str = "pairwise",
                 hyperbatch: HyperbatchWeights | None = None):
        if mode not in LOSS_MODES:
            raise ValueError(f"unknown loss mode {mode!r}; choose one of: {', '.join(LOSS_MODES)}")
        self.mode = mode
        self.targets = targets
        self.hyperbatch = hyperbatch  # when set, the loss weights the pair losses level by level

    def set_targets(self, targets: torch.Tensor) -> None:
        self.targets = targets

    def _pairs(self, target_count: int, batch_size: int) -> list[tuple[int, int]]:
        batch = range(target_count, target_count + batch_size)
        if self.mode == "pairwise":
            return list(itertools.combinations(range(target_count + batch_size), 2))
        if self.mode == "target":
            return [(b, t) for b in batch for t in range(target_count)]
        return list(itertools.combinations(batch, 2))

    def score(self, images: torch.Tensor) -> Score:
        """The loss of one individual's (B, 3, H, W) images."""
        if self.targets is None and self.mode != "consistency":
            raise ValueError("the objective has no targets yet")
        targets = self.targets if self.mode != "consistency" else images[:0]
        targets = targets.to(images.device, images.dtype)
        if targets.shape[1:] != images.shape[1:]:
            raise ValueError(f"targets are {tuple(targets.shape[1:])} but images are {tuple(images.shape[1:])}")
        pool = torch.cat([targets, images])
        pairs = self._pairs(len(targets), len(images))
        if not pairs:
            raise ValueError("the loss needs at least two images (use a batch size of 2 or more)")
        errors = flip.FlipImages(pool).errors(pairs).double().cpu().numpy()
        loss = float(errors.mean()) if self.mode == "target" else float(errors.mean() + errors.std())
        if self.hyperbatch is not None:
            loss = self.hyperbatch.loss(pairs, errors, len(targets), len(images))
        return Score(loss, pairs, errors.tolist(), _image_losses(pairs, errors, len(targets), len(images)))


def _image_losses(pairs, errors, target_count: int, batch_size: int) -> list[float]:
    sums, counts = np.zeros(batch_size), np.zeros(batch_size)
    for (i, j), error in zip(pairs, errors):
        for index in (i, j):
            if index >= target_count:
                sums[index - target_count] += error
                counts[index - target_count] += 1
    return (sums / np.maximum(counts, 1)).tolist()
