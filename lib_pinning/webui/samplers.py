"""The Hyperbatch samplers in A1111's sampler list (the bridge to A1111's sampler call is `bridge.py`).

The fork strength is a WebUI setting ("Hyperbatch fork strength", written to the infotext when not 1 and
restored from it when pasted), so a pinned prompt's infotext reproduces its pictures in plain txt2img.
"""

from __future__ import annotations

from modules import sd_samplers, sd_samplers_common, sd_samplers_kdiffusion, shared

from ..samplers import SAMPLERS
from .bridge import bridge

# A1111's options for each sampler, as for the plain sampler of the same name (sd_samplers_kdiffusion).
A1111_OPTIONS = {
    "Euler a Hyperbatch": {"uses_ensd": True},
    "DPM++ 2M Hyperbatch": {"scheduler": "karras"},
    "DPM++ SDE Hyperbatch": {"scheduler": "karras", "second_order": True, "brownian_noise": True},
    "DPM++ 2M SDE Hyperbatch": {"scheduler": "exponential", "brownian_noise": True},
}
FORK_STRENGTH_SETTING = "hyperbatch_fork_strength"
FORK_STRENGTH_INFOTEXT = "Hyperbatch fork strength"


def fork_strength(model) -> float:
    strength = float(getattr(shared.opts, FORK_STRENGTH_SETTING, 1.0))
    p = getattr(model, "p", None)
    if strength != 1.0 and p is not None:
        p.extra_generation_params[FORK_STRENGTH_INFOTEXT] = strength
    return strength


def register() -> list[str]:
    """Add the Hyperbatch samplers to A1111's list once per process ("Reload UI" imports scripts again)."""
    added = []
    for name, options in A1111_OPTIONS.items():
        if name in sd_samplers.all_samplers_map:
            continue
        spec = SAMPLERS[name]
        function = bridge(spec.function, spec.noise == "ancestral", fork_strength)
        alias = "k_" + name.lower().replace("++", "pp").replace(" ", "_")
        data = sd_samplers_common.SamplerData(
            name, lambda model, f=function: sd_samplers_kdiffusion.KDiffusionSampler(f, model), [alias], options)
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
        1.0, "Hyperbatch fork strength: noise a fork gives each child (0: copies, 1: one ancestral step)",
        gr.Slider, {"minimum": 0.0, "maximum": 2.0, "step": 0.05},
        section=("sampler-params", "Sampler parameters"), infotext=FORK_STRENGTH_INFOTEXT))
