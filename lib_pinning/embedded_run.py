"""Pinning on the embedded model: the Python API (`pin`, `demo`, `resume`, prompt evolution's `evolve` and
`breed_prompts`) and what `python -m lib_pinning pin` runs.

Options by name (lib_pinning.options: `PinOptions` and `EmbeddedOptions`), checked before anything is written.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from .breeding import POINTS, Child, check_points
from .chooser import MODE as CHOICE, Chooser
from .embedded import EmbeddedModel, EmbeddedRenderer, PrototypeEmbedder
from .engine import RunResult
from .errors import InputError
from .images import open_image
from .job import Job, RenderPlan, build_job
from .observer import Observer
from .options import EmbeddedOptions, PinOptions, parse
from .record import WORKERS_API, RenderRecord, RunRecord, read_record
from .report.images import png_bytes, to_pixels
from .runner import execute

DEMO_PROMPT = "a quiet painting of round shapes, warm colours, soft light, simple"
_PROTOTYPE_TARGET = re.compile(r"embedded prototype (\d+)")
_TENSOR_TARGET = re.compile(r"image \d+")
DEMO_NEGATIVE = "noise, stripes"
DEMO_SEED, DEMO_RANK, DEMO_LOSS, DEMO_BATCH = 16, 3, 0.05, 4  # seed 16: the first look misses, CMA-ES finds it
_PIN_NAMES = {field.name for field in dataclasses.fields(PinOptions)}


def pin(prompt: str, negative_prompt: str = "", *, out: str | Path | None = None, targets: Sequence = (),
        target_images: torch.Tensor | None = None, observers: Sequence[Observer] = (), progress: bool = True,
        report: bool = True, **values) -> RunResult:
    """Pin `prompt` on the embedded model; `values` are options by name (PinOptions and EmbeddedOptions fields).

    `targets`: image files; `target_images`: a (T, 3, size, size) tensor instead. With `out`, the run folder is
    written there, with its report unless `report` is False. Bad input raises an InputError before anything is
    written.
    """
    options, render = _parsed(prompt, negative_prompt, {**values, "targets": targets})
    return pin_embedded(options, render, out=out, target_images=target_images, observers=observers,
                        progress=progress, report=report)


def evolve(prompt: str, negative_prompt: str = "", *, chooser: Chooser, out: str | Path | None = None,
           observers: Sequence[Observer] = (), progress: bool = True, report: bool = True, **values) -> RunResult:
    """Prompt evolution on the embedded model: `chooser` (lib_pinning.chooser) picks among each generation's
    candidates and its choice is the fitness; `values` are options by name as for `pin` (no targets). The run
    stops only at its generation budget or when the chooser raises RunStopped."""
    return execute(evolution_job(prompt, negative_prompt, chooser, **values), out, observers=observers,
                   progress=progress, report=report)


def evolution_job(prompt: str, negative_prompt: str, chooser: Chooser, **values) -> Job:
    """The checked job of a prompt evolution run on the embedded model (an InputError before anything exists)."""
    return _job(*_parsed(prompt, negative_prompt, values), None, chooser)


def _parsed(prompt: str, negative_prompt: str, values: dict) -> tuple[PinOptions, EmbeddedOptions]:
    """Options by name, checked: the pinning ones (PinOptions) and the embedded model's (EmbeddedOptions)."""
    pinning = {name: value for name, value in values.items() if name in _PIN_NAMES}
    rendering = {name: value for name, value in values.items() if name not in _PIN_NAMES}
    return (parse(PinOptions, pinning),
            parse(EmbeddedOptions, {**rendering, "prompt": prompt, "negative_prompt": negative_prompt}))


def pin_embedded(options: PinOptions, render: EmbeddedOptions, *, out: str | Path | None = None,
                 target_images: torch.Tensor | None = None, observers: Sequence[Observer] = (),
                 progress: bool = True, report: bool = True, resume: RunRecord | None = None) -> RunResult:
    """Build the job and run it; with `resume` (the record in `out`), continue that run instead."""
    return execute(_job(options, render, target_images), out, resume=resume, observers=observers,
                   progress=progress, report=report)


