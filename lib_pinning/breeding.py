"""Breeding: two individuals of a prompt evolution run ("breed these two"), or two different prompts.

Two individuals of one run have children from their genes. The children take the place of the first candidates CMA-ES draws for the next generation (the search updates from
whichever of them the chooser picks, as from any other candidate): evenly spaced interpolations between the two
parents' genes, then uniform crossovers (each gene from one parent or the other, from a seeded generator). A
gene is a word's weight offset, so an interpolation is a prompt whose every weight lies between the parents'.

Two different prompts (any two pictures with their parameters) have children whose conditioning is the spherical
interpolation (`slerp`) of the two prompts' conditioning at a few points, rendered with the first parent's
settings and seeds. Each child comes with a written prompt: on the embedded model, whose conditioning is a
weighted sum of word embeddings, a prompt that is exactly the mix; in a WebUI, A1111's `AND` with weights
(`and_prompt`), an approximation, labelled as such (`Child.exact`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import InputError

CHILDREN = 4  # how many of a generation's candidates are the bred pair's children (at most the generation)


def litter(count: int) -> int:
    """How many of a generation of `count` candidates are a bred pair's children."""
    return min(CHILDREN, count)


def lineage(count: int, drawn_around: Sequence, bred: dict | None) -> list[list[str]]:
    """Each of a generation's `count` candidates' parents: the bred pair's ids for its children (`bred`: the
    engine's {"parents": [id, id], "genes": [...]}, or None), for the others the ids CMA-ES drew them all around
    (a list of ids) or each one's own (a list of lists of ids: the genetic algorithm's pairs)."""
    if drawn_around and all(isinstance(parents, list) for parents in drawn_around):
        own = [list(parents) for parents in drawn_around]
    else:
        own = [list(drawn_around) for _ in range(count)]
    children = 0 if bred is None else litter(count)
    return [list(bred["parents"]) for _ in range(children)] + own[children:count]


def named(drawn_around: Sequence, ids: Sequence[str]) -> list:
    """A search's `drawn_around` (indices, or lists of indices per child) with each index replaced by its id."""
    return [[ids[index] for index in parents] if isinstance(parents, list) else ids[parents]
            for parents in drawn_around]


def children(first: Sequence[float], second: Sequence[float], count: int, seed: Sequence[int]) -> list[np.ndarray]:
    """`count` children of two gene vectors: ⌈count/2⌉ interpolations at k/(n+1) of the way from `first` to
    `second`, then crossovers drawn from `seed` (a seed sequence: the same seed breeds the same children)."""
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if first.shape != second.shape:
        raise ValueError("two parents of one run have as many genes each")
    between = math.ceil(count / 2)
    bred = [first + (second - first) * (k / (between + 1)) for k in range(1, between + 1)]
    rng = np.random.default_rng(list(seed))
    for _ in range(count - between):
        bred.append(np.where(rng.random(first.shape) < 0.5, first, second))
    return bred


# --- two different prompts: their conditioning mixed ----------------------------------------------------------

POINTS = (0.25, 0.5, 0.75)  # where between the two prompts the children lie, by default


def check_points(points: Sequence[float]) -> tuple[float, ...]:
    """Mixing points strictly between 0 (the first prompt) and 1 (the second), or an InputError naming the bad one."""
    if not points or len(points) > 16:
        raise InputError(f"breeding two prompts takes 1 to 16 points between them, got {len(points)}")
    for point in points:
        if isinstance(point, bool) or not isinstance(point, (int, float)) or not 0 < point < 1:
            raise InputError(f"a point between two prompts is a number between 0 and 1 (both left out), got {point!r}")
    return tuple(float(point) for point in points)


def slerp_coefficients(first: torch.Tensor, second: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(α, β) with slerp = α·first + β·second along the last dimension: the spherical interpolation of each pair
    of vectors (sin((1-t)θ)/sin θ, sin(tθ)/sin θ, θ their angle), linear where they are (anti)parallel or zero."""
    precise = torch.float32 if first.device.type == "mps" else torch.float64  # MPS has no float64
    first, second = first.to(precise), second.to(precise)
    cosine = torch.nn.functional.cosine_similarity(first, second, dim=-1, eps=1e-12).clamp(-1, 1)
    angle = torch.arccos(cosine)
    sine = torch.sin(angle)
    zero = (first.norm(dim=-1) == 0) | (second.norm(dim=-1) == 0)
    straight = (sine < 1e-6) | zero
    safe = torch.where(straight, torch.ones_like(sine), sine)
    alpha = torch.where(straight, torch.full_like(sine, 1 - t), torch.sin((1 - t) * angle) / safe)
    beta = torch.where(straight, torch.full_like(sine, t), torch.sin(t * angle) / safe)
    return alpha[..., None], beta[..., None]


def slerp(first, second, t: float):
    """The spherical interpolation of two conditionings at `t` (0: `first`, 1: `second`), row by row along the
    last dimension (each token's vector in a WebUI's cross-attention conditioning). Tensors of one shape, or
    dicts of them (SDXL's crossattn and vector), each key mixed alike; the result keeps `first`'s dtype."""
    if isinstance(first, dict):
        return {key: slerp(first[key], second[key], t) for key in first}
    if first.shape != second.shape:
        raise ValueError(f"conditionings of shapes {tuple(first.shape)} and {tuple(second.shape)} cannot be mixed")
    alpha, beta = slerp_coefficients(first, second, t)
    return (alpha * first.to(alpha.dtype) + beta * second.to(alpha.dtype)).to(first.dtype)


def and_prompt(first: str, second: str, t: float) -> str:
    """A1111's composable prompt that leans as `t` does: "first :1-t AND second :t". It averages the two prompts'
    denoiser outputs, not their conditioning: an approximation of a mixed child, labelled as such."""
    return f"{first} :{1 - t:.3g} AND {second} :{t:.3g}"


@dataclass
class Child:
    """A child of two prompts at `t` (0: the first prompt, 1: the second): its written prompts (`exact`: they
    render this very conditioning; else an approximation), its pictures (PNG) and their infotexts if any."""

    t: float
    prompt: str
    negative_prompt: str
    exact: bool
    images: list[bytes]
    infotexts: list[str] = field(default_factory=list)
