"""Target images: files or uploaded bytes decoded and checked before anything renders, as float tensors.

Any image Pillow reads; transparency is flattened onto white, 16-bit and float images keep their values, and
targets are resized to the render size with a notice.
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
    if path.is_dir():
        raise TargetError(f"target image {str(path)!r} is a folder, not an image file")
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
