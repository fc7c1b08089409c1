"""Sampler names (as A1111 shows them) mapped to k-diffusion's own sampler functions and noise schedules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from k_diffusion import sampling

from .noise import SeededNoise


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    function: Callable
    noise: str  # "none" (ODE), "ancestral" (fresh noise per step) or "brownian" (SDE: Brownian tree)


SAMPLERS: dict[str, SamplerSpec] = {
    spec.name: spec
    for spec in (
        SamplerSpec("Euler", sampling.sample_euler, "none"),
        SamplerSpec("Euler a", sampling.sample_euler_ancestral, "ancestral"),
        SamplerSpec("Heun", sampling.sample_heun, "none"),
        SamplerSpec("DPM++ 2M", sampling.sample_dpmpp_2m, "none"),
        SamplerSpec("DPM++ SDE", sampling.sample_dpmpp_sde, "brownian"),
        SamplerSpec("DPM++ 2M SDE", sampling.sample_dpmpp_2m_sde, "brownian"),
    )
}

SCHEDULES = ("Karras", "Exponential")


def sampler_spec(name: str) -> SamplerSpec:
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}") from None


def sigmas(steps: int, sigma_min: float, sigma_max: float, schedule: str = "Karras",
           device: torch.device | str = "cpu") -> torch.Tensor:
    """The noise levels of `steps` steps, ending in 0 (k-diffusion's own schedule functions)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if schedule == "Karras":
        return sampling.get_sigmas_karras(steps, sigma_min, sigma_max, device=device)
    if schedule == "Exponential":
        return sampling.get_sigmas_exponential(steps, sigma_min, sigma_max, device=device)
    raise ValueError(f"unknown schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")


def noise_kwargs(spec: SamplerSpec, noise: SeededNoise, sigma_schedule: torch.Tensor) -> dict:
    """The `noise_sampler` argument that keeps a stochastic sampler off torch's global RNG."""
    if spec.noise == "ancestral":
        return {"noise_sampler": noise.ancestral}
    if spec.noise == "brownian":
        positive = sigma_schedule[sigma_schedule > 0]
        return {"noise_sampler": noise.brownian(float(positive.min()), float(positive.max()))}
    return {}


def sample(spec: SamplerSpec, denoiser, noise: SeededNoise, sigma_schedule: torch.Tensor,
           extra_args: dict, callback: Callable | None = None) -> torch.Tensor:
    """Run one k-diffusion sampler from the seeded initial noise; returns the denoised batch."""
    x = noise.initial(float(sigma_schedule[0]))
    return spec.function(denoiser, x, sigma_schedule, extra_args=extra_args, callback=callback, disable=True,
                         **noise_kwargs(spec, noise, sigma_schedule))
