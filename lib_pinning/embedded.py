"""The embedded model: a real diffusion model whose optimal denoiser is known in closed form.

Data are K procedural prototype images mu_k, each the centre of an isotropic Gaussian of spread s. A toy text
encoder turns a prompt into a prior over prototypes; the denoiser is the exact posterior mean E[x0 | x, sigma],
so k-diffusion's own samplers sample the mixture correctly and pinning behaves as on Stable Diffusion: word
weights move prior mass, seeds pick prototypes, a pinned prompt sends every seed to the target's prototype.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np
import torch

from . import breeding
from .emphasis import parse_attention
from .errors import InputError
from .noise import SeededNoise
from .rendering import Rendered
from .samplers import img2img_schedule, sample, sampler_spec, sigmas
from .semantic import Embedder
from .words import split_words

# Noise range of the sampler schedule. sigma_max is large against the prototypes' norm so that x_T ~ N(0,
# sigma_max^2 I) is close to the true noised mixture, as it must be for the sampler to reproduce the prior.
SIGMA_MIN = 0.01
SIGMA_MAX = 80.0
_SYNTAX = re.compile(r"[\\()\[\]]")  # what A1111's emphasis syntax reads as brackets unless escaped
EXTRA_NETWORK = re.compile(r"<[^<>]*>")  # <lora:…>, <hypernet:…>: stripped before encoding, as A1111 does


def make_prototypes(count: int = 16, size: int = 64, seed: int = 0) -> torch.Tensor:
    """`count` deterministic RGB images in [0, 1], shape (count, 3, size, size): a colour gradient with shapes."""
    images = np.stack([image for image, _ in _draw_prototypes(count, size, seed)])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().contiguous()


def prototype_tags(count: int = 16, size: int = 64, seed: int = 0) -> list[tuple[str, ...]]:
    """Each prototype's exact tags, from how `make_prototypes` drew it: its background's two colours ("blue
    background"), each shape's kind ("disc", "rectangle", "stripes") and its colour and kind ("red disc")."""
    return [tags for _, tags in _draw_prototypes(count, size, seed)]


COLOURS = {"black": (0, 0, 0), "white": (1, 1, 1), "grey": (0.5, 0.5, 0.5), "red": (0.9, 0.1, 0.1),
           "green": (0.1, 0.7, 0.2), "blue": (0.1, 0.2, 0.9), "yellow": (0.95, 0.9, 0.1), "cyan": (0.1, 0.85, 0.9),
           "magenta": (0.9, 0.1, 0.85), "orange": (1.0, 0.55, 0.1), "purple": (0.5, 0.15, 0.6),
           "brown": (0.5, 0.3, 0.12), "pink": (1.0, 0.7, 0.75), "olive": (0.5, 0.5, 0.1), "teal": (0.1, 0.5, 0.5),
           "navy": (0.1, 0.1, 0.45)}
SHAPES = ("disc", "rectangle", "stripes")


def colour_name(rgb) -> str:
    """The nearest named colour (RGB distance)."""
    return min(COLOURS, key=lambda name: sum((a - b) ** 2 for a, b in zip(rgb, COLOURS[name])))


def _draw_prototypes(count: int, size: int, seed: int):
    if count < 1 or size < 1:
        raise ValueError("prototype count and size must be positive")
    coords = (np.arange(size) + 0.5) / size
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    for k in range(count):
        rng = np.random.default_rng([seed, k])
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.clip(0.5 + (xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle), 0, 1)[..., None]
        start, end = rng.uniform(0, 1, (2, 3))
        image = start + (end - start) * ramp
        tags = [f"{colour_name(start)} background", f"{colour_name(end)} background"]
        for _ in range(rng.integers(1, 4)):
            colour = rng.uniform(0, 1, 3)  # drawn before the shape, as the original assignment evaluated them
            mask, kind = _shape_mask(rng, xx, yy)
            image[mask] = colour
            tags += [SHAPES[kind], f"{colour_name(colour)} {SHAPES[kind]}"]
        yield image, tuple(dict.fromkeys(tags))


def _shape_mask(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> tuple[np.ndarray, int]:
    cx, cy = rng.uniform(0.2, 0.8, 2)
    kind = int(rng.integers(0, 3))
    if kind == 0:  # disc
        return (xx - cx) ** 2 + (yy - cy) ** 2 < rng.uniform(0.1, 0.3) ** 2, kind
    if kind == 1:  # rectangle
        half_w, half_h = rng.uniform(0.08, 0.3, 2)
        return (abs(xx - cx) < half_w) & (abs(yy - cy) < half_h), kind
    period, phase = rng.uniform(0.1, 0.3), rng.uniform(0, 1)  # stripes
    return ((xx * np.cos(cx * 6) + yy * np.sin(cx * 6)) / period + phase) % 1 < 0.5, kind


def _escaped(word: str) -> str:
    return _SYNTAX.sub(lambda match: "\\" + match.group(0), word)


class ToyTextEncoder:
    """Word -> fixed pseudo-random embedding; a prompt -> the weighted sum of its words' embeddings.

    Weights act exactly as A1111 emphasis acts on conditioning rows (each word's row times its weight), without
    the chunk-mean renormalisation, which is ill-defined for zero-mean toy embeddings.
    """

    def __init__(self, dim: int = 8, seed: int = 0):
        self.dim = dim
        self.seed = seed

    def word_embedding(self, word: str) -> torch.Tensor:
        digest = hashlib.sha256(f"{self.seed}:{word.lower()}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        return torch.from_numpy(rng.standard_normal(self.dim) / np.sqrt(self.dim)).float()

    def weighted_words(self, prompt: str) -> list[tuple[str, float]]:
        words = []
        for text, weight in parse_attention(EXTRA_NETWORK.sub(" ", prompt)):
            if (text, weight) == ("BREAK", -1):  # a chunk boundary, no conditioning of its own
                continue
            words.extend((word, weight) for word in split_words(text))
        return words

    def encode(self, prompt: str) -> torch.Tensor:
        total = torch.zeros(self.dim)
        for word, weight in self.weighted_words(prompt):
            total += weight * self.word_embedding(word)
        return total

    def mixed_prompt(self, first: str, second: str, t: float) -> str:
        """A prompt whose conditioning is exactly the spherical interpolation of two prompts' at `t`: the slerp is
        α·first + β·second, and the encoding is linear in the words' weights, so each word of `first` is written
        with its weight times α, each of `second`'s times β (lib_pinning.breeding.slerp_coefficients)."""
        alpha, beta = (float(c) for c in breeding.slerp_coefficients(self.encode(first), self.encode(second), t))
        words = [(word, weight * alpha) for word, weight in self.weighted_words(first)]
        words += [(word, weight * beta) for word, weight in self.weighted_words(second)]
        return " ".join(f"({_escaped(word)}:{weight:.9g})" for word, weight in words)


class MixtureDenoiser(torch.nn.Module):
    """Exact posterior-mean denoiser of a Gaussian mixture, in k-diffusion's `model(x, sigma, **extra)` form.

    `cond`/`uncond` are per-row log-priors over the prototypes (B, K); `cond_scale` is classifier-free guidance
    applied to the denoised outputs, as A1111's CFG denoiser does.
    """

    def __init__(self, prototypes: torch.Tensor, spread: float):
        super().__init__()
        self.register_buffer("means", prototypes.flatten(1))  # (K, d), model space
        self.register_buffer("half_sq_norms", 0.5 * prototypes.flatten(1).pow(2).sum(1))
        self.spread = spread

    def posterior_mean(self, x: torch.Tensor, sigma: torch.Tensor, log_prior: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        variance = (self.spread ** 2 + sigma.to(x.dtype) ** 2)[:, None]  # (B, 1)
        # log N(x; mu_k, variance I) up to terms equal for every k (the ||x||^2 term is dropped: it cancels).
        log_resp = log_prior + (flat @ self.means.T - self.half_sq_norms) / variance
        responsibilities = torch.softmax(log_resp, dim=1)
        mean_of_means = responsibilities @ self.means
        blend = sigma.to(x.dtype)[:, None] ** 2 / variance
        return ((1 - blend) * flat + blend * mean_of_means).view_as(x)

    def forward(self, x, sigma, cond, uncond=None, cond_scale=1.0):
        denoised = self.posterior_mean(x, sigma, cond)
        if uncond is None or cond_scale == 1.0:
            return denoised
        unconditional = self.posterior_mean(x, sigma, uncond)
        return unconditional + cond_scale * (denoised - unconditional)


class EmbeddedModel:
    """Prototypes + toy text encoder + closed-form denoiser. Images are (N, 3, H, W) in [0, 1]."""

    def __init__(self, prototypes: torch.Tensor | None = None, *, count: int = 16, size: int = 64,
                 spread: float = 0.02, embedding_dim: int = 8, logit_scale: float = 2.0, seed: int = 0,
                 device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        if prototypes is None:
            drawn = list(_draw_prototypes(count, size, seed))
            images = torch.from_numpy(np.stack([image for image, _ in drawn])).permute(0, 3, 1, 2).float()
            self.tags = [tags for _, tags in drawn]  # what each prototype shows (`prototype_tags`)
        else:
            images, self.tags = prototypes.float(), [() for _ in prototypes]
        self.prototypes = images.to(self.device)
        self.encoder = ToyTextEncoder(embedding_dim, seed)
        rng = np.random.default_rng([seed, 1_000_003])
        self.keys = torch.from_numpy(rng.standard_normal((len(images), embedding_dim))).float().to(self.device)
        self.logit_scale = logit_scale
        self.denoiser = MixtureDenoiser(images.to(self.device) * 2 - 1, spread).to(self.device)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.prototypes.shape[1:])

    def log_prior(self, prompt: str) -> torch.Tensor:
        """log softmax(keys . encode(prompt) / logit_scale): the prompt's prior over prototypes, (K,)."""
        logits = self.keys @ self.encoder.encode(prompt).to(self.device) / self.logit_scale
        return torch.log_softmax(logits, dim=0)

    def nearest_prototype(self, images: torch.Tensor) -> torch.Tensor:
        """Index of the prototype closest to each image (which mixture component a sample came from)."""
        distances = torch.cdist(images.flatten(1).to(self.device), self.prototypes.flatten(1))
        return distances.argmin(dim=1)


class PrototypeEmbedder(Embedder):
    """The embedded model's exact semantics: what a final image shows is which prototype it came from.

    An image's embedding is the square root of its posterior over the prototypes, p(k | x) ∝ N(x; μ_k, v·I) with
    equal priors, so that the cosine of two embeddings is the Bhattacharyya coefficient of their posteriors (1:
    the same prototype). v is a sixteenth of the median squared distance between two prototypes: an image on a
    prototype is that prototype's (posterior ≈ 1), an image between two prototypes is shared between them. A
    tag's score is the posterior mass of the prototypes drawn with that tag (`prototype_tags`): the probability
    that the image shows it.
    """

    name = "embedded prototype posterior"

    def __init__(self, model: EmbeddedModel):
        tags = model.tags
        self.means = model.denoiser.means.double().cpu()  # model space
        distances = torch.cdist(self.means, self.means).pow(2)
        off_diagonal = distances[~torch.eye(len(self.means), dtype=torch.bool)]
        self.variance = float(off_diagonal.median()) / 16 if len(off_diagonal) else 1.0
        self.tags = [tuple(normal_tag(tag) for tag in prototype) for prototype in tags]

    def posterior(self, images: torch.Tensor) -> torch.Tensor:
        """(N, K) posterior over the prototypes of (N, 3, H, W) images in [0, 1]."""
        flat = (images.double().cpu() * 2 - 1).flatten(1)
        log_resp = (flat @ self.means.T - 0.5 * self.means.pow(2).sum(1)) / self.variance
        return torch.softmax(log_resp, dim=1)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.posterior(images).sqrt()

    def known_tags(self) -> list[str]:
        return sorted({tag for prototype in self.tags for tag in prototype})

    def check_tags(self, tags: Sequence[str]) -> None:
        unknown = [tag for tag in tags if normal_tag(tag) not in self.known_tags()]
        if unknown:
            raise InputError(f"the embedded model knows no tag {', '.join(map(repr, unknown))}: its prototypes are "
                             f"drawn with these tags: {', '.join(self.known_tags())}")

    def tag_scores(self, embeddings: torch.Tensor, tags: Sequence[str]) -> torch.Tensor:
        has = torch.tensor([[normal_tag(tag) in prototype for tag in tags] for prototype in self.tags],
                           dtype=torch.float64)
        return embeddings.pow(2) @ has  # the embeddings are the posteriors' square roots


def normal_tag(tag: str) -> str:
    return " ".join(tag.lower().split())


class EmbeddedRenderer:
    """Renders prompts on the embedded model with fixed seeds: one batch of len(seeds) images per prompt.

    Several prompts go through the sampler as one batch (rows = prompts x seeds); every row's noise comes from
    its seed alone, so an individual's images do not depend on what it was batched with. Images come out 8-bit
    (`to_8bit`), as every WebUI's do.
    """

    def __init__(self, model: EmbeddedModel, seeds: Sequence[int], *, steps: int = 12, sampler: str = "DPM++ 2M",
                 schedule: str = "Karras", cfg_scale: float = 3.0, fork_strength: float = 1.0,
                 init: torch.Tensor | None = None, denoising_strength: float = 0.75):
        """`init` (3, H, W) in [0, 1] at the model's size: img2img from it, renewing `denoising_strength` of it."""
        if len(seeds) == 0:
            raise ValueError("at least one seed is needed")
        self.model = model
        self.seeds = [int(s) for s in seeds]
        self.spec = sampler_spec(sampler)
        self.sigma_schedule = sigmas(steps, SIGMA_MIN, SIGMA_MAX, schedule, device=model.device)
        self.init = None
        if init is not None:
            self.init = init.to(model.device) * 2 - 1  # model space
            self.sigma_schedule = img2img_schedule(self.sigma_schedule, denoising_strength)
        self.cfg_scale = cfg_scale
        self.fork_strength = fork_strength  # Hyperbatch samplers only

    @property
    def batch_size(self) -> int:
        return len(self.seeds)

    def render(self, prompts: Sequence[tuple[str, str]]) -> list[Rendered]:
        """For each (positive, negative) prompt, its (B, 3, H, W) images in [0, 1]."""
        if not prompts:
            return []
        batch = len(self.seeds)
        cond = torch.stack([self.model.log_prior(positive) for positive, _ in prompts])
        uncond = torch.stack([self.model.log_prior(negative) for _, negative in prompts])
        extra_args = {"cond": cond.repeat_interleave(batch, 0), "uncond": uncond.repeat_interleave(batch, 0),
                      "cond_scale": self.cfg_scale}
        noise = SeededNoise(self.seeds * len(prompts), self.model.image_shape, self.model.device)
        with torch.no_grad():
            latents = sample(self.spec, self.model.denoiser, noise, self.sigma_schedule, extra_args,
                             groups=len(prompts), fork_strength=self.fork_strength, init=self.init)
        return [Rendered(batch_images) for batch_images in to_8bit((latents + 1) / 2).split(batch)]


def to_8bit(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] as an 8-bit picture holds them (k/255), rounded as the run's PNGs are: what the loss scores
    is what a saved image, a WebUI render or the embedded server's PNG gives back, to the bit."""
    return torch.round(images.clamp(0, 1) * 255) / 255
