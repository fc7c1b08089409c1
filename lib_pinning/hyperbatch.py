"""Hyperbatch sampling: each root seed starts as one image and forks at chosen steps until the batch is full.

The early steps are shared between siblings, so they cost one model row instead of several. Everything here
is WebUI-free; the A1111 bridge plugs in its own row selector (conditioning objects) and noise.

The schedule. `schedule(B, steps)` is the original extension's even doubling schedule: with
L = ceil(log2 B) forks and d = max(1, steps // (L + 1)), level j (j = 1..L) starts at step max(0, j·d − 1)
with min(2^j, B) rows, so 20 steps at B = 8 give 4 steps at 1 row, 5 at 2, 5 at 4 and 6 at 8. For a B that is
not a power of two the last fork adds only the leftover rows (B = 7: 1, 2, 4, 7, in the same 4, 5, 5, 6 steps;
the original made the leftover fork an extra, shorter segment: 5, 6, 6, 3). When steps ≤ floor(log2 B)
there is no room to fork: every step runs the whole batch (plain sampling) and a HyperbatchFallbackWarning
says so.

Rows. Within a group of B rows, row r is image r (seed r). A fork from m to n rows appends rows m..n−1, and
row r's parent is row r − m. A fork before step 0 has no parent to share: those rows start from their own
initial noise (independent roots).

The fork operator. After a segment the parent is at noise level σ = sigmas[s] with state x and last denoised
prediction D (the model's output at the previous step, σ' = sigmas[s−1]). Write x = D + σ·ε. A child becomes

    x_child = D + σ·(sqrt(1 − f²)·ε + f·ε_child),    f = σ_up / σ,  σ_up = get_ancestral_step(σ', σ, η)

with ε_child unit Gaussian noise of the child's own seed and η the fork strength. The child keeps the parent's
prediction and a unit-variance mix of the parent's and its own noise, so it is a state at the scheduled level
σ. With η = 1 the fork injects exactly the noise of one ancestral (DDPM) step from σ' to σ: for the Euler
update x = D + σ·ε with ε = (x_prev − D)/σ', x_child is literally one Euler-ancestral step, the stochastic
update every ancestral sampler relies on to sample the right distribution. η = 0 gives identical copies
(children then differ only through their own ancestral noise, none for ODE samplers); η > 1 diverges further
until f = 1 (children share only D).

Segments. Each constant-batch segment is one call of k-diffusion's own sampler function on
sigmas[start:stop + 1]. Stateless samplers (Euler a, DPM++ SDE) take the same steps as the plain sampler;
multistep ones (DPM++ 2M, DPM++ 2M SDE) restart their history at each segment, so the first step after a
fork is first order. With a single segment (B = 1, or the fallback) the call is the plain sampler's, exactly.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from k_diffusion import sampling

WEIGHT_KINDS = ("Geometric", "Exponential", "Polynomial")
HYPERBATCH_SUFFIX = " Hyperbatch"


class HyperbatchFallbackWarning(UserWarning):
    """Too few steps to fork: the Hyperbatch sampler samples the whole batch at every step."""


# --- schedule and traces ----------------------------------------------------------------------------------


def _level_starts(batch_size: int, steps: int) -> list[int] | None:
    """The step at which each fork's rows join; None when steps ≤ floor(log2 B) leave no room to fork."""
    if batch_size < 1 or steps < 1:
        raise ValueError(f"batch size and steps must be at least 1, got {batch_size} and {steps}")
    forks = (batch_size - 1).bit_length()  # ceil(log2 B)
    if forks and steps <= batch_size.bit_length() - 1:
        return None
    length = max(1, steps // (forks + 1))
    return [max(0, level * length - 1) for level in range(1, forks + 1)]


def forks_fit(batch_size: int, steps: int) -> bool:
    """Whether `steps` leave room to fork a batch of `batch_size` (else the sampler samples it plainly)."""
    return _level_starts(batch_size, steps) is not None


def _step_sizes(batch_size: int, steps: int) -> list[int]:
    starts = _level_starts(batch_size, steps)
    if starts is None:
        return [batch_size] * steps
    return [min(batch_size, 2 ** sum(start <= step for start in starts)) for step in range(steps)]


def schedule(batch_size: int, steps: int) -> list[tuple[int, int]]:
    """[(step index i, rows that step i advances)] for i = 0..steps−1: the batch size after any fork before i.

    Example: schedule(8, 20) = [(0, 1), …, (3, 1), (4, 2), …, (8, 2), (9, 4), …, (13, 4), (14, 8), …, (19, 8)].
    When steps ≤ floor(log2 batch_size) every entry is (i, batch_size) and a HyperbatchFallbackWarning is issued
    (Python shows it once per calling line).
    """
    if not forks_fit(batch_size, steps):
        warnings.warn(f"{steps} steps leave no room to fork a batch of {batch_size} (steps must exceed "
                      f"floor(log2 {batch_size})): sampling the whole batch at every step",
                      HyperbatchFallbackWarning, stacklevel=2)
    return list(enumerate(_step_sizes(batch_size, steps)))


def _check_sizes(sizes: Sequence[int], batch_size: int, steps: int) -> None:
    if len(sizes) != steps or sizes[-1] != batch_size or sizes[0] < 1:
        raise ValueError(f"batch sizes must give one size per step ({steps}), start at 1 or more and end at "
                         f"the batch size {batch_size}; got {list(sizes)}")
    for previous, size in zip(sizes, sizes[1:]):
        if not previous <= size <= 2 * previous:
            raise ValueError(f"a fork can at most double the rows and never drop any; got {previous} -> {size}")


def traces_of(sizes: Sequence[int]) -> list[list[int]]:
    """For each final row, its ancestor's row at every level (one level per distinct size), root level first."""
    levels = sorted(set(sizes))
    result = []
    for row in range(levels[-1]):
        trace = [row]
        for smaller in reversed(levels[:-1]):
            trace.append(trace[-1] - smaller if trace[-1] >= smaller else trace[-1])
        result.append(trace[::-1])
    return result


def traces(batch_size: int, steps: int) -> list[list[int]]:
    """For each final image, its ancestor index at every level, root first (level K = 1 is the root).

    traces(8, 20)[5] == [0, 1, 1, 5]: image 5 was forked from row 1 at the 4→8 fork, which descends from row 1
    of the 2-row level, a child of the root 0. In the fallback every image is its own root: [[0], [1], …].
    (The original listed traces leaf first.)
    """
    return traces_of(_step_sizes(batch_size, steps))


# --- rows, noise and the fork operator --------------------------------------------------------------------


def select_rows(extra_args: dict, rows: torch.Tensor) -> dict:
    """The default row selector: a new dict whose tensors are indexed along dim 0; other values pass through."""
    return {key: value[rows.to(value.device)] if torch.is_tensor(value) and value.dim() > 0 else value
            for key, value in extra_args.items()}


def _rows(size: int, per_group: int, groups: int, device) -> torch.Tensor:
    """Absolute indices of rows 0..size−1 of every group."""
    return (torch.arange(groups, device=device)[:, None] * per_group + torch.arange(size, device=device)).flatten()


def _fork_rows(alive: int, size: int, per_group: int, groups: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(parents, children): children alive..size−1 of every group, each with parent row child − alive."""
    children = _rows(size, per_group, groups, device).view(groups, size)[:, alive:].flatten()
    return children - alive, children


def fork(x: torch.Tensor, denoised: torch.Tensor, sigma_prev, sigma, noise: torch.Tensor,
         strength: float) -> torch.Tensor:
    """Children of states `x` at level `sigma` (see the module docstring): D + σ(sqrt(1−f²)ε + f·noise)."""
    _, sigma_up = sampling.get_ancestral_step(sigma_prev, sigma, strength)
    keep = math.sqrt(max(0.0, 1.0 - float(sigma_up / sigma) ** 2))
    # Written as x + … so that strength 0 returns x bit for bit.
    return x + (keep - 1.0) * (x - denoised) + sigma_up * noise


def _segments(sizes: Sequence[int]) -> list[tuple[int, int, int]]:
    """(start, stop, size): maximal runs of steps with the same number of rows."""
    bounds = [0] + [i for i in range(1, len(sizes)) if sizes[i] != sizes[i - 1]] + [len(sizes)]
    return [(start, stop, sizes[start]) for start, stop in zip(bounds, bounds[1:])]


def _select_noise_sampler(kwargs: dict, rows: torch.Tensor) -> dict:
    """A full-batch `noise_sampler` (one row per seed) narrowed to the rows a segment advances."""
    full = kwargs.get("noise_sampler")
    if full is None:
        return kwargs
    return {**kwargs, "noise_sampler": lambda sigma, sigma_next: full(sigma, sigma_next)[rows]}


class _StepRecorder:
    """Forwards k-diffusion callbacks with global step indices and keeps each row's last denoised prediction."""

    def __init__(self, like: torch.Tensor, callback: Callable | None):
        self.denoised = torch.zeros_like(like)
        self.callback = callback

    def segment(self, start: int, rows: torch.Tensor) -> Callable:
        def record(info: dict) -> None:
            self.denoised[rows] = info["denoised"]
            if self.callback is not None:
                self.callback({**info, "i": info["i"] + start})
        return record


# --- the sampler wrapper ----------------------------------------------------------------------------------


def _initial_noise(x: torch.Tensor, sigmas: torch.Tensor) -> Callable:
    # txt2img starts from x = sigma_max·z: a row's own initial noise is its seed's first draw, unused by a
    # child (children inherit their parent's state), so it is the child's fresh noise at its fork.
    return lambda rows: x[rows] / sigmas[0]


def hyperbatch(sampler: Callable) -> Callable:
    """A Hyperbatch version of a k-diffusion sampler function, driving it segment by segment.

    The result keeps k-diffusion's signature `f(model, x, sigmas, extra_args=None, callback=None,
    disable=None, **sampler_kwargs)`: `x` holds every row's initial noise, the result every row's sample. Extra
    keyword-only options:
      fork_strength  η ≥ 0 of the fork operator (default 1: one ancestral step's noise);
      groups         x holds `groups` independent blocks of B rows (e.g. prompts × seeds), forked alike;
      batch_sizes    rows per group at every step (default: `schedule(B, steps)`);
      select         (extra_args, rows) -> new extra_args for those rows (default `select_rows`);
      fork_noise     rows -> unit noise for those children (default: their own initial noise x[rows]/sigmas[0],
                     right for txt2img; img2img callers pass their seeded noise).
    A `noise_sampler` in sampler_kwargs is full-batch (one row per seed) and is narrowed per segment.
    """

    @torch.no_grad()
    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None, *, fork_strength: float = 1.0,
               groups: int = 1, batch_sizes: Sequence[int] | None = None, select: Callable = select_rows,
               fork_noise: Callable | None = None, **sampler_kwargs):
        if groups < 1 or x.shape[0] % groups:
            raise ValueError(f"{x.shape[0]} rows do not split into {groups} groups")
        extra_args = {} if extra_args is None else extra_args
        per_group, steps = x.shape[0] // groups, len(sigmas) - 1
        sizes = [size for _, size in schedule(per_group, steps)] if batch_sizes is None else list(batch_sizes)
        _check_sizes(sizes, per_group, steps)
        fork_noise = fork_noise or _initial_noise(x, sigmas)
        full, recorder, alive = x.clone(), _StepRecorder(x, callback), 0
        for start, stop, size in _segments(sizes):
            if alive:
                parents, children = _fork_rows(alive, size, per_group, groups, x.device)
                full[children] = fork(full[parents], recorder.denoised[parents], sigmas[start - 1], sigmas[start],
                                      fork_noise(children), fork_strength)
            rows = _rows(size, per_group, groups, x.device)
            whole = size == per_group  # the plain sampler's own arguments: exact equality without forks
            full[rows] = sampler(model, full if whole else full[rows], sigmas[start:stop + 1],
                                 extra_args=extra_args if whole else select(extra_args, rows),
                                 callback=recorder.segment(start, rows), disable=disable,
                                 **(sampler_kwargs if whole else _select_noise_sampler(sampler_kwargs, rows)))
            alive = size
        return full

    options = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
               for name, default in (("fork_strength", 1.0), ("groups", 1), ("batch_sizes", None),
                                     ("select", select_rows), ("fork_noise", None))]
    plain = inspect.signature(sampler)
    # A1111 reads the signature to decide which arguments (sigmas, eta, s_noise, noise_sampler) to pass.
    sample.__signature__ = plain.replace(parameters=[*plain.parameters.values(), *options])
    sample.plain_sampler = sampler  # callers that pass the options themselves show the plain signature
    sample.__name__ = sample.__qualname__ = f"{sampler.__name__}_hyperbatch"
    sample.__doc__ = f"{(sampler.__doc__ or sampler.__name__).strip()} Hyperbatch (see lib_pinning.hyperbatch)."
    return sample


