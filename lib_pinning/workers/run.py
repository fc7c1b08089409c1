"""Pinning on running WebUIs: what `python -m lib_pinning pin --webui URL …` runs, and its Python API.

The job is built as every job is (lib_pinning.job), with a `WorkerPool` as its renderer; every check, the
workers' own included (up, sampler, checkpoint, the same images of your prompt), runs before the run folder is
touched. A run of workers is resumed with workers again (any number, any addresses): the record keeps what was
rendered, never where.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

from ..engine import RunResult
from ..errors import InputError
from ..images import open_image
from ..job import RenderPlan, build_job
from ..observer import Observer
from ..options import FORK_STRENGTH_DEFAULT, PinOptions, WorkerOptions, parse
from ..record import WORKERS_API, RenderRecord, RunRecord, read_record
from ..runner import execute
from ..samplers import img2img_steps
from .pool import WorkerPool

log = logging.getLogger(__name__)
CONNECTION = ("webui", "api_auth", "timeout", "retries", "worker_tolerance")  # how to reach them, not what they render
_PIN_NAMES = {field.name for field in dataclasses.fields(PinOptions)}


def pin(prompt: str, negative_prompt: str = "", *, webui: Sequence[str], out: str | Path | None = None,
        targets: Sequence = (), observers: Sequence[Observer] = (), progress: bool = True, report: bool = True,
        **values) -> RunResult:
    """Pin `prompt` on the WebUIs at `webui`; `values` are options by name (PinOptions and WorkerOptions fields)."""
    options = parse(PinOptions, {**{k: v for k, v in values.items() if k in _PIN_NAMES}, "targets": targets})
    render = parse(WorkerOptions, {**{k: v for k, v in values.items() if k not in _PIN_NAMES}, "webui": webui,
                                   "prompt": prompt, "negative_prompt": negative_prompt})
    return pin_workers(options, render, out=out, observers=observers, progress=progress, report=report)


def pin_workers(options: PinOptions, render: WorkerOptions, *, out: str | Path | None = None,
                observers: Sequence[Observer] = (), progress: bool = True, report: bool = True,
                resume: RunRecord | None = None) -> RunResult:
    if options.semantic_weight > 0 or options.tags:
        raise InputError("the semantic loss and target tags are not available with --webui workers (they need a "
                         "CLIP model beside the loss); pin with them inside the WebUI, or use ꟻLIP and masks here")
    images = [open_image(path) for path in options.targets]  # every file is read before a worker is asked
    masks = [open_image(path, "mask") for path in options.masks]
    extra, init_image, sampled_steps = {}, None, render.steps
    if render.init_image:
        open_image(render.init_image)
        data = Path(render.init_image).read_bytes()
        init_image = base64.b64encode(data).decode("ascii")
        extra = {"init_image": render.init_image, "init_image_sha256": hashlib.sha256(data).hexdigest(),
                 "denoising_strength": render.denoising_strength}
        sampled_steps = img2img_steps(render.steps, render.denoising_strength)
    pool = WorkerPool.connect(render, init_image)
    try:
        facts = pool.facts
        plan = RenderPlan(RenderRecord(pool.seeds, render.sampler, render.scheduler, render.steps, render.cfg_scale,
                                       render.width, render.height, facts.checkpoint,
                                       {"api": WORKERS_API, "vae": facts.vae, **extra}),
                          sampled_steps=sampled_steps, tree_size=render.batch,
                          fork_strength=FORK_STRENGTH_DEFAULT if facts.fork_strength is None else facts.fork_strength)

        def make_renderer(resolved: PinOptions) -> WorkerPool:
            pool.fork_strength = resolved.fork_strength
            return pool

        job = build_job(options, render.prompt, render.negative_prompt, plan, make_renderer, targets=images,
                        target_sources=[str(path) for path in options.targets], masks=masks,
                        mask_sources=[str(path) for path in options.masks])
        pool.agree(job.genome.prompt([0.0] * len(job.genome)))
        result = execute(job, out, resume=resume, observers=observers, progress=progress, report=report)
    finally:
        pool.close()
    for line in pool.speeds():
        log.info("%s", line)
    return result


def resume(run_dir: str | Path, *, webui: Sequence[str], observers: Sequence[Observer] = (), progress: bool = True,
           report: bool = True, **values) -> RunResult:
    """Continue the run in `run_dir` on the WebUIs at `webui` (any, as long as they render as the run's did);
    `values` may raise `generations` and give the connection options; the rest must be the run's."""
    record = read_record(run_dir)
    pinning, rendering = recorded_values(record)
    options = parse(PinOptions, {**pinning, **{k: v for k, v in values.items() if k in _PIN_NAMES}})
    render = parse(WorkerOptions, {**rendering, **{k: v for k, v in values.items() if k not in _PIN_NAMES},
                                   "webui": webui})
    return pin_workers(options, render, out=run_dir, observers=observers, progress=progress, report=report,
                       resume=record)


def recorded_values(record: RunRecord) -> tuple[dict, dict]:
    """The options a run on WebUI workers was made with, by name: (PinOptions values, WorkerOptions ones)."""
    render = record.render
    if render.extra.get("api") != WORKERS_API:
        raise InputError(f"the run was rendered by {render.model!r}, not by WebUI workers: resume it without --webui")
    pinning = {name: value for name, value in record.options.items() if name in _PIN_NAMES}
    rendering = {"prompt": record.prompt, "negative_prompt": record.negative_prompt, "seed": render.seeds[0],
                 "batch": len(render.seeds), "steps": render.steps, "sampler": render.sampler,
                 "scheduler": render.schedule, "cfg_scale": render.cfg_scale, "width": render.width,
                 "height": render.height, "checkpoint": render.model, "vae": render.extra.get("vae", ""),
                 **{name: render.extra[name] for name in ("init_image", "denoising_strength") if name in render.extra}}
    return pinning, rendering
