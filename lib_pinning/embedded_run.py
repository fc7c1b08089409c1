"""Pinning on the embedded model: the Python API (`pin`, `demo`) and what `python -m lib_pinning pin` runs.

Options by name (lib_pinning.options: `PinOptions` and `EmbeddedOptions`), checked before anything is written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch

from .embedded import EmbeddedModel, EmbeddedRenderer
from .engine import RunResult, run_pinning
from .errors import InputError
from .images import open_image
from .interrupts import SignalGuard
from .job import RenderPlan, build_job
from .observer import Observer, ProgressBar
from .options import EmbeddedOptions, PinOptions, parse
from .record import RenderRecord
from .report import ReportRecorder
from .runfile import prepare_run_dir

DEMO_PROMPT = "a quiet painting of round shapes, warm colours, soft light, simple"
DEMO_NEGATIVE = "noise, stripes"
_PIN_NAMES = {field.name for field in dataclasses.fields(PinOptions)}


def pin(prompt: str, negative_prompt: str = "", *, out: str | Path | None = None, targets: Sequence = (),
        target_images: torch.Tensor | None = None, observers: Sequence[Observer] = (), progress: bool = True,
        report: bool = True, **values) -> RunResult:
    """Pin `prompt` on the embedded model; `values` are options by name (PinOptions and EmbeddedOptions fields).

    `targets`: image files; `target_images`: a (T, 3, size, size) tensor instead. With `out`, the run folder is
    written there, with its report unless `report` is False. Bad input raises an InputError before anything is
    written.
    """
    pinning = {name: value for name, value in values.items() if name in _PIN_NAMES}
    rendering = {name: value for name, value in values.items() if name not in _PIN_NAMES}
    options = parse(PinOptions, {**pinning, "targets": targets})
    render = parse(EmbeddedOptions, {**rendering, "prompt": prompt, "negative_prompt": negative_prompt})
    return pin_embedded(options, render, out=out, target_images=target_images, observers=observers,
                        progress=progress, report=report)


def pin_embedded(options: PinOptions, render: EmbeddedOptions, *, out: str | Path | None = None,
                 target_images: torch.Tensor | None = None, observers: Sequence[Observer] = (),
                 progress: bool = True, report: bool = True) -> RunResult:
    device = _device(render.device)
    images = [open_image(path) for path in options.targets]  # every file is read before anything is written
    sources = [str(path) for path in options.targets]
    if target_images is not None:
        images, sources = target_images, [f"image {index + 1}" for index in range(len(target_images))]
    seeds = [render.seed + index for index in range(render.batch)]
    plan = RenderPlan(RenderRecord(seeds, render.sampler, render.schedule, render.steps, render.cfg_scale,
                                   render.size, render.size, "embedded",
                                   {"prototypes": render.prototypes, "model_seed": render.model_seed,
                                    "device": str(device)}),
                      sampled_steps=render.steps, tree_size=render.batch)

    def make_renderer(resolved: PinOptions) -> EmbeddedRenderer:
        model = EmbeddedModel(count=render.prototypes, size=render.size, seed=render.model_seed, device=device)
        return EmbeddedRenderer(model, seeds, steps=render.steps, sampler=render.sampler, schedule=render.schedule,
                                cfg_scale=render.cfg_scale, fork_strength=resolved.fork_strength)

    job = build_job(options, render.prompt, render.negative_prompt, plan, make_renderer, targets=images,
                    target_sources=sources)
    job.observers = [ProgressBar(progress), *observers]
    if out is None:
        with SignalGuard() as guard:
            job.observers.append(guard)
            return run_pinning(job)
    with prepare_run_dir(out):  # locked while the run writes it
        job.run_dir = Path(out)
        if report:
            job.observers.append(ReportRecorder(out))
        with SignalGuard(job.observers) as guard:  # a second Ctrl-C hurries the report, never loses an image
            job.observers.append(guard)
            return run_pinning(job)


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("Device (device): cuda was asked for but no CUDA device is available")
    return torch.device(name)


def demo_target(model: EmbeddedModel, prompt: str, rank: int = 1) -> int:
    """A prototype of moderate prior under `prompt` (the `rank`-th most likely): reachable, but not given."""
    return int(model.log_prior(prompt).argsort(descending=True)[rank])


def demo(out: str | Path, generations: int = -1, seed: int = 0, device: str = "cpu", progress: bool = True,
         observers: Sequence[Observer] = ()) -> RunResult:
    """Pin a deliberately off prompt to one of the embedded model's own prototypes."""
    model = EmbeddedModel(device=_device(device))
    target = model.prototypes[demo_target(model, DEMO_PROMPT)][None]
    return pin(DEMO_PROMPT, DEMO_NEGATIVE, out=out, target_images=target.cpu(), seed=seed, cma_seed=seed,
               generations=generations, device=device, progress=progress, observers=observers)
