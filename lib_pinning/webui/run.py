"""`run(p, *args)` of the "Prompt pinning" script: check everything, run the engine, return the best images.

Bad input raises `PinningInputError` before anything renders (A1111 shows its message in the UI and the API
response). A fault mid-run (out of memory, a NaN loss, a full disk) or Interrupt/Skip ends the run with its
finished generations: the best images so far come back, with a comment that says what happened and where the
report is.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import torch
from fastapi import HTTPException
from modules import devices, processing, shared

from ..engine import PinningJob, PinningRun
from ..genome import PromptError, build_genome
from ..hyperbatch import HyperbatchWeights
from ..objective import Objective, TargetError, prepare_targets
from ..runfile import new_run_dir
from ..search import SearchOptions
from . import controls, samplers, targets, text_model
from .renderer import WebUIRenderer

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
        raise PinningInputError("Prompt pinning needs one prompt, not a list of prompts")
    styles = getattr(p, "styles", None) or []
    return (shared.prompt_styles.apply_styles_to_prompt(p.prompt, styles),
            shared.prompt_styles.apply_negative_styles_to_prompt(p.negative_prompt, styles))


@dataclasses.dataclass
class _Plan:
    settings: controls.PinSettings
    search: SearchOptions
    target_images: list
    genome: object
    prompt: str
    negative_prompt: str
    weighting: HyperbatchWeights | None
    notices: list


def _sampled_steps(p) -> int:
    """The steps the sampler takes: img2img samples only the denoising strength's share of them, unless
    "img2img_fix_steps" is on (A1111's setup_img2img_steps; read here with the job's own override of it)."""
    if getattr(p, "init_images", None) is None:
        return p.steps
    if (p.override_settings or {}).get("img2img_fix_steps", shared.opts.img2img_fix_steps):
        return p.steps
    return int(min(p.denoising_strength, 0.999) * p.steps) + 1


def _plan(p, values) -> _Plan:
    """Every check that can fail before rendering."""
    settings = controls.decode(values)
    target_images = targets.decode_targets(settings.targets)
    prompt, negative = _styled_prompts(p)
    processing.fix_seed(p)
    images_per_individual = p.batch_size * p.n_iter
    if images_per_individual < 2:
        raise PinningInputError("Prompt pinning compares the images of a batch: set Batch size (or Batch "
                                "count) so that there are at least 2 images")
    init_images = getattr(p, "init_images", None) or []
    if 1 < len(init_images) != p.batch_size:
        raise PinningInputError(f"img2img with {len(init_images)} input images: set Batch size to "
                                f"{len(init_images)} (one image per row) or give one image")
    genome = build_genome(prompt, negative, settings.granularity,
                          embeddings=text_model.embedding_names())
    search = settings.search_for(p.seed)
    search.resolved(len(genome))  # raises on bad CMA-ES options
    sampler, steps = p.sampler_name or "", _sampled_steps(p)
    notices = [f"passed through unchanged: {', '.join(genome.frozen)}"] if genome.frozen else []
    notices += settings.notices(sampler, steps, p.batch_size, len(target_images))
    return _Plan(settings, search, target_images, genome, prompt, negative,
                 settings.weighting(sampler, steps, p.batch_size), notices)


def run(p, *values):
    """The script's `run`: returns a `Processed` with the best individual's images."""
    if not _one_run_at_a_time.acquire(blocking=False):
        raise PinningInputError("another Prompt pinning run is in progress in this WebUI; wait for it to end")
    try:
        try:
            plan = _plan(p, values)
        except (PromptError, TargetError, controls.SettingsError, ValueError) as error:
            raise PinningInputError(str(error)) from None
        return _pin(p, plan)
    finally:
        _one_run_at_a_time.release()


def _pin(p, plan: _Plan):
    search = plan.search
    resolved = search.resolved(len(plan.genome))
    total_renders = 1 + resolved.generations * resolved.lambda_
    objective = Objective(None, plan.settings.loss_mode, plan.weighting)

    def targets_at_render_size(first_batch: torch.Tensor) -> None:
        if plan.target_images and plan.settings.loss_mode != "consistency":
            loaded, resized = prepare_targets(plan.target_images, tuple(first_batch.shape[-2:]))
            plan.notices.extend(resized)
            objective.set_targets(loaded.to(first_batch.device))

    strength = _fork_strength(p, plan.settings)
    renderer = WebUIRenderer(p, total_renders, targets_at_render_size, strength)
    run_dir = new_run_dir(Path(p.outpath_samples or "outputs") / RUNS_FOLDER)
    best_outputs = {}

    def on_best(best: dict, images: torch.Tensor) -> None:
        best_outputs["images"] = renderer.outputs.get((best["prompt"], best["negative_prompt"]))
        renderer.show_preview(images)

    shared.state.job_count = total_renders * p.n_iter
    shared.total_tqdm.updateTotal(total_renders * p.n_iter * _sampled_steps(p))
    for notice in plan.notices:
        print(f"Prompt pinning: {notice}")
    job = PinningJob(plan.genome, renderer, objective, search, run_dir, _options_record(p, plan, strength),
                     should_stop=renderer.stop_requested, progress=False, on_best=on_best)
    pinning = PinningRun(job)
    try:
        pinning.run()
    except Exception as error:  # recorded as "failed" in run.json; the finished generations are kept
        pinning.record["message"] = _fault_message(error)
        print(f"Prompt pinning: the run failed: {pinning.record['message']}")
        devices.torch_gc()
    return _processed(p, pinning.record, best_outputs.get("images"), run_dir, plan.notices, renderer.subseeds)


def _fork_strength(p, settings: controls.PinSettings) -> float:
    """The control's strength; at its default, a strength the job already overrides (a pasted infotext) wins."""
    overridden = (p.override_settings or {}).get(samplers.FORK_STRENGTH_SETTING)
    if overridden is not None and settings.fork_strength == controls.default_of("fork_strength"):
        return float(overridden)
    return settings.fork_strength


