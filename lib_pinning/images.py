"""Target images and their masks: files or uploaded bytes decoded and checked before anything renders, as float
tensors.

Any image Pillow reads; 16-bit and float images keep their values, and targets and masks are resized to the render
size with a notice. A mask says how much each pixel of its target counts: white counts, black is ignored, grey
weighs in between. A target's own transparency is its mask unless a mask image is given for it (then the
transparency is flattened onto white, as it is for every image that is not a target).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import InputError


class TargetError(InputError):
    """A target image that cannot be used (missing, empty, a folder, not an image, corrupt, too large)."""


def has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)


def _flattened(image: Image.Image, grey: int) -> Image.Image:
    """The image with its transparency composited onto a grey level (255: white, 0: black)."""
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (grey, grey, grey, 255)), rgba)


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as a (3, H, W) float tensor in [0, 1]; transparency is flattened onto white."""
    if has_alpha(image):
        image = _flattened(image, 255)
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


def open_image(path: str | Path, what: str = "target image") -> Image.Image:
    """Open and fully decode an image file, or raise TargetError with one clear line naming `what` it is."""
    path = Path(path)
    if path.is_dir():
        raise TargetError(f"{what} {str(path)!r} is a folder, not an image file")
    if not path.is_file():
        raise TargetError(f"{what} {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise TargetError(f"{what} {str(path)!r} is empty")
    return decode_image(path, f"{what} {str(path)!r}")


def alpha_mask(image: Image.Image) -> Image.Image | None:
    """A target's transparency as its mask ("L"), or None when it has none or is opaque everywhere."""
    if not has_alpha(image):
        return None
    alpha = image.convert("RGBA").getchannel("A")
    return None if alpha.getextrema()[0] == 255 else alpha


def mask_to_tensor(mask: Image.Image) -> torch.Tensor:
    """A mask image as (H, W) weights in [0, 1]: its brightness; transparent parts count as black."""
    if mask.mode.startswith("I") or mask.mode == "F":
        return _grey_tensor(mask)[0]
    if has_alpha(mask):
        mask = _flattened(mask, 0)
    return torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0)


def check_masks(masks: list[Image.Image | None], target_count: int) -> None:
    """Refuse masks that cannot be used, before anything renders: more masks than targets, an all-black mask."""
    given = sum(mask is not None for mask in masks)
    if given and not target_count:
        raise TargetError(f"{given} target mask{'s' if given > 1 else ''} but no target image: a mask says which part "
                          "of its target counts (give the target images too)")
    if len(masks) > target_count:
        raise TargetError(f"{len(masks)} target masks for {target_count} target images: give one mask per target, "
                          "in the targets' order")
    for index, mask in enumerate(masks):
        if mask is not None and float(mask_to_tensor(mask).max()) == 0.0:
            raise TargetError(f"mask {index + 1} is all black: nothing of target {index + 1} would count (white "
                              "counts, black is ignored)")


def _resized(image: Image.Image, size: tuple[int, int], what: str, notices: list[str]) -> Image.Image:
    height, width = size
    if image.size == (width, height):
        return image
    notices.append(f"{what} is {image.size[0]}x{image.size[1]}: resized to {width}x{height}")
    return image.resize((width, height), Image.Resampling.LANCZOS)


def prepare_targets(images: list[Image.Image], size: tuple[int, int], masks: list[Image.Image | None] = ()
                    ) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """Targets as a (T, 3, H, W) tensor at the render size (height, width), their masks as (T, H, W) (None when no
    target has one; a target without a mask counts everywhere), plus one notice per resize.

    `masks[i]` is target i's mask image (None or missing: its own transparency, if any). Masks are kept to 8 bits,
    as a target PNG's alpha holds them, so a run resumed from its saved targets scores the same.
    """
    check_masks(list(masks), len(images))
    tensors, mask_tensors, notices = [], [], []
    for index, image in enumerate(images):
        mask = masks[index] if index < len(masks) else None
        if mask is None:
            mask = alpha_mask(image)
            if mask is not None:
                image = image.convert("RGBA").convert("RGB")  # the colours under the transparency, not flattened
        image = _resized(image, size, f"target {index + 1}", notices)
        tensors.append(image_to_tensor(image))
        if mask is None:
            mask_tensors.append(None)
            continue
        weights = mask_to_tensor(_resized(mask, size, f"mask {index + 1}", notices))
        weights = torch.round(weights * 255) / 255
        if float(weights.max()) == 0.0:
            raise TargetError(f"mask {index + 1} is all black at the render size: nothing of target {index + 1} "
                              "would count")
        mask_tensors.append(weights)
    if all(mask is None for mask in mask_tensors):
        return torch.stack(tensors), None, notices
    ones = torch.ones(tensors[0].shape[1:])
    return torch.stack(tensors), torch.stack([ones if m is None else m for m in mask_tensors]), notices


def load_targets(paths: list[str | Path], size: tuple[int, int], mask_paths: list[str | Path] = ()
                 ) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """Read every target and mask file (all are checked before any is used) and bring them to the render size."""
    masks = [open_image(path, "mask") for path in mask_paths]
    return prepare_targets([open_image(p) for p in paths], size, masks)
