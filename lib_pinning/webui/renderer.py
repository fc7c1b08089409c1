"""The engine's `Renderer` inside A1111: one `process_images` call per batch of an individual, on a copy of p.

Every individual renders the user's settings with the same seeds; only the prompt text differs, written in
plain A1111 emphasis syntax, so the pinned prompt reproduces its images in vanilla txt2img. Images stay in
memory (nothing is saved by A1111); the report writes them. Each batch comes back with the WebUI's own PIL
images and infotexts as its payload, which the result of the run shows. The WebUI's progress bar, Interrupt and
Skip are wired here: a render cut short is never scored, it ends the run with every finished generation kept.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from modules import devices, processing, shared
from PIL import Image

from ..images import image_to_tensor
from ..observer import Observer
from ..rendering import Rendered, RunStopped
from . import samplers


def _per_image(p, value, step: int) -> list[int]:
    """A seed or subseed of `p` (after `fix_seed`) for each of its images, as `process_images` spreads it."""
    count = p.batch_size * p.n_iter
    if isinstance(value, list):
        return [int(s) for s in value[:count]]
    return [int(value) + i * step for i in range(count)]


def seeds_of(p) -> list[int]:
    return _per_image(p, p.seed, 1 if p.subseed_strength == 0 else 0)  # variation seeds keep one seed


def subseeds_of(p) -> list[int]:
    return _per_image(p, p.subseed, 1)


FORGE_PER_JOB_LISTS = ("extra_result_images", "latents_after_sampling", "pixels_after_sampling")


class WebUIRenderer:
    parallel = 1  # one individual at a time: the engine stops at the one that pins the run, inside its generation

    def __init__(self, p, total_renders: int, fork_strength: float):
        self.p = p
        self.seeds = seeds_of(p)
        self.subseeds = subseeds_of(p)
        self.total_renders = total_renders
        self.rendered = 0
        self.fork_strength = fork_strength  # for the Hyperbatch samplers (lib_pinning.webui.samplers)
        self.device = devices.device

    @staticmethod
    def stop_requested() -> bool:
        state = shared.state
        return bool(state.interrupted or state.skipped or getattr(state, "stopping_generation", False))

    def _job(self, positive: str, negative: str, iteration: int):
        """A copy of the user's job for one batch of one individual: only the prompt (and which seeds) differ."""
        rows = slice(iteration * self.p.batch_size, (iteration + 1) * self.p.batch_size)
        job = copy.copy(self.p)
        job.prompt, job.negative_prompt = positive, negative
        job.styles = []  # the styles are already part of the genome's prompt
        # One batch per call: A1111 clears Skip at the start of each batch, so the check after the call sees it.
        job.n_iter, job.seed, job.subseed = 1, self.seeds[rows], self.subseeds[rows]
        job.do_not_save_samples = job.do_not_save_grid = True
        job.extra_generation_params = dict(self.p.extra_generation_params)
        # Forge collects every job's latents, pictures and extra images in lists made when the user's job was
        # created; a copy would append to those for the whole run, keeping every batch in memory.
        for collected in FORGE_PER_JOB_LISTS:
            if hasattr(job, collected):
                setattr(job, collected, [])
        # An attribute, not an override: overridden settings are written back after every job, which
        # --freeze-settings forbids.
        setattr(job, samplers.FORK_STRENGTH_SETTING, self.fork_strength)
        return job

    def _pictures(self, job, processed) -> tuple[list[Image.Image], list[str]]:
        """The seeds' pictures and infotexts of one batch (inpainting may add a mask and a composite each)."""
        per_seed = 1
        if getattr(job, "mask_for_overlay", None) is not None:
            per_seed += int(bool(shared.opts.return_mask)) + int(bool(shared.opts.return_mask_composite))
        first, batch = processed.index_of_first_image, self.p.batch_size
        return (processed.images[first::per_seed][:batch],
                processed.infotexts[first:first + batch])

    def _render_one(self, positive: str, negative: str) -> Rendered:
        self.rendered += 1
        images, infotexts = [], []
        for iteration in range(self.p.n_iter):
            if self.stop_requested():
                raise RunStopped()
            shared.state.job = f"Prompt pinning {self.rendered} of {self.total_renders}"
            job = self._job(positive, negative, iteration)
            processed = processing.process_images(job)
            if self.stop_requested():  # a cut-short batch holds unfinished images: never scored
                raise RunStopped()
            pictures, texts = self._pictures(job, processed)
            images += pictures
            infotexts += texts
        if len(images) != len(self.seeds):
            raise RuntimeError(f"the WebUI returned {len(images)} images for {len(self.seeds)} seeds")
        batch = torch.stack([image_to_tensor(image) for image in images]).to(self.device)
        return Rendered(batch, (images, infotexts), infotexts)

    def render(self, prompts: Sequence[tuple[str, str]]) -> list[Rendered]:
        return [self._render_one(positive, negative) for positive, negative in prompts]


class Preview(Observer):
    """The best images so far as the WebUI's preview between renders (its live previews replace them while a
    batch samples)."""

    def on_best(self, record, rendered: Rendered) -> None:
        images, _ = rendered.payload
        shared.state.assign_current_image(images[0])
