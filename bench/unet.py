"""An SD1.5-shaped model with random weights for the bench scripts: diffusers' UNet and VAE decoder built from
their configs (compute equals a trained model's, pictures are noise), k-diffusion's eps wrapper, A1111's
classifier-free guidance, and a renderer the engine can pin with (bench/overhead.py --renderer unet).

Needs diffusers, which the package does not depend on: `pip install -e '.[bench]'`.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.utils import logging as diffusers_logging
from k_diffusion.external import DiscreteEpsDDPMDenoiser

from benchlib import ROOT  # noqa: F401  (puts the checkout on sys.path)

from lib_pinning.emphasis import parse_attention  # noqa: E402
from lib_pinning.noise import SeededNoise  # noqa: E402
from lib_pinning.rendering import Rendered  # noqa: E402
from lib_pinning.samplers import sample, sampler_spec, sigmas  # noqa: E402

diffusers_logging.set_verbosity_error()  # its advice on fp16 casts concerns pretrained weights, which these are not
TOKENS = 77
LATENT_SCALE = 0.18215  # SD1.5's VAE scaling factor


@dataclass(frozen=True)
class Profile:
    name: str
    block_out_channels: tuple[int, ...]
    layers_per_block: int
    cross_attention_dim: int
    latent_size: int
    dtype: torch.dtype
    vae_channels: tuple[int, ...]  # the VAE decoder's blocks (SD1.5: 128 256 512 512, 8x upscaling)
    vae_layers: int


SD15 = Profile("SD1.5-shaped", (320, 640, 1280, 1280), 2, 768, 64, torch.float16, (128, 256, 512, 512), 2)
TINY = Profile("shrunken SD1.5-shaped", (32, 64, 64, 64), 1, 64, 8, torch.float32, (32, 32, 32, 32), 1)


def build_unet(profile: Profile, device: torch.device, seed: int = 0) -> UNet2DConditionModel:
    """SD1.5's UNet layout (three cross-attention levels and a plain one) with random weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=profile.latent_size, in_channels=4, out_channels=4, layers_per_block=profile.layers_per_block,
            block_out_channels=profile.block_out_channels,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=profile.cross_attention_dim, attention_head_dim=8)
    return unet.to(device=device, dtype=profile.dtype).eval()


def build_vae(profile: Profile, device: torch.device, seed: int = 1) -> AutoencoderKL:
    """SD1.5's VAE layout with random weights (only its decoder is used)."""
    levels = len(profile.vae_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=profile.vae_channels,
                            down_block_types=("DownEncoderBlock2D",) * levels,
                            up_block_types=("UpDecoderBlock2D",) * levels, layers_per_block=profile.vae_layers,
                            sample_size=profile.latent_size * 2 ** (levels - 1))
    return vae.to(device=device, dtype=profile.dtype).eval()


class EpsUNet(torch.nn.Module):
    """diffusers' UNet in the `inner_model(x, t, cond=…)` form k-diffusion's eps wrapper calls."""

    def __init__(self, unet: UNet2DConditionModel):
        super().__init__()
        self.unet = unet

    def forward(self, x, t, cond):
        return self.unet(x.to(self.unet.dtype), t, encoder_hidden_states=cond.to(self.unet.dtype)).sample.to(x.dtype)


