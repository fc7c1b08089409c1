"""Seeded per-image noise: every image's noise comes from its own seed, never from torch's global RNG.

Like A1111, an image's seed drives both its initial latent and the ancestral noise its sampler adds, so an
image is a function of (prompt, seed) alone: the same seed renders the same noise whatever else is in the
batch. Rows that share a seed (the same seed rendered for several individuals) share one draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from k_diffusion.sampling import BrownianTreeNoiseSampler


def _unique_seeds(seeds: Sequence[int]) -> tuple[list[int], torch.Tensor]:
    """The distinct seeds in first-seen order, and for every row the index of its seed among them."""
    unique: dict[int, int] = {}
    rows = [unique.setdefault(int(s), len(unique)) for s in seeds]
    return list(unique), torch.tensor(rows, dtype=torch.long)


class SeededNoise:
    """Initial noise and a k-diffusion `noise_sampler` for a batch whose row i belongs to `seeds[i]`.

    Ancestral samplers get independent Gaussian noise per step from each seed's generator (continuing after
    the initial latent, as A1111 does). SDE samplers (`brownian=True`) get a Brownian tree per seed, which
    k-diffusion's DPM++ SDE samplers need for consistent noise between their sub-steps.
    """

    def __init__(self, seeds: Sequence[int], shape: Sequence[int], device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        if len(seeds) == 0:
            raise ValueError("at least one seed is needed")
        self.seeds, self.rows = _unique_seeds(seeds)
        self.shape = tuple(shape)
        self.device = torch.device(device)
        self.dtype = dtype
        # CPU generators make the noise identical on every device.
        self._generators = [torch.Generator("cpu").manual_seed(s) for s in self.seeds]
        self._initial = self._draw()

    def _draw(self) -> torch.Tensor:
        per_seed = torch.stack([torch.randn(self.shape, generator=g) for g in self._generators])
        return per_seed.to(self.device, self.dtype)

    def initial(self, sigma_max: float) -> torch.Tensor:
        """The starting latent x_T = sigma_max * z, one row per seed of the batch."""
        return self._initial[self.rows] * sigma_max

    def ancestral(self, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        return self._draw()[self.rows]

    def brownian(self, sigma_min: float, sigma_max: float):
        """A Brownian-tree noise sampler over [sigma_min, sigma_max], one tree per distinct seed."""
        # Given an entropy per tree, torchsde never reads torch's global RNG.
        tree = BrownianTreeNoiseSampler(self._initial, sigma_min, sigma_max, seed=self.seeds)
        rows = self.rows
        return lambda sigma, sigma_next: tree(sigma, sigma_next)[rows]