def resume(run_dir: str | Path, *, target_images: torch.Tensor | None = None, observers: Sequence[Observer] = (),
           progress: bool = True, report: bool = True, chooser: Chooser | None = None, **values) -> RunResult:
    """Continue the interrupted, failed or finished run in `run_dir` with its own inputs; `values` may raise the
    generation budget (`generations`) and must otherwise be the run's. `target_images`: the tensor targets the
    run was given in Python, again; `chooser`: a prompt evolution run's chooser, again. Raises an InputError
    naming what differs, before anything is written."""
    job, record = resumed_job(run_dir, target_images=target_images, chooser=chooser, **values)
    return execute(job, run_dir, resume=record, observers=observers, progress=progress, report=report)


def resumed_job(run_dir: str | Path, *, target_images: torch.Tensor | None = None, chooser: Chooser | None = None,
                **values) -> tuple[Job, RunRecord]:
    """The job that continues the run in `run_dir` (see `resume`), and the run's record."""
    record = read_record(run_dir)
    if record.objective.mode == CHOICE and chooser is None:
        raise InputError(f"the run in {str(run_dir)!r} is a prompt evolution run: resume it with a chooser "
                         "(chooser=...)")
    pinning, rendering = recorded_values(record)
    unknown_rendering = {name: value for name, value in values.items() if name not in _PIN_NAMES}
    options = parse(PinOptions, {**pinning, **{k: v for k, v in values.items() if k in _PIN_NAMES}})
    render = parse(EmbeddedOptions, {**rendering, **unknown_rendering})
    if target_images is None and any(_TENSOR_TARGET.fullmatch(source) for source in options.targets):
        raise InputError(f"the run in {str(run_dir)!r} was given its targets as images in Python "
                         f"({', '.join(options.targets)}): resume it in Python with them again (target_images=...)")
    if target_images is not None:
        options = dataclasses.replace(options, targets=())
    return _job(options, render, target_images, chooser), record


def recorded_values(record: RunRecord) -> tuple[dict, dict]:
    """The options a run of the embedded model was made with, by name: (PinOptions values, EmbeddedOptions ones)."""
    render = record.render
    if render.extra.get("api") == WORKERS_API:
        raise InputError("the run was rendered by WebUI workers: resume it on workers again (--webui URL)")
    if render.model != "embedded":
        raise InputError(f"the run was rendered by {render.model!r}, not the embedded model: resume it there")
    pinning = {name: value for name, value in record.options.items() if name in _PIN_NAMES}
    rendering = {"prompt": record.prompt, "negative_prompt": record.negative_prompt, "seed": render.seeds[0],
                 "batch": len(render.seeds), "steps": render.steps, "sampler": render.sampler,
                 "schedule": render.schedule, "cfg_scale": render.cfg_scale, "size": render.width,
                 **{name: render.extra[name] for name in ("prototypes", "model_seed", "device")}}
    return pinning, rendering