def sd_alphas_cumprod(device: torch.device) -> torch.Tensor:
    """SD1.5's scaled-linear beta schedule."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float().to(device)


def eps_denoiser(profile: Profile, device: torch.device) -> DiscreteEpsDDPMDenoiser:
    return DiscreteEpsDDPMDenoiser(EpsUNet(build_unet(profile, device)), sd_alphas_cumprod(device), quantize=True)


class CFGDenoiser(torch.nn.Module):
    """Classifier-free guidance as A1111 does it: one model call on [x, x] with [cond, uncond]. `clock`, when
    given, times every call: `calls` holds (rows, seconds), the step costs."""

    def __init__(self, denoiser: DiscreteEpsDDPMDenoiser, clock=None):
        super().__init__()
        self.inner = denoiser
        self.clock = clock
        self.calls: list[tuple[int, float]] = []

    def forward(self, x, sigma, cond, uncond, cond_scale):
        start = self.clock() if self.clock else 0.0
        conditional, unconditional = self.inner(torch.cat([x, x]), torch.cat([sigma, sigma]),
                                                cond=torch.cat([cond, uncond])).chunk(2)
        denoised = unconditional + (conditional - unconditional) * cond_scale
        if self.clock:
            self.calls.append((len(x), self.clock() - start))
        return denoised


class WordConditioning:
    """A CLIP-shaped conditioning (77 tokens × width) for a prompt in A1111's syntax: every word a fixed random
    vector (seeded by the word), scaled by its emphasis weight. A stand-in for CLIP: the cost that matters here is
    the UNet's and the VAE's; what it must have is that other weights give other conditionings."""

    def __init__(self, width: int, seed: int = 0):
        self.width, self.seed = width, seed
        self._vectors: dict[str, torch.Tensor] = {}

    def _vector(self, word: str) -> torch.Tensor:
        if word not in self._vectors:
            digest = hashlib.sha256(f"{self.seed}\0{word}".encode()).digest()
            generator = torch.Generator("cpu").manual_seed(int.from_bytes(digest[:7], "big"))
            self._vectors[word] = torch.randn(self.width, generator=generator)
        return self._vectors[word]

    def __call__(self, prompt: str) -> torch.Tensor:
        rows = [self._vector("<start>")]
        for fragment, weight in parse_attention(prompt):
            if weight < 0:  # BREAK
                continue
            rows += [self._vector(word) * weight for word in re.findall(r"\w+|[^\w\s]", fragment.lower())]
        rows = rows[:TOKENS - 1]
        rows += [self._vector("<end>")] * (TOKENS - len(rows))
        return torch.stack(rows)


class UNetRenderer:
    """Renders prompts with the SD1.5-shaped UNet and VAE decoder, one prompt per sampling call (rows = seeds), as
    the WebUI renders one individual at a time. Images are 8-bit like every WebUI's; `seconds` is the time spent
    in render() (synchronised on a GPU)."""

    def __init__(self, profile: Profile, device: torch.device, seeds: Sequence[int], *, steps: int = 20,
                 sampler: str = "DPM++ 2M", cfg_scale: float = 7.0, fork_strength: float = 1.0):
        self.profile, self.device = profile, device
        self.seeds = [int(seed) for seed in seeds]
        eps = eps_denoiser(profile, device)
        self.denoiser = CFGDenoiser(eps)
        self.vae = build_vae(profile, device)
        self.spec = sampler_spec(sampler)
        self.sigma_schedule = sigmas(steps, float(eps.sigma_min), float(eps.sigma_max), "Karras", device=device)
        self.cfg_scale, self.fork_strength = cfg_scale, fork_strength
        self.conditioning = WordConditioning(profile.cross_attention_dim)
        self.seconds = 0.0

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.no_grad()
    def _render_one(self, positive: str, negative: str) -> Rendered:
        rows = len(self.seeds)
        extra = {"cond": self.conditioning(positive).to(self.device).expand(rows, -1, -1),
                 "uncond": self.conditioning(negative).to(self.device).expand(rows, -1, -1),
                 "cond_scale": self.cfg_scale}
        latent_shape = (4, self.profile.latent_size, self.profile.latent_size)
        latents = sample(self.spec, self.denoiser, SeededNoise(self.seeds, latent_shape, self.device),
                         self.sigma_schedule, extra, fork_strength=self.fork_strength)
        decoded = self.vae.decode((latents / LATENT_SCALE).to(self.vae.dtype)).sample.float()
        images = torch.nan_to_num((decoded + 1) / 2).clamp(0, 1)  # random weights: keep the pictures finite
        return Rendered(torch.round(images * 255) / 255)

    def render(self, prompts: Sequence[tuple[str, str]]) -> list[Rendered]:
        self._synchronize()
        started = time.perf_counter()
        rendered = [self._render_one(positive, negative) for positive, negative in prompts]
        self._synchronize()
        self.seconds += time.perf_counter() - started
        return rendered
