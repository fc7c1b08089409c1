"""`run(p, *args)` of the "Prompt pinning" script: check everything, run the engine, return the best images.

The job comes from the same builder as on the command line (lib_pinning.job); this module only says what the
WebUI knows about rendering (its seeds, sampler, steps, size, checkpoint) and brings its renderer. Bad input
raises `PinningInputError` before anything renders (A1111 shows its message in the UI, the API answers HTTP 422).
A fault mid-run (out of memory, a NaN loss, a full disk) or Interrupt/Skip ends the run with its finished
generations: the best images so far come back, with a comment that says what happened and where the report is.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import torch
from fastapi import HTTPException
from modules import devices, processing, shared

from ..chooser import Chooser
from ..engine import ResumeRefused, RunResult, counted, run_pinning
from ..errors import InputError
from ..job import Job, RenderPlan, build_job, resume_differences
from ..options import AUTO, FORK_STRENGTH_DEFAULT, PinOptions, parse
from ..record import TARGETS_FOLDER, RenderRecord, RunRecord, read_record
from ..report import ReportRecorder
from ..runfile import RunLock, new_run_dir
from ..samplers import img2img_steps
from . import clip, samplers, script_args, targets, text_model
from .renderer import Preview, WebUIRenderer, seeds_of, subseeds_of

log = logging.getLogger(__name__)
RUNS_FOLDER = "prompt_pins"
# The WebUI's own queue already runs one job at a time; this guards code that calls `run` directly.
_one_run_at_a_time = threading.Lock()


class _MessageError(HTTPException):
    """An error whose message is all the user needs: an HTTPException, so that the API answers with the message
    as `detail` (also on Forge, which has no error middleware of A1111's kind); the UI shows "<class>: <message>"."""

    status_code = 500

    def __init__(self, message: str):
        super().__init__(status_code=self.status_code, detail=message)

    def __str__(self) -> str:
        return self.detail


class PinningInputError(_MessageError):
    """Input the run cannot use (HTTP 422): nothing was rendered."""

    status_code = 422


class PinningRunError(_MessageError):
    """The run failed before it had anything to show (e.g. out of memory on the first batch): HTTP 500."""


def _styled_prompts(p) -> tuple[str, str]:
    if not isinstance(p.prompt, str) or not isinstance(p.negative_prompt, str):
        raise InputError("Prompt pinning needs one prompt, not a list of prompts")
    styles = getattr(p, "styles", None) or []
    return (shared.prompt_styles.apply_styles_to_prompt(p.prompt, styles),
            shared.prompt_styles.apply_negative_styles_to_prompt(p.negative_prompt, styles))


def _sampled_steps(p) -> int:
    """The steps the sampler takes: img2img samples only the denoising strength's share of them, unless
    "img2img_fix_steps" is on (A1111's setup_img2img_steps; read here with the job's own override of it)."""
    if getattr(p, "init_images", None) is None:
        return p.steps
    if (p.override_settings or {}).get("img2img_fix_steps", shared.opts.img2img_fix_steps):
        return p.steps
    return img2img_steps(p.steps, p.denoising_strength)


def inherited_fork_strength(p) -> float:
    """What fork strength -1 means for this job: the strength its pasted infotext overrides, else the setting."""
    overridden = (p.override_settings or {}).get(samplers.FORK_STRENGTH_SETTING)
    if overridden is not None:
        return float(overridden)
    return float(getattr(shared.opts, samplers.FORK_STRENGTH_SETTING, FORK_STRENGTH_DEFAULT))


def _render_plan(p, prompt: str) -> RenderPlan:
    checkpoint = getattr(getattr(shared.sd_model, "sd_checkpoint_info", None), "name_for_extra", None)
    extra = {"batch_size": p.batch_size, "n_iter": p.n_iter, "prompt_as_typed": p.prompt,
             "styles": list(getattr(p, "styles", None) or []),
             # variation seeds change nothing at strength 0, and A1111 draws new ones for each request then
             "subseeds": subseeds_of(p) if p.subseed_strength else [],
             "img2img": getattr(p, "init_images", None) is not None}
    record = RenderRecord(seeds_of(p), p.sampler_name or "", getattr(p, "scheduler", None), p.steps, p.cfg_scale,
                          p.width, p.height, checkpoint, extra)
    return RenderPlan(record, _sampled_steps(p), p.batch_size, inherited_fork_strength(p))


def plan(p, options: PinOptions, mask_sources: list[str] | None = None, *, chooser: Chooser | None = None,
         renderer: type[WebUIRenderer] = WebUIRenderer) -> Job:
    """Every check that can fail before rendering, then the job. `mask_sources`: what run.json calls the masks
    (a resume's are in its saved targets' transparency); `chooser`: a prompt evolution run's (lib_pinning.chooser);
    `renderer`: the WebUIRenderer class that renders it."""
    target_images = targets.decode_targets(options.targets)
    mask_images = targets.decode_targets(options.masks, "mask")
    prompt, negative = _styled_prompts(p)
    processing.fix_seed(p)
    if p.batch_size * p.n_iter < 2:
        raise InputError("Prompt pinning compares the images of a batch: set Batch size (or Batch count) so that "
                         "there are at least 2 images")
    init_images = getattr(p, "init_images", None) or []
    if 1 < len(init_images) != p.batch_size:
        raise InputError(f"img2img with {len(init_images)} input images: set Batch size to {len(init_images)} (one "
                         "image per row) or give one image")
    render_plan = _render_plan(p, prompt)

    def make_renderer(resolved: PinOptions) -> WebUIRenderer:
        return renderer(p, 1 + resolved.generations * resolved.lambda_, resolved.fork_strength)

    return build_job(options, prompt, negative, render_plan, make_renderer, targets=target_images,
                     target_sources=[f"upload {index + 1}" for index in range(len(target_images))],
                     masks=mask_images, mask_sources=mask_sources if mask_sources is not None else
                     [f"mask upload {index + 1}" for index in range(len(mask_images))],
                     embeddings=text_model.embedding_names(), embedder=clip.embedder, chooser=chooser)


def _runs_folder(p) -> Path:
    return Path(p.outpath_samples or "outputs") / RUNS_FOLDER


def _resume_plan(p, options: PinOptions) -> tuple[Job, RunRecord, Path]:
    """The job that continues the run named by `options.resume`: the run's own options and targets (its targets
    folder holds them at render size), the budget raised by a larger Generations; refused where p differs."""
    text = options.resume.strip()
    folder = _runs_folder(p) / f"{int(text):08d}" if text.isdigit() else Path(text)
    record = read_record(folder)
    if record.render.model == "embedded":
        raise InputError(f"the run in {str(folder)!r} was made on the command line's embedded model: resume it "
                         "there (python -m lib_pinning pin --resume DIR)")
    targets = sorted((folder / TARGETS_FOLDER).glob("target-*.png"), key=lambda path: int(path.stem.split("-")[1]))
    given = record.objective.target_source == "given"
    recorded = {name: value for name, value in record.options.items() if name not in ("targets", "masks", "resume")}
    if options.generations != AUTO:
        recorded["generations"] = options.generations
    job = plan(p, parse(PinOptions, {**recorded, "targets": [str(path.resolve()) for path in targets] if given
                                      else []}), mask_sources=record.options.get("masks", []))
    problems = resume_differences(record, job.record)
    if problems:
        raise InputError("the run cannot be resumed with these settings: " + "; ".join(problems))
    return job, record, folder


def run(p, values, sent: int | None = None):
    """The script's `run`: returns a `Processed` with the best individual's images.

    `values`: the script's arguments; `sent`: how many the client sent (lib_pinning.webui.script_args).
    """
    if not _one_run_at_a_time.acquire(blocking=False):
        raise PinningInputError("another Prompt pinning run is in progress in this WebUI; wait for it to end")
    try:
        try:
            options = script_args.decode(values, sent)
            if options.resume.strip():
                job, record, folder = _resume_plan(p, options)
                lock = RunLock(folder).acquire()
            else:
                job, record = plan(p, options), None
                folder = new_run_dir(_runs_folder(p))
                lock = RunLock(folder).acquire()
        except InputError as error:
            raise PinningInputError(str(error)) from None
        with lock:
            return _pin(p, job, folder, record)
    finally:
        _one_run_at_a_time.release()


def _pin(p, job: Job, folder: Path, resume: RunRecord | None):
    renderer = job.renderer
    job.run_dir = folder
    job.observers = [Preview(), ReportRecorder(folder, complete=resume is not None)]
    job.should_stop = renderer.stop_requested
    shared.state.job_count = renderer.total_renders * p.n_iter
    shared.total_tqdm.updateTotal(renderer.total_renders * p.n_iter * _sampled_steps(p))
    try:
        result = run_pinning(job, resume)
    except ResumeRefused as error:
        raise PinningInputError(str(error)) from None
    if result.status == "failed":
        log.error("the run failed: %s", result.record.ending.message)
        devices.torch_gc()
    return _processed(p, result, renderer.subseeds)


def failure_message(result: RunResult) -> str:
    """Why a failed run failed, in the user's terms (out of memory says what to change)."""
    error = result.error
    if error is not None and (isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()):
        return "out of GPU memory: lower the batch size or the image size"
    return result.record.ending.message


def summary(result: RunResult) -> str:
    """How the run ended, in one phrase: done (and why it stopped), interrupted or failed (and why)."""
    finished = len(result.record.generations)
    if result.status == "done":
        return f"done after {counted(finished, 'generation')}: {result.record.ending.message}"
    if result.status == "interrupted":
        return f"stopped after {counted(finished, 'finished generation')}"
    return f"failed after {counted(finished, 'finished generation')}: {failure_message(result)}"


def _processed(p, result: RunResult, subseeds: list[int]):
    record, run_dir = result.record, result.run_dir
    report = run_dir / "index.html"
    if result.best is None or record.best is None:  # stopped or failed before the first batch was scored
        if record.status == "failed":
            raise PinningRunError(f"Prompt pinning failed before the first batch was rendered: "
                                  f"{failure_message(result)}")
        p.comment("Prompt pinning was stopped before the first batch was rendered.")
        return processing.Processed(p, [], seed=int(p.seed), info="")
    images, infotexts = result.best.payload
    best, baseline = record.best, record.baseline
    found = "nothing beat the prompt as written" if best.generation < 0 else f"from generation {best.generation}"
    p.comment(f"Prompt pinning {summary(result)}. Best loss {best.loss:.4f} ({found}; the prompt as written: "
              f"{baseline.loss:.4f}).")
    for notice in record.notices:
        p.comment(f"Notice: {notice}.")
    p.comment(f"Report: {report.resolve()} (in the browser: /file={report.resolve()})")
    processed = processing.Processed(
        p, list(images), seed=int(p.seed), info=infotexts[0], all_prompts=[best.prompt] * len(images),
        all_negative_prompts=[best.negative_prompt] * len(images), all_seeds=list(record.render.seeds),
        subseed=subseeds[0], all_subseeds=list(subseeds), infotexts=list(infotexts))
    processed.prompt, processed.negative_prompt = best.prompt, best.negative_prompt
    # For API clients: the response's `info` carries extra_generation_params (the infotexts are already made).
    processed.extra_generation_params = {**processed.extra_generation_params, "Prompt pinning": {
        "status": record.status, "cause": record.ending.cause if record.ending else None,
        "report": str(report.resolve()), "run_folder": str(run_dir.resolve()), "best_loss": best.loss,
        "baseline_loss": baseline.loss, "generations": len(record.generations), "notices": list(record.notices)}}
    return processed
