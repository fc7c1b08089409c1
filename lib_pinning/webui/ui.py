"""The script's gradio controls, built from the options schema (lib_pinning.options.SCRIPT_CONTROLS).

Cheap and side-effect free: A1111 also calls `ui()` inside a throwaway `gr.Blocks()` to read defaults. Only
controls that A1111 (gradio 3.41) and Forge (gradio 4) both have. Always-visible controls come first, each group
in a closed accordion after them; `build` returns the components in `script_args` order whatever the layout.

Tooltips: the schema's help of each control travels in a hidden HTML element as JSON (elem_id -> text);
javascript/prompt_pinning.js puts it on each control's block, the file upload included (A1111's hints.js only
reaches controls by their label text, which a file upload does not show).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable

import gradio as gr

from ..options import SCRIPT_CONTROLS, Spec, tooltip
from .script_args import control_default

TOOLTIPS_CLASS = "prompt-pinning-tooltips"


def _component(spec: Spec, elem_id: Callable[[str], str]):
    common = {"label": spec.label, "elem_id": elem_id(spec.name)}
    value = control_default(spec)
    if spec.control == "files":
        return gr.File(file_count="multiple", file_types=["image"], **common)
    if spec.control == "dropdown":
        return gr.Dropdown(choices=list(spec.choices), value=value, **common)
    if spec.control == "slider":
        return gr.Slider(minimum=spec.minimum, maximum=spec.maximum, step=spec.step, value=value, **common)
    if spec.control == "number":
        return gr.Number(value=value, precision=0 if spec.kind == "int" else None, **common)
    if spec.control == "checkbox":
        return gr.Checkbox(value=value, **common)
    if spec.control == "text":
        return gr.Textbox(value=value, lines=1, **common)
    raise ValueError(f"unknown control kind {spec.control!r}")


def build(elem_id: Callable[[str], str]) -> list:
    """The components in `script_args` order; grouped ones sit in closed accordions after the others."""
    made = {}
    for spec in SCRIPT_CONTROLS:
        if not spec.group:
            made[spec.name] = _component(spec, elem_id)
    for group in dict.fromkeys(spec.group for spec in SCRIPT_CONTROLS if spec.group):
        with gr.Accordion(group, open=False, elem_id=elem_id(group.lower().replace(" ", "_").replace("-", ""))):
            for spec in SCRIPT_CONTROLS:
                if spec.group == group:
                    made[spec.name] = _component(spec, elem_id)
    tips = {elem_id(spec.name): tooltip(spec) for spec in SCRIPT_CONTROLS}
    gr.HTML(f'<div class="{TOOLTIPS_CLASS}" hidden data-tooltips="{html.escape(json.dumps(tips), quote=True)}">'
            "</div>", elem_id=elem_id("tooltips"))
    return [made[spec.name] for spec in SCRIPT_CONTROLS]
