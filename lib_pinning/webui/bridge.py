"""A Hyperbatch sampler as A1111 calls a k-diffusion sampler: its rows, conditioning and noise.

`lib_pinning.hyperbatch` drives k-diffusion's own sampler functions segment by segment; A1111 needs three
things on top (A1111.md, "The denoiser and batch size"):
- new `cond`/`uncond`/`image_cond` objects for the rows a segment advances, and the denoiser's per-row
  img2img tensors narrowed while it runs (`RowsDenoiser`);
- seeded noise by rows: A1111's `torch.randn_like` hijack returns one row per seed whatever the input, so the
  ancestral sampler gets a full-batch noise sampler that the wrapper narrows (the SDE samplers already get
  A1111's full-batch Brownian noise sampler);
- for img2img, the children's fork noise is their own seeded noise, (x − init_latent) / σ₀.

A1111's `extra_args` hold `cond` (a `MulticondLearnedConditioning` with one list per row), `uncond` (a list
with one list per row), `image_cond` (a tensor with one row per image) and scalars. Its denoiser takes the
batch size from `cond`, so every per-row value must be narrowed together. `cond`/`uncond` are A1111's cached
objects, shared with later jobs: new objects are built, nothing is changed in place.

Pure Python over duck types (the conditioning class is rebuilt through `type(cond)`; noise comes through
`k_diffusion.sampling.torch`, which A1111 replaces while it samples), so it is tested without the WebUI.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import k_diffusion.sampling
import torch

def _narrow_cond(cond, rows: list[int]):
    if hasattr(cond, "batch") and hasattr(cond, "shape"):  # MulticondLearnedConditioning(shape, batch)
        return type(cond)(shape=(len(rows),), batch=[cond.batch[r] for r in rows])
    if isinstance(cond, list):
        return [cond[r] for r in rows]
    return _narrow_tensor(cond, rows, None)


def _narrow_tensor(value, rows: list[int], batch_size: int | None):
    """A tensor (or SDXL dict of tensors) with one row per image, narrowed; anything else unchanged."""
    if isinstance(value, dict):
        return {key: _narrow_tensor(item, rows, batch_size) for key, item in value.items()}
    if torch.is_tensor(value) and value.dim() > 0 and (batch_size is None or value.shape[0] == batch_size):
        return value[torch.tensor(rows, device=value.device)]
    return value


def select_conditioning(extra_args: dict, rows, batch_size: int) -> dict:
    """New sampler arguments for `rows` of a batch of `batch_size` (the `select` of lib_pinning.hyperbatch)."""
    indices = [int(r) for r in rows]
    selected = {}
    for key, value in extra_args.items():
        if key in ("cond", "uncond"):
            selected[key] = _narrow_cond(value, indices)
        else:
            selected[key] = _narrow_tensor(value, indices, batch_size)
    return selected


class RowsDenoiser:
    """A1111's denoiser, seen through the rows a Hyperbatch segment advances.

    For img2img and inpainting the denoiser blends its output with `init_latent` (and masks) of the whole
    batch; while fewer rows are sampled, those per-row tensors are narrowed for the call and put back after.
    A1111 returns the sampler's `last_latent` when Interrupt or Skip cut sampling short, and its image loop
    expects every row: after a narrowed call it is widened, each row showing its ancestor's prediction.
    """

    _PER_ROW = ("init_latent", "mask", "nmask")

    def __init__(self, denoiser, batch_size: int):
        self.denoiser = denoiser
        self.batch_size = batch_size
        self.rows: list[int] = list(range(batch_size))

    def select(self, extra_args: dict, rows: torch.Tensor) -> dict:
        self.rows = [int(r) for r in rows]
        return select_conditioning(extra_args, self.rows, self.batch_size)

    def __call__(self, x, sigma, **kwargs):
        if x.shape[0] == self.batch_size:
            return self.denoiser(x, sigma, **kwargs)
        # Only tensors shaped like x are per row: A1111's inpainting mask is (C, H, W) for the whole batch.
        saved = {name: value for name in self._PER_ROW
                 if torch.is_tensor(value := getattr(self.denoiser, name, None)) and value.dim() == x.dim()}
        try:
            for name, value in saved.items():
                setattr(self.denoiser, name, _narrow_tensor(value, self.rows, self.batch_size))
            return self.denoiser(x, sigma, **kwargs)
        finally:
            for name, value in saved.items():
                setattr(self.denoiser, name, value)
            self._widen_last_latent()

    def _widen_last_latent(self) -> None:
        sampler = getattr(self.denoiser, "sampler", None)
        latent = getattr(sampler, "last_latent", None)
        if torch.is_tensor(latent) and latent.shape[0] == len(self.rows) < self.batch_size:
            # Segments advance rows 0..n-1 and forks at most double them, so row r descends from row r mod n.
            sampler.last_latent = latent[torch.arange(self.batch_size, device=latent.device) % len(self.rows)]

    def __getattr__(self, name):
        return getattr(self.denoiser, name)


def bridge(function: Callable, ancestral: bool, fork_strength: Callable[[object], float],
           can_fork: Callable[[object], bool] = lambda model: True) -> Callable:
    """`function` (a lib_pinning Hyperbatch sampler) as A1111 calls a k-diffusion sampler function.

    `fork_strength(model)` gives the fork strength for a call (A1111: a setting); `can_fork(model)` False
    samples the whole batch at every step (the plain sampler, exactly), e.g. when the rows start from different
    images (a child would lose its own).
    """

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None, **kwargs):
        rows = RowsDenoiser(model, x.shape[0])
        if ancestral and kwargs.get("noise_sampler") is None:
            # What k-diffusion's default noise sampler draws, for every row (A1111: one row per seed).
            kwargs["noise_sampler"] = lambda sigma, sigma_next: k_diffusion.sampling.torch.randn_like(x)
        init_latent = getattr(model, "init_latent", None)
        fork_noise = None
        if torch.is_tensor(init_latent) and init_latent.shape == x.shape:  # img2img: x = init + σ₀·noise
            fork_noise = lambda children: (x[children] - init_latent[children]) / sigmas[0]
        options = {}
        if not can_fork(model):
            options["batch_sizes"] = [x.shape[0]] * (len(sigmas) - 1)
        return function(rows, x, sigmas, extra_args=extra_args, callback=callback, disable=disable,
                        fork_strength=fork_strength(model), select=rows.select, fork_noise=fork_noise,
                        **options, **kwargs)

    # A1111 reads the signature to choose the arguments it passes (sigmas, eta, noise_sampler...).
    sample.__signature__ = inspect.signature(getattr(function, "plain_sampler", function))
    sample.__name__ = sample.__qualname__ = function.__name__
    sample.__doc__ = function.__doc__
    return sample
