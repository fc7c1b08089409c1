"""Image files of the report: PNGs with A1111 infotext, thumbnail strips and summary GIFs.

Everything starts from 8-bit pixels, (N, H, W, 3) uint8 arrays: the live recorder converts the renderer's
tensors once, and a rebuild reads the same pixels back from the saved PNGs, so both derive identical files.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

THUMBNAIL_HEIGHT = 48
FRAME_MILLISECONDS = 400


def to_pixels(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] on any device -> (N, H, W, C) uint8 on the CPU (a copy).

    In numpy: torch's thread pool makes these small element-wise steps slow on a busy CPU.
    """
    values = images.detach().float().cpu().numpy()
    return np.rint(np.clip(values, 0, 1) * 255).astype(np.uint8).transpose(0, 2, 3, 1).copy()


def png_bytes(pixels: np.ndarray, infotext: str | None = None) -> bytes:
    """One (H, W, 3) image as PNG ((H, W, 4): with alpha; (H, W): grey); the infotext goes into the `parameters` text chunk, where A1111 reads it."""
    metadata = None
    if infotext is not None:
        metadata = PngInfo()
        metadata.add_text("parameters", infotext)
    buffer = io.BytesIO()
    # Level 1: a third of the default level's time for files about 7 % larger (a photo-like 512² image);
    # the report writes one per image of every individual.
    Image.fromarray(pixels).save(buffer, format="PNG", pnginfo=metadata, compress_level=1)
    return buffer.getvalue()


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def thumbnail_strip(pixels: np.ndarray) -> bytes:
    """The images side by side, each at most THUMBNAIL_HEIGHT high: one small file per table row."""
    height, width = pixels.shape[1:3]
    scale = min(1.0, THUMBNAIL_HEIGHT / height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    strip = Image.new("RGB", (size[0] * len(pixels), size[1]))
    for position, image in enumerate(pixels):
        strip.paste(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS), (position * size[0], 0))
    buffer = io.BytesIO()
    strip.save(buffer, format="PNG", compress_level=1)  # written for every individual: fast over small
    return buffer.getvalue()


def gif_bytes(pixels: np.ndarray) -> bytes:
    """An endless GIF of the images in order, at their own size.

    All frames are reduced to one shared palette at once (fast octree) and handed to Pillow as palette images:
    given RGB frames (as imageio hands them over), Pillow quantizes each frame again: five times slower at 512².
    Pillow stores consecutive identical frames as one frame shown for their summed durations (Pillow 9.5 shows
    a batch of nothing but identical frames as one frame of FRAME_MILLISECONDS: a still picture either way).
    """
    count, height, width, _ = pixels.shape
    stacked = Image.fromarray(pixels.reshape(count * height, width, 3))
    shared = stacked.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    frames = [shared.crop((0, index * height, width, (index + 1) * height)) for index in range(count)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=FRAME_MILLISECONDS,
                   loop=0)
    return buffer.getvalue()
