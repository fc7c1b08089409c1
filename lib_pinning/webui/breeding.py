"""Breeding two different prompts in the WebUI: children whose conditioning is the spherical interpolation of the
two prompts' (lib_pinning.breeding.slerp), rendered through the WebUI's own pipeline.

Each child is a txt2img job of the first parent's prompt and settings (seed, steps, sampler, schedule type, CFG
scale, size: from its infotext, or given), marked with a `Mix`. The WebUI's denoiser hook
(`script_callbacks.on_cfg_denoiser`, `on_cfg_denoiser` here) finds the mark on the job and replaces the text
conditioning the WebUI made for the first prompt, at every step, by its slerp with the second prompt's (made by the
WebUI's own prompt parser, prompt editing and emphasis included) — the cross-attention tokens and, on SDXL, the
pooled vector alike. The WebUI swallows a hook's errors, so the hook only records them; the job is refused
afterwards if the mix failed or was never applied. The written prompt of a child is A1111's `AND` with weights: an
approximation (composable diffusion averages the denoiser's outputs, not the conditioning), labelled as such; its
negative prompt is the nearer parent's (a negative prompt has no AND).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from modules import infotext_utils, processing, prompt_parser, sd_samplers, shared

from ..breeding import Child, and_prompt, check_points, slerp
from ..errors import InputError
from ..report.images import png_bytes
from . import evolution

MIX = "prompt_pinning_mix"  # the job attribute the denoiser hook looks for
EXTRA_NETWORK = re.compile(r"<[^<>:]+:[^<>]*>")  # <lora:name:1>: taken out of the first prompt by the WebUI only
FROM_INFOTEXT = {"Seed": "seed", "Steps": "steps", "Sampler": "sampler", "Schedule type": "scheduler",
                 "CFG scale": "cfg_scale", "Size-1": "width", "Size-2": "height"}


@dataclass
class Mix:
    """The second parent of one child's job, and what the hook did with it."""

    t: float
    prompt: str
    negative_prompt: str
    steps: int                 # the schedule's length (prompt editing), as the WebUI counts it for this sampler
    cond: list | None = None   # the second parent's scheduled conditioning, made at the first step
    uncond: list | None = None
    applied: int = 0           # steps mixed
    error: str = ""


def mixed(mine, other, t: float):
    """The WebUI's conditioning of a batch (rows, tokens, dim) — or SDXL's dict — slerped with the second parent's
    (one row), each row alike; conditionings of different lengths (prompts of different numbers of 75-token
    chunks) cannot be mixed."""
    if mine is None:  # Forge makes no unconditional conditioning at a CFG scale of 1
        return None
    if isinstance(mine, dict):  # SDXL's; the WebUI reads the result's `shape` (its DictWithShape)
        return type(mine)({key: mixed(mine[key], other[key], t) for key in mine})
    if mine.shape[1:] != other.shape[1:]:
        raise InputError(f"the two prompts' conditionings differ in shape ({tuple(mine.shape[1:])} and "
                         f"{tuple(other.shape[1:])}): breeding needs prompts of the same number of 75-token chunks")
    return slerp(mine, other.to(mine.device, mine.dtype).expand_as(mine), t)


def on_cfg_denoiser(params) -> None:
    """`script_callbacks.on_cfg_denoiser` hook: mixes the conditioning of a job marked with a Mix."""
    denoiser = params.denoiser
    p = getattr(denoiser, "p", None)
    mix = getattr(p, MIX, None)
    if mix is None or mix.error:
        return
    try:
        if mix.cond is None:
            size = {"width": p.width, "height": p.height}
            scheduling = (None, bool(getattr(shared.opts, "use_old_scheduling", False)))  # as setup_conds does
            mix.cond = prompt_parser.get_learned_conditioning(
                shared.sd_model, prompt_parser.SdConditioning([mix.prompt], **size), mix.steps, *scheduling)
            mix.uncond = prompt_parser.get_learned_conditioning(
                shared.sd_model, prompt_parser.SdConditioning([mix.negative_prompt], is_negative_prompt=True, **size),
                mix.steps, *scheduling)
        step = denoiser.step
        params.text_cond = mixed(params.text_cond, prompt_parser.reconstruct_cond_batch(mix.cond, step), mix.t)
        params.text_uncond = mixed(params.text_uncond, prompt_parser.reconstruct_cond_batch(mix.uncond, step), mix.t)
        mix.applied += 1
    except Exception as error:  # noqa: BLE001 - the WebUI would swallow it: the job is refused afterwards
        mix.error = str(error) if isinstance(error, InputError) else f"{type(error).__name__}: {error}"