sample_euler_ancestral_hyperbatch = hyperbatch(sampling.sample_euler_ancestral)
sample_dpmpp_2m_hyperbatch = hyperbatch(sampling.sample_dpmpp_2m)
sample_dpmpp_sde_hyperbatch = hyperbatch(sampling.sample_dpmpp_sde)
sample_dpmpp_2m_sde_hyperbatch = hyperbatch(sampling.sample_dpmpp_2m_sde)


# --- weights for the objective ----------------------------------------------------------------------------


_WEIGHTS: dict[str, Callable[[float, float, int], float]] = {
    "Geometric": lambda x, scale, level: x ** (scale / level),
    "Exponential": lambda x, scale, level: x * (0.5 + scale) ** level,
    "Polynomial": lambda x, scale, level: (1 + x) ** (scale * level),
}


def level_losses(pairs: Sequence[tuple[int, int]], pair_losses: Sequence[float], image_traces: Sequence[Sequence[int]],
                 target_count: int = 0) -> list[float]:
    """X_K for every level K = 1.. (root first).

    Pair indices count the targets first (as `objective.Score.pairs`). At each level the images are grouped by
    their ancestor there; a group's value is mean + std of the losses of the pairs touching it (each pair once
    per group it touches; target-only pairs touch none); X_K is the mean over groups.
    """
    result = []
    for level in range(len(image_traces[0])):
        touching = defaultdict(list)
        for pair, loss in zip(pairs, pair_losses):
            for group in {image_traces[i - target_count][level] for i in pair if i >= target_count}:
                touching[group].append(loss)
        result.append(float(np.mean([np.mean(v) + np.std(v) for v in touching.values()])))
    return result


