"""The script's gradio controls, built from `controls.CONTROLS` (one table for the UI and the API order).

Cheap and side-effect free: A1111 also calls `ui()` inside a throwaway `gr.Blocks()` to read defaults.
Only controls that A1111 (gradio 3.41) and Forge (gradio 4) both have.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import gradio as gr

from .controls import CONTROLS, Control


def _component(control: Control, elem_id: Callable[[str], str]):
    common = {"label": control.label, "elem_id": elem_id(control.key)}
    if control.kind == "files":
        return gr.File(file_count="multiple", file_types=["image"], **common)
    if control.kind == "dropdown":
        return gr.Dropdown(choices=list(control.choices), value=control.default, **common)
    if control.kind == "slider":
        return gr.Slider(minimum=control.minimum, maximum=control.maximum, step=control.step,
                         value=control.default, **common)
    if control.kind == "number":
        return gr.Number(value=control.default, precision=0 if control.integer else None, **common)
    if control.kind == "checkbox":
        return gr.Checkbox(value=control.default, **common)
    if control.kind == "text":
        return gr.Textbox(value=control.default, lines=1, **common)
    raise ValueError(f"unknown control kind {control.kind!r}")


def build(elem_id: Callable[[str], str]) -> list:
    """The components in `CONTROLS` order; grouped ones sit in closed accordions."""
    components = []
    for group, members in itertools.groupby(CONTROLS, key=lambda control: control.group):
        if not group:
            components.extend(_component(control, elem_id) for control in members)
            continue
        with gr.Accordion(group, open=False, elem_id=elem_id(group.lower().replace(" ", "_").replace("-", ""))):
            components.extend(_component(control, elem_id) for control in members)
    return components