def parent(given: dict) -> tuple[str, str, dict]:
    """(prompt, negative prompt, render settings by the --webui options' names) of a parent given as
    {"prompt", "negative_prompt"} or {"infotext": a picture's parameters}."""
    if set(given) - {"prompt", "negative_prompt", "infotext"} or not all(isinstance(v, str) for v in given.values()):
        raise InputError("a parent is {\"prompt\": ..., \"negative_prompt\": ...} or {\"infotext\": ...} (text)")
    if "infotext" not in given:
        return given.get("prompt", ""), given.get("negative_prompt", ""), {}
    read = infotext_utils.parse_generation_parameters(given["infotext"])
    settings = {name: read[key] for key, name in FROM_INFOTEXT.items() if key in read}
    prompt, negative = str(read.get("Prompt", "")), str(read.get("Negative prompt", ""))
    styles = read.get("Styles array") or []  # the WebUI takes saved styles' text out of the prompts it reads
    if styles:
        prompt = shared.prompt_styles.apply_styles_to_prompt(prompt, styles)
        negative = shared.prompt_styles.apply_negative_styles_to_prompt(negative, styles)
    return prompt, negative, settings


def _steps(p) -> int:
    """The schedule's length the WebUI gives prompt editing for this job (processing.setup_conds)."""
    config = sd_samplers.find_sampler_config(p.sampler_name)
    return config.total_steps(p.steps) if config else p.steps


def breed(first: dict, second: dict, points: Sequence[float], values: dict) -> list[Child]:
    """Children of two parents at each of `points` (0: the first, 1: the second), rendered with the first
    parent's settings, overridden by `values` (the --webui options by name: seed, batch, steps, ...)."""
    points = check_points(points)
    prompt, negative, settings = parent(first)
    other_prompt, other_negative, _ = parent(second)
    if (prompt, negative) == (other_prompt, other_negative):
        raise InputError("both parents have the same prompts: breed two different ones (or two candidates of an "
                         "evolution run, which breed by their genes)")
    if EXTRA_NETWORK.search(other_prompt + other_negative):
        raise InputError("the second parent's prompts have extra networks (<lora:…>, <hypernet:…>): their conditioning "
                         "cannot be mixed in; take them out (or make that parent the first)")
    unknown = sorted(set(values) - set(evolution.RENDER_NAMES))
    if unknown:
        raise InputError(f"unknown option{'s' if len(unknown) > 1 else ''} for breeding: {', '.join(unknown)} "
                         f"(known: {', '.join(evolution.RENDER_NAMES)})")
    settings = evolution.render_values({"batch": 2, **settings, **values})
    children = []
    with evolution.webui_job("prompt breeding"):
        for t in points:
            p = evolution.processing_job(prompt, negative, settings)
            mix = Mix(t, other_prompt, other_negative, _steps(p))
            setattr(p, MIX, mix)
            processed = processing.process_images(p)
            if shared.state.interrupted or shared.state.skipped:
                raise InputError("breeding was interrupted: no child is kept (its pictures were unfinished)")
            if mix.error or not mix.applied:
                raise InputError(f"the child at {t} could not be mixed: " + (
                    mix.error or "this WebUI never handed its conditioning to the denoiser hook "
                                 "(script_callbacks.on_cfg_denoiser)"))
            written = and_prompt(prompt, other_prompt, t)
            written_negative = negative if t < 0.5 else other_negative  # no AND in a negative prompt
            infotexts = [f"{written}\nNegative prompt: {written_negative}\n{text.splitlines()[-1]}"
                         for text in processed.infotexts[:settings.batch]]
            pictures = [png_bytes(np.asarray(image.convert("RGB"))) for image in processed.images[:settings.batch]]
            children.append(Child(t, written, written_negative, False, pictures, infotexts))
    return children
