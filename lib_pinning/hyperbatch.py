"""Hyperbatch sampling: each root seed starts as one image and forks at chosen steps until the batch is full.

The early steps are shared between siblings, so they cost one model row instead of several. Everything here
is WebUI-free; the A1111 bridge plugs in its own row selector (conditioning objects) and noise.

The schedule, its rows and their trees are `lib_pinning.forks` (re-exported here: `schedule`, `traces`).

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
from collections.abc import Callable, Sequence

import torch
from k_diffusion import sampling

from .forks import HyperbatchFallbackWarning, check_sizes, forks_fit, schedule, traces  # noqa: F401 (contract names)


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
        check_sizes(sizes, per_group, steps)
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