def _fault_message(error: Exception) -> str:
    if isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower():
        return "out of GPU memory: lower the batch size or the image size"
    return f"{type(error).__name__}: {error}"


def _options_record(p, plan: _Plan, fork_strength: float) -> dict:
    checkpoint = getattr(getattr(shared.sd_model, "sd_checkpoint_info", None), "name_for_extra", None)
    return {"prompt": plan.prompt, "negative_prompt": plan.negative_prompt, "prompt_as_typed": p.prompt,
            "styles": list(getattr(p, "styles", None) or []), "targets": len(plan.target_images),
            "batch_size": p.batch_size, "n_iter": p.n_iter, "steps": p.steps, "sampler": p.sampler_name,
            "schedule": getattr(p, "scheduler", None), "cfg_scale": p.cfg_scale, "width": p.width,
            "height": p.height, "seed": int(p.seed), "granularity": plan.settings.granularity,
            "fork_strength": fork_strength, "model": checkpoint,
            "hyperbatch_weights": None if plan.weighting is None else dataclasses.asdict(plan.weighting),
            "controls": plan.settings.raw, "webui": True}


def _processed(p, record: dict, outputs, run_dir: Path, notices: list, subseeds: list[int]):
    status = record["status"]
    report = run_dir / "index.html"
    if outputs is None:  # stopped or failed before the first batch was finished: nothing to show
        if status == "failed":
            raise PinningRunError(f"Prompt pinning failed before the first batch was rendered: "
                                  f"{record.get('message', '')}")
        p.comment("Prompt pinning was stopped before the first batch was rendered.")
        return processing.Processed(p, [], seed=int(p.seed), info="")
    images, infotexts = outputs
    best, baseline = record["best"], record["baseline"]
    finished = len(record["generations"])
    summary = {"done": f"done after {finished} generations",
               "interrupted": f"stopped after {finished} finished generations",
               "failed": f"failed after {finished} finished generations: {record.get('message', '')}"}[status]
    found = ("nothing beat the prompt as written" if best["generation"] < 0
             else f"from generation {best['generation']}")
    p.comment(f"Prompt pinning {summary}. Best loss {best['loss']:.4f} ({found}; the prompt as written: "
              f"{baseline['loss']:.4f}).")
    for notice in notices:
        p.comment(f"Notice: {notice}.")
    p.comment(f"Report: {report.resolve()} (in the browser: /file={report.resolve()})")
    processed = processing.Processed(
        p, list(images), seed=int(p.seed), info=infotexts[0], all_prompts=[best["prompt"]] * len(images),
        all_negative_prompts=[best["negative_prompt"]] * len(images), all_seeds=list(record["options"]["seeds"]),
        subseed=subseeds[0], all_subseeds=list(subseeds), infotexts=list(infotexts))
    processed.prompt, processed.negative_prompt = best["prompt"], best["negative_prompt"]
    # For API clients: the response's `info` carries extra_generation_params (the infotexts are already made).
    processed.extra_generation_params = {**processed.extra_generation_params, "Prompt pinning": {
        "status": status, "report": str(report.resolve()), "run_folder": str(run_dir.resolve()),
        "best_loss": best["loss"], "baseline_loss": baseline["loss"], "generations": finished,
        "notices": list(notices)}}
    return processed
