"""The Hyperbatch samplers in A1111's sampler list (the bridge to A1111's sampler call is `bridge.py`).

The fork strength is a WebUI setting ("Hyperbatch fork strength", written to every infotext of a Hyperbatch
sampler and restored from it when pasted), so a pinned prompt's infotext reproduces its pictures in plain
txt2img. A1111 forks nothing where rows start from different images (hires fix pass, several img2img images),
with the refiner (it switches models mid-sampling), flow-matching models (SD3; on Forge also Flux and Chroma) or
ControlNet (Forge's, or the sd-webui-controlnet extension with a unit on).
"""

from __future__ import annotations

import logging

from modules import sd_samplers, sd_samplers_common, sd_samplers_kdiffusion, shared

from ..options import FORK_STRENGTH_DEFAULT, PinOptions, spec_of
from ..samplers import SAMPLERS
from .bridge import bridge

log = logging.getLogger(__name__)

# A1111's options for each sampler, as for the plain sampler of the same name (sd_samplers_kdiffusion).
A1111_OPTIONS = {
    "Euler a Hyperbatch": {"uses_ensd": True},
    "DPM++ 2M Hyperbatch": {"scheduler": "karras"},
    "DPM++ SDE Hyperbatch": {"scheduler": "karras", "second_order": True, "brownian_noise": True},
    "DPM++ 2M SDE Hyperbatch": {"scheduler": "exponential", "brownian_noise": True},
}
FORK_STRENGTH_SETTING = "hyperbatch_fork_strength"
FORK_STRENGTH = spec_of(PinOptions, "fork_strength")  # the setting has the script control's range and infotext key
FORK_STRENGTH_INFOTEXT = FORK_STRENGTH.infotext


def fork_strength(model) -> float:
    """The job's own strength (set by the pinning script) or the setting's."""
    p = getattr(model, "p", None)
    strength = getattr(p, FORK_STRENGTH_SETTING, None)
    if strength is None:
        strength = getattr(shared.opts, FORK_STRENGTH_SETTING, FORK_STRENGTH_DEFAULT)
    if p is not None:  # always written: a pasted infotext must not take the strength from the pasting WebUI
        p.extra_generation_params[FORK_STRENGTH_INFOTEXT] = float(strength)
    return float(strength)


_said: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        log.info(message)


def _kdiffusion_sampler(function, model, extra_params: list[str]):
    sampler = sd_samplers_kdiffusion.KDiffusionSampler(function, model)
    sampler.extra_params = extra_params
    return sampler


def can_fork(model) -> bool:
    """Whether a Hyperbatch sampler may fork in this sampling call (else it samples the whole batch)."""
    p = getattr(model, "p", None)
    if p is None:
        return True
    if getattr(p, "is_hr_pass", False) or len(getattr(p, "init_images", None) or []) > 1:
        return False  # every row starts from its own image: forking would replace it by its parent's
    if getattr(p, "refiner_checkpoint_info", None) is not None and (p.refiner_switch_at or 0) < 1:
        _say_once("Hyperbatch: the refiner switches models during sampling; sampling the whole batch at every step")
        return False
    if _flow_matching(shared.sd_model):
        _say_once("Hyperbatch: this model samples by flow matching, which forks do not model; sampling the whole "
                  "batch at every step")
        return False
    if _controlnet_on(p):
        _say_once("Hyperbatch: ControlNet is on; sampling the whole batch at every step")
        return False
    return True


def _controlnet_on(p) -> bool:
    """Forge's built-in ControlNet, or an enabled unit (or StyleAlign) of the sd-webui-controlnet extension.

    Both cache per-row state at the row count of the first sampling call (control images, reference latents,
    IP-Adapter keys), which crashes or goes wrong once a fork widens the batch.
    """
    if getattr(_forge_unet(shared.sd_model), "controlnet_linked_list", None) is not None:
        return True
    for script in getattr(getattr(p, "scripts", None), "alwayson_scripts", None) or []:
        if str(getattr(script, "title", lambda: "")()).lower() != "controlnet":
            continue
        if getattr(getattr(script, "latest_network", None), "control_params", None):
            return True
        batch_options = getattr(script, "ui_batch_option_state", None) or []
        if len(batch_options) > 1 and batch_options[1]:  # StyleAlign pools attention over the rows of a call
            return True
    return False


def _forge_unet(model):
    return getattr(getattr(model, "forge_objects", None), "unet", None)


def _flow_matching(model) -> bool:
    """SD3 in A1111; on Forge every model whose predictor mixes noise in as sigma*noise + (1-sigma)*x (SD3.5, Flux,
    Chroma), which the forks' x = denoised + sigma*noise does not describe."""
    predictor = getattr(getattr(_forge_unet(model), "model", None), "predictor", None)
    return getattr(model, "is_sd3", False) or getattr(predictor, "prediction_type", None) == "const"


def register() -> list[str]:
    """Add the Hyperbatch samplers to A1111's list once per process ("Reload UI" imports scripts again)."""
    added = []
    for name, options in A1111_OPTIONS.items():
        if name in sd_samplers.all_samplers_map:
            continue
        spec = SAMPLERS[name]
        function = bridge(spec.function, spec.noise == "ancestral", fork_strength, can_fork)
        alias = "k_" + name.lower().replace("++", "pp").replace(" ", "_")
        # A1111 looks up a sampler's extra parameters by function name; these are the plain samplers' ones.
        extra_params = ["s_noise"] if spec.noise == "brownian" else []
        data = sd_samplers_common.SamplerData(
            name, lambda model, f=function, extra=extra_params: _kdiffusion_sampler(f, model, extra), [alias],
            options)
        if hasattr(sd_samplers, "add_sampler"):  # Forge
            sd_samplers.add_sampler(data)
        else:
            sd_samplers.all_samplers.append(data)
            sd_samplers.all_samplers_map[name] = data
        added.append(name)
    if added and not hasattr(sd_samplers, "add_sampler"):
        sd_samplers.set_samplers()
    return added


def add_settings() -> None:
    """The fork strength setting (Settings → Sampler parameters), restored from infotexts when pasted."""
    import gradio as gr

    shared.opts.add_option(FORK_STRENGTH_SETTING, shared.OptionInfo(
        FORK_STRENGTH_DEFAULT, f"{FORK_STRENGTH_INFOTEXT}: {FORK_STRENGTH.help}", gr.Slider,
        {"minimum": FORK_STRENGTH.minimum, "maximum": FORK_STRENGTH.maximum, "step": FORK_STRENGTH.step},
        section=("sampler-params", "Sampler parameters"), infotext=FORK_STRENGTH_INFOTEXT))