def weighted_loss(pairs: Sequence[tuple[int, int]], pair_losses: Sequence[float], image_traces: Sequence[Sequence[int]],
                  kind: str = "Geometric", scale: float = 1.0, target_count: int = 0) -> float:
    """Σ_K weight(X_K): Geometric X^(scale/K), Exponential X·(0.5+scale)^K, Polynomial (1+X)^(scale·K)."""
    weight = _WEIGHTS[kind]
    return float(sum(weight(x, scale, level)
                     for level, x in enumerate(level_losses(pairs, pair_losses, image_traces, target_count), 1)))


def is_hyperbatch_sampler(name: str) -> bool:
    return name.endswith(HYPERBATCH_SUFFIX)


@dataclass(frozen=True)
class HyperbatchWeights:
    """The objective's Hyperbatch weighting: `kind` in WEIGHT_KINDS, `scale`, and the sampling steps (traces).

    `force` is the original's "force allowed" switch: weight the loss even when the sampler is not a
    Hyperbatch one (the images are then grouped by the tree the schedule would have built). `tree_size`: the
    rows of one sampling call, each forked as its own trees (A1111 samples `batch_size` rows per call, for
    each of `n_iter` batches); None: all the images of an individual are one call.
    """

    kind: str = "Geometric"
    scale: float = 1.0
    steps: int = 20
    force: bool = True
    tree_size: int | None = None

    def __post_init__(self):
        if self.kind not in WEIGHT_KINDS:
            raise ValueError(f"unknown hyperbatch weight type {self.kind!r}; choose one of: {', '.join(WEIGHT_KINDS)}")

    def applies_to(self, sampler: str) -> bool:
        return self.force or is_hyperbatch_sampler(sampler)

    def loss(self, pairs, pair_losses, target_count: int, batch_size: int) -> float:
        size = self.tree_size or batch_size
        if batch_size % size:
            raise ValueError(f"{batch_size} images do not split into sampling calls of {size}")
        one_call = traces(size, self.steps)
        # Calls are independent: each call's tree ids are offset so that no two calls share an ancestor.
        image_traces = [[row + call * size for row in one_call[image]]
                        for call in range(batch_size // size) for image in range(size)]
        return weighted_loss(pairs, pair_losses, image_traces, self.kind, self.scale, target_count)
