"""Target images as the WebUI hands them over: gradio file objects from the UI, base64 strings from the API.

The UI's multi-file control gives temp-file objects (`.name` is a path; gradio 4 gives path strings in a
list of dicts or plain paths), the API whatever the client sent: base64 or `data:image/…;base64,` strings.
Everything is decoded and fully read before the first render, so a bad target costs nothing.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..images import TargetError, decode_image

# Larger targets are refused rather than decoded: FLIP at this size would dwarf any render.
MAX_TARGET_PIXELS = 4096 * 4096
MAX_TARGETS = 64


def _is_blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _as_list(value) -> list:
    if isinstance(value, (list, tuple)):
        return [item for item in value if not _is_blank(item)]
    return [] if _is_blank(value) else [value]


def _decode_base64(text: str, where: str) -> bytes:
    payload = text.strip()
    if payload.startswith("data:"):
        header, _, payload = payload.partition(",")
        if ";base64" not in header:
            raise TargetError(f"{where}: a data URL must be base64-encoded (data:image/png;base64,…)")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise TargetError(f"{where}: not a base64 image (send the file's bytes base64-encoded, or a data URL)") \
            from None


def _path_of(item) -> str | os.PathLike | None:
    """The file path of a gradio file value: a temp-file object (`.name`) or a dict with "path"/"name"."""
    if isinstance(item, os.PathLike):
        return item
    if isinstance(item, dict):
        item = item.get("path") or item.get("name")
    elif hasattr(item, "name"):
        item = item.name
    return item if isinstance(item, (str, os.PathLike)) else None


def _open_path(path: Path, where: str) -> Image.Image:
    if not path.is_file():
        raise TargetError(f"{where}: the uploaded file {path.name!r} is gone (upload it again)")
    if path.stat().st_size == 0:
        raise TargetError(f"{where} ({path.name}) is empty")
    return decode_image(path, f"{where} ({path.name})", MAX_TARGET_PIXELS)


def _open_bytes(data: bytes, where: str) -> Image.Image:
    if not data:
        raise TargetError(f"{where} is empty")
    return decode_image(data, where, MAX_TARGET_PIXELS)


def _is_file_path(text: str) -> bool:
    # gradio 4 (Forge) hands uploads over as path strings; an API client sends base64, which may start with
    # "/" ("/9j/" opens every JPEG) but never names an existing file.
    return not text.startswith("data:") and len(text) < 4096 and os.path.isabs(text) and Path(text).is_file()


def decode_target(item, index: int, what: str = "target image") -> Image.Image:
    """One target value (file object, path dict, base64 string, PIL image or array) as a PIL image."""
    where = f"{what} {index + 1}"
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, np.ndarray):
        if item.ndim not in (2, 3) or item.dtype != np.uint8:
            raise TargetError(f"{where}: an array target must be uint8 of shape (H, W) or (H, W, C)")
        return Image.fromarray(item)
    if isinstance(item, str):
        if _is_file_path(item):
            return _open_path(Path(item), where)
        return _open_bytes(_decode_base64(item, where), where)
    path = _path_of(item)
    if path is not None:
        return _open_path(Path(path), where)
    raise TargetError(f"{where}: expected an uploaded file or a base64 string, got {type(item).__name__}")


def decode_targets(value, what: str = "target image") -> list[Image.Image]:
    """All target (or mask) values, decoded and checked; [] when none were given (the first batch becomes the
    target)."""
    items = _as_list(value)
    if len(items) > MAX_TARGETS:
        raise TargetError(f"{len(items)} {what}s: at most {MAX_TARGETS} are used by the loss")
    return [decode_target(item, index, what) for index, item in enumerate(items)]
