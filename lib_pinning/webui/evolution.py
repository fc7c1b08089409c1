"""Prompt evolution inside the WebUI: one `EvolutionService` whose runs render with the WebUI's own txt2img
pipeline, its run folders in `<txt2img outputs>/prompt_evolution/` (00001, 00002, ...).

A run's job comes from the same builder as pinning's (lib_pinning.webui.run.plan with a chooser); what it renders
with is checked as the command line's `--webui` options are (sampler, schedule type, steps, size, CFG scale, seed,
batch size), the rest are pinning options by name. Each generation renders in the run's own thread behind the
WebUI's queue lock, so it waits for (and never overlaps) a txt2img job. The Prompt evolution tab
(lib_pinning.webui.evolution_tab) and the HTTP routes (lib_pinning.evolution_routes) use this one service.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Sequence
from pathlib import Path

from modules import call_queue, processing, sd_samplers, sd_schedulers, shared

from ..chooser import MODE as CHOICE, Chooser
from ..errors import InputError
from ..evolution import EvolutionService
from ..job import Job, resume_differences
from ..options import AUTO, PinOptions, WorkerOptions, parse, spec_of
from ..record import RunRecord, read_record
from ..rendering import Rendered
from . import run as pinning
from .renderer import WebUIRenderer

RUNS_FOLDER = "prompt_evolution"
# What a run renders with, by the names of the command line's --webui options (A1111's API names)
RENDER_NAMES = ("seed", "batch", "steps", "sampler", "scheduler", "cfg_scale", "width", "height")
_service: EvolutionService | None = None
_made = threading.Lock()


def service() -> EvolutionService:
    """The WebUI's evolution service (made at first use: the output folder setting is read then)."""
    global _service
    with _made:
        if _service is None:
            _service = EvolutionService(runs_folder(), make_job, resume_job)
        return _service


def runs_folder() -> Path:
    return Path(shared.opts.outdir_txt2img_samples or "outputs/txt2img-images") / RUNS_FOLDER


class QueuedRenderer(WebUIRenderer):
    """Renders a generation as one WebUI job: behind the queue lock (after any txt2img job), with the WebUI's
    progress, Interrupt and Skip."""

    def render(self, prompts: Sequence[tuple[str, str]]) -> list[Rendered]:
        with webui_job("prompt evolution"):
            shared.state.job_count = len(prompts) * self.p.n_iter
            return super().render(prompts)


@contextlib.contextmanager
def webui_job(name: str):
    """One WebUI job from outside its own queue: behind the queue lock (after any txt2img job), with the WebUI's
    progress state begun and ended (Interrupt and Skip flags cleared at its start)."""
    with call_queue.queue_lock:
        shared.state.begin(job=name)
        try:
            yield
        finally:
            shared.state.end()


def render_values(values: dict) -> WorkerOptions:
    """The render settings of `values` (by RENDER_NAMES; a seed of -1 draws one), checked: sampler and schedule
    type must be the WebUI's own."""
    given = {name: values[name] for name in RENDER_NAMES if name in values}
    if given.get("seed") in (-1, "-1"):
        given["seed"] = secrets.randbelow(2**32)
    settings = parse(WorkerOptions, given)
    samplers = [sampler.name for sampler in sd_samplers.all_samplers]
    if settings.sampler not in samplers:
        raise InputError(f"{spec_of(WorkerOptions, 'sampler').title}: {settings.sampler!r} is not a sampler of this "
                         f"WebUI (it has: {', '.join(samplers)})")
    schedules = [schedule.label for schedule in sd_schedulers.schedulers]
    if settings.scheduler != "Automatic" and settings.scheduler not in schedules:
        raise InputError(f"{spec_of(WorkerOptions, 'scheduler').title}: {settings.scheduler!r} is not a schedule type "
                         f"of this WebUI (it has: Automatic, {', '.join(schedules)})")
    return settings


def processing_job(prompt: str, negative_prompt: str, settings: WorkerOptions):
    """A txt2img job of these settings, as the WebUI's API makes one (nothing saved by A1111: the run saves)."""
    folder = shared.opts.outdir_txt2img_samples or "outputs/txt2img-images"
    return processing.StableDiffusionProcessingTxt2Img(
        sd_model=shared.sd_model, outpath_samples=folder, outpath_grids=shared.opts.outdir_txt2img_grids or folder,
        prompt=prompt, negative_prompt=negative_prompt, seed=settings.seed, sampler_name=settings.sampler,
        scheduler=settings.scheduler, steps=settings.steps, cfg_scale=settings.cfg_scale, width=settings.width,
        height=settings.height, batch_size=settings.batch, n_iter=1, do_not_save_samples=True, do_not_save_grid=True)


def _job(prompt: str, negative_prompt: str, values: dict, chooser: Chooser) -> Job:
    settings = render_values(values)
    options = parse(PinOptions, {name: value for name, value in values.items() if name not in RENDER_NAMES})
    # Interrupt and Skip end a run only while it renders (QueuedRenderer): between generations the WebUI's flags
    # may be left over from another job, and the run's own Stop ends it there.
    return pinning.plan(processing_job(prompt, negative_prompt, settings), options, chooser=chooser,
                        renderer=QueuedRenderer)


def make_job(prompt: str, negative_prompt: str, values: dict, chooser: Chooser) -> Job:
    """A new run's checked job (an InputError naming what is wrong before anything exists)."""
    return _job(prompt, negative_prompt, values, chooser)


def resume_job(folder: Path, *, chooser: Chooser, **values) -> tuple[Job, RunRecord]:
    """The job that continues the run in `folder` with its own settings; `values` may raise its generations."""
    record = read_record(folder)
    if record.objective.mode != CHOICE:
        raise InputError(f"the run in {str(folder)!r} is a pinning run, not a prompt evolution run")
    unknown = [name for name in values if name != "generations"]
    if unknown:
        raise InputError(f"a resumed run keeps its settings; only generations may change, not {', '.join(unknown)}")
    render = record.render
    settings = {"seed": render.seeds[0], "batch": len(render.seeds), "steps": render.steps,
                "sampler": render.sampler, "scheduler": render.schedule or "Automatic",
                "cfg_scale": render.cfg_scale, "width": render.width, "height": render.height}
    options = {name: value for name, value in record.options.items() if name not in ("targets", "masks", "resume")}
    if values.get("generations", AUTO) != AUTO:
        options["generations"] = values["generations"]
    job = _job(record.prompt, record.negative_prompt, {**options, **settings}, chooser)
    problems = resume_differences(record, job.record)
    if problems:
        raise InputError(f"the run in {str(folder)!r} cannot go on here: " + "; ".join(problems))
    return job, record
