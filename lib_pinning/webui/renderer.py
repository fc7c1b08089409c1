"""The engine's `Renderer` inside A1111: one `process_images` call per batch of an individual, on a copy of p.

Every individual renders the user's settings with the same seeds; only the prompt text differs, written in
plain A1111 emphasis syntax, so the pinned prompt reproduces its images in vanilla txt2img. Images stay in
memory (nothing is saved by A1111); the report writes them. The WebUI's progress bar, Interrupt and Skip are
wired here: a render cut short is never scored, it ends the run with every finished generation kept.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from modules import devices, processing, shared
from PIL import Image

from ..engine import RunStopped
from ..objective import image_to_tensor
from . import samplers


def _per_image(p, value, step: int) -> list[int]:
    """A seed or subseed of `p` (after `fix_seed`) for each of its images, as `process_images` spreads it."""
    count = p.batch_size * p.n_iter
    if isinstance(value, list):
        return [int(s) for s in value[:count]]
    return [int(value) + i * step for i in range(count)]


def seeds_of(p) -> list[int]:
    return _per_image(p, p.seed, 1 if p.subseed_strength == 0 else 0)  # variation seeds keep one seed


FORGE_PER_JOB_LISTS = ("extra_result_images", "latents_after_sampling", "pixels_after_sampling")


class WebUIRenderer:
    def __init__(self, p, total_renders: int, on_first_batch: Callable[[torch.Tensor], None] | None = None,
                 fork_strength: float | None = None):
        self.p = p
        self.seeds = seeds_of(p)
        self.subseeds = _per_image(p, p.subseed, 1)
        self.total_renders = total_renders
        self.rendered = 0
        self.on_first_batch = on_first_batch
        self.fork_strength = fork_strength  # for the Hyperbatch samplers (lib_pinning.webui.samplers)
        # The last render() call's PIL images and A1111 infotexts by prompt (the run keeps the best's).
        self.outputs: dict[tuple[str, str], tuple[list[Image.Image], list[str]]] = {}
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
        if self.fork_strength is not None:
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

    def _render_one(self, positive: str, negative: str) -> torch.Tensor:
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
        self.outputs[(positive, negative)] = (images, infotexts)
        batch = torch.stack([image_to_tensor(image) for image in images]).to(self.device)
        if self.rendered == 1 and self.on_first_batch is not None:
            self.on_first_batch(batch)
        return batch

    def render(self, prompts: Sequence[tuple[str, str]]) -> list[torch.Tensor]:
        self.outputs = {}
        return [self._render_one(positive, negative) for positive, negative in prompts]

    def show_preview(self, images: torch.Tensor) -> None:
        """Best so far as the preview between renders (A1111's live previews replace it while sampling)."""
        array = (images[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        shared.state.assign_current_image(Image.fromarray(array))
