"""run.json: the record of a pinning run, rewritten atomically after every generation.

Layout (the contract other code relies on): version, options, genome {words, negative_words, frozen},
generations [{index, evaluations, best_loss, mean_loss, sigma, individuals [{id, weights, loss, prompt,
negative_prompt, seconds_render, seconds_loss}]}], baseline {loss, prompt, negative_prompt}, best {loss, prompt,
negative_prompt, weights, generation}, status running|done|interrupted|failed (+ message when not done).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

RUN_FILE = "run.json"
FORMAT_VERSION = 1


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON so that readers see either the old file or the new one, never half of one."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=1, allow_nan=False, default=_jsonable)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_run(run_dir: str | Path) -> dict:
    with open(Path(run_dir) / RUN_FILE, encoding="utf-8") as stream:
        return json.load(stream)


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def save_images(images: torch.Tensor, folder: Path, names: list[str], infotext: str | None = None) -> list[Path]:
    """Save (N, 3, H, W) images in [0, 1] as PNGs; the infotext goes into each PNG's `parameters` text chunk."""
    from PIL.PngImagePlugin import PngInfo

    folder.mkdir(parents=True, exist_ok=True)
    pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    paths = []
    for array, name in zip(pixels, names):
        metadata = None
        if infotext is not None:
            metadata = PngInfo()
            metadata.add_text("parameters", infotext)
        path = folder / f"{name}.png"
        Image.fromarray(array).save(path, pnginfo=metadata)
        paths.append(path)
    return paths