def _job(options: PinOptions, render: EmbeddedOptions, target_images: torch.Tensor | None,
         chooser: Chooser | None = None) -> Job:
    device = _device(render.device)
    sources = [str(path) for path in options.targets]
    model = EmbeddedModel(count=render.prototypes, size=render.size, seed=render.model_seed, device=device)
    images = [_target(model, path) for path in options.targets]  # every file is read before anything is written
    masks = [open_image(path, "mask") for path in options.masks]
    if target_images is not None:
        images, sources = target_images, [f"image {index + 1}" for index in range(len(target_images))]
    seeds = [render.seed + index for index in range(render.batch)]
    plan = RenderPlan(RenderRecord(seeds, render.sampler, render.schedule, render.steps, render.cfg_scale,
                                   render.size, render.size, "embedded",
                                   {"prototypes": render.prototypes, "model_seed": render.model_seed,
                                    "device": str(device)}),
                      sampled_steps=render.steps, tree_size=render.batch)

    def make_renderer(resolved: PinOptions) -> EmbeddedRenderer:
        return EmbeddedRenderer(model, seeds, steps=render.steps, sampler=render.sampler, schedule=render.schedule,
                                cfg_scale=render.cfg_scale, fork_strength=resolved.fork_strength)

    return build_job(options, render.prompt, render.negative_prompt, plan, make_renderer, targets=images,
                     target_sources=sources, masks=masks, mask_sources=[str(path) for path in options.masks],
                     embedder=lambda: PrototypeEmbedder(model), chooser=chooser)


def _target(model: EmbeddedModel, source: str):
    """A target file, or one of the embedded model's own prototypes: "embedded prototype K"."""
    match = _PROTOTYPE_TARGET.fullmatch(str(source))
    if match and not Path(source).exists():
        index = int(match.group(1))
        if index >= len(model.prototypes):
            raise InputError(f"target {source!r}: the embedded model has prototypes 0 to {len(model.prototypes) - 1}")
        pixels = (model.prototypes[index].permute(1, 2, 0).cpu() * 255).round().byte().numpy()
        return Image.fromarray(pixels)
    return open_image(source)


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("Device (device): cuda was asked for but no CUDA device is available")
    return torch.device(name)


def demo_target(model: EmbeddedModel, prompt: str, rank: int = 1) -> int:
    """A prototype of moderate prior under `prompt` (the `rank`-th most likely): reachable, but not given."""
    return int(model.log_prior(prompt).argsort(descending=True)[rank])


def demo(out: str | Path, generations: int = -1, seed: int = DEMO_SEED, device: str = "cpu", progress: bool = True,
         observers: Sequence[Observer] = (), report: bool = True) -> RunResult:
    """Pin a deliberately off prompt to one of the embedded model's own prototypes.

    The target (the prompt's 4th most likely prototype) is one the first look misses at the demo's seed: CMA-ES
    takes several generations to reach it, and the run stops once the loss is down to DEMO_LOSS.
    """
    model = EmbeddedModel(device=_device(device))
    target = f"embedded prototype {demo_target(model, DEMO_PROMPT, DEMO_RANK)}"
    return pin(DEMO_PROMPT, DEMO_NEGATIVE, out=out, targets=[target], seed=seed, cma_seed=seed,
               generations=generations, target_loss=DEMO_LOSS, batch=DEMO_BATCH, device=device, progress=progress,
               observers=observers, report=report)


def breed_prompts(first: tuple[str, str], second: tuple[str, str], points: Sequence[float] = POINTS,
                  **values) -> list[Child]:
    """Children of two different (prompt, negative prompt) pairs on the embedded model, at each of `points`
    between them: the spherical interpolation of their conditioning, rendered with the seeds and settings of
    `values` (EmbeddedOptions by name). Exact: each child's written prompt is its mixed conditioning."""
    points = check_points(points)
    render = parse(EmbeddedOptions, {**values, "prompt": first[0], "negative_prompt": first[1]})
    model = EmbeddedModel(count=render.prototypes, size=render.size, seed=render.model_seed,
                          device=_device(render.device))
    renderer = EmbeddedRenderer(model, [render.seed + index for index in range(render.batch)], steps=render.steps,
                                sampler=render.sampler, schedule=render.schedule, cfg_scale=render.cfg_scale)
    written = [(model.encoder.mixed_prompt(first[0], second[0], t), model.encoder.mixed_prompt(first[1], second[1], t))
               for t in points]
    return [Child(t, prompt, negative, True, [png_bytes(pixels) for pixels in to_pixels(batch.images)])
            for t, (prompt, negative), batch in zip(points, written, renderer.render(written))]
