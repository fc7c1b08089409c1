"""Sampler names (as A1111 shows them) mapped to k-diffusion's own sampler functions and noise schedules.

The names are known without importing k-diffusion (the options list them); a sampler's function is looked up
when it is first used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .noise import SeededNoise


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    function_name: str  # k-diffusion's sampler function (lib_pinning.hyperbatch's for a Hyperbatch sampler)
    noise: str  # "none" (ODE), "ancestral" (fresh noise per step) or "brownian" (SDE: Brownian tree)
    hyperbatch: bool = False  # forks each seed's tree during sampling (lib_pinning.hyperbatch)

    @property
    def function(self) -> Callable:
        module = "lib_pinning.hyperbatch" if self.hyperbatch else "k_diffusion.sampling"
        return getattr(importlib.import_module(module), self.function_name)


SAMPLERS: dict[str, SamplerSpec] = {
    spec.name: spec
    for spec in (
        SamplerSpec("Euler", "sample_euler", "none"),
        SamplerSpec("Euler a", "sample_euler_ancestral", "ancestral"),
        SamplerSpec("Heun", "sample_heun", "none"),
        SamplerSpec("DPM++ 2M", "sample_dpmpp_2m", "none"),
        SamplerSpec("DPM++ SDE", "sample_dpmpp_sde", "brownian"),
        SamplerSpec("DPM++ 2M SDE", "sample_dpmpp_2m_sde", "brownian"),
        SamplerSpec("Euler a Hyperbatch", "sample_euler_ancestral_hyperbatch", "ancestral", True),
        SamplerSpec("DPM++ 2M Hyperbatch", "sample_dpmpp_2m_hyperbatch", "none", True),
        SamplerSpec("DPM++ SDE Hyperbatch", "sample_dpmpp_sde_hyperbatch", "brownian", True),
        SamplerSpec("DPM++ 2M SDE Hyperbatch", "sample_dpmpp_2m_sde_hyperbatch", "brownian", True),
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
    from k_diffusion import sampling

    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if schedule == "Karras":
        return sampling.get_sigmas_karras(steps, sigma_min, sigma_max, device=device)
    if schedule == "Exponential":
        return sampling.get_sigmas_exponential(steps, sigma_min, sigma_max, device=device)
    raise ValueError(f"unknown schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")


def img2img_schedule(sigma_schedule: torch.Tensor, denoising_strength: float) -> torch.Tensor:
    """The tail of a full schedule of `steps` that A1111's img2img samples (sigmas[steps - t_enc - 1:])."""
    steps = len(sigma_schedule) - 1
    return sigma_schedule[steps - img2img_steps(steps, denoising_strength):]


def noise_kwargs(spec: SamplerSpec, noise: SeededNoise, sigma_schedule: torch.Tensor) -> dict:
    """The `noise_sampler` argument that keeps a stochastic sampler off torch's global RNG."""
    if spec.noise == "ancestral":
        return {"noise_sampler": noise.ancestral}
    if spec.noise == "brownian":
        positive = sigma_schedule[sigma_schedule > 0]
        # Widened a little: DPM++ SDE recomputes sigmas as exp(-log(sigma)), which can land just outside.
        low, high = float(positive.min()) * (1 - 1e-4), float(positive.max()) * (1 + 1e-4)
        return {"noise_sampler": noise.brownian(low, high)}
    return {}


def img2img_steps(steps: int, denoising_strength: float) -> int:
    """The steps A1111's img2img samples: the denoising strength's share of them, plus one (setup_img2img_steps,
    with "img2img_fix_steps" off, its default)."""
    return int(min(denoising_strength, 0.999) * steps) + 1


def sample(spec: SamplerSpec, denoiser, noise: SeededNoise, sigma_schedule: torch.Tensor,
           extra_args: dict, callback: Callable | None = None, *, groups: int = 1,
           fork_strength: float = 1.0, init: torch.Tensor | None = None) -> torch.Tensor:
    """Run one k-diffusion sampler from the seeded initial noise; returns the denoised batch.

    `init` (img2img): the image the noise is added to, as A1111's img2img starts from it; the schedule is then
    the tail of the full one (`img2img_schedule`).

    A Hyperbatch sampler forks each of the `groups` equal blocks of rows (e.g. one per prompt) as its own trees.
    Some k-diffusion samplers draw from torch's global RNG even when the draw is unused (Euler's churn noise):
    the global state is forked so that a run leaves it as it found it.
    """
    x = noise.initial(float(sigma_schedule[0]))
    if init is not None:
        x = x + init
    options = {"groups": groups, "fork_strength": fork_strength} if spec.hyperbatch else {}
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        return spec.function(denoiser, x, sigma_schedule, extra_args=extra_args, callback=callback, disable=True,
                             **noise_kwargs(spec, noise, sigma_schedule), **options)
