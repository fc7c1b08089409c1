"""What the engine asks of a renderer: prompts in, one batch of images per prompt out, with the run's fixed seeds.

A renderer returns `Rendered` batches: the images as tensors (what the objective scores) and whatever payload its
caller needs besides (the WebUI's PIL images and infotexts), so nothing has to be looked up again by prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


@dataclass
class Rendered:
    images: torch.Tensor  # (B, 3, H, W) in [0, 1], one image per seed
    payload: Any = None   # the renderer's own, handed to observers untouched
    infotexts: list[str] = field(default_factory=list)  # each image's parameters as the WebUI writes them, if any


class Renderer(Protocol):
    seeds: list[int]

    def render(self, prompts: Sequence[tuple[str, str]]) -> list[Rendered]:
        """For each (positive, negative) prompt, its batch: one image per seed."""

    # Optional: `parallel: int`, how many prompts it draws at once at no extra cost. The engine gives it a
    # generation in slices of that many and stops after the individual that pins the run (without it: the whole
    # generation at once, and what it drew after that individual is dropped).
    # Optional: `take_notices() -> list[str]`, what the user should know of the last render (a worker that left
    # the run); the engine adds them to the run's notices.


class RunStopped(Exception):
    """Raised by a renderer (or the engine's stop check) to end the run early, keeping finished generations."""
