"""The WebUI's own CLIP, the model its "Interrogate CLIP" loads, for the semantic loss and target tags.

A1111 v1.10.1 and Forge both load OpenAI's ViT-L/14 with the `clip` package from `--clip-models-path`, by default
the package's cache (~/.cache/clip), file ViT-L-14.pt. This module loads that file by its path (`clip.load` by
name would check its SHA-256 and download it again when it differs): it never downloads anything, and when the
file is missing the message says how the WebUI fetches it. The setting "Prompt pinning: CLIP model file" may name
another file the `clip` package loads. Loaded once per WebUI process, kept in RAM on the CPU; a run moves it to the
WebUI's device and back off it when the run ends.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from modules import devices, shared

from ..errors import InputError
from ..semantic import ClipEmbedder

log = logging.getLogger(__name__)
CLIP_FILE = "ViT-L-14.pt"  # the `clip` package's file name for "ViT-L/14"
CLIP_FILE_SETTING = "prompt_pinning_clip_file"
_loaded: dict[str, ClipEmbedder] = {}
_loading = threading.Lock()


def clip_file() -> Path:
    chosen = str(getattr(shared.opts, CLIP_FILE_SETTING, "") or "").strip()
    if chosen:
        return Path(chosen).expanduser()
    folder = getattr(shared.cmd_opts, "clip_models_path", None) or os.path.expanduser("~/.cache/clip")
    return Path(folder) / CLIP_FILE


def add_setting() -> None:
    """Settings → Prompt pinning: which CLIP file the semantic loss and tags use (blank: Interrogate CLIP's)."""
    import gradio as gr

    shared.opts.add_option(CLIP_FILE_SETTING, shared.OptionInfo(
        "", "CLIP model file for the semantic loss and target tags (blank: Interrogate CLIP's ViT-L-14.pt)",
        gr.Textbox, section=("prompt-pinning", "Prompt pinning")))


def embedder() -> ClipEmbedder:
    """The WebUI's CLIP as an embedder, or an InputError naming the missing file."""
    path = clip_file()
    if not path.is_file():
        raise InputError(f"the semantic loss and target tags use the CLIP model of Interrogate CLIP, {path}, and it "
                         "is not there: press \"Interrogate CLIP\" once (img2img tab) and the WebUI fetches it, or "
                         "name a CLIP file in Settings → Prompt pinning; Prompt pinning never downloads models")
    with _loading:
        key = str(path.resolve())
        if key not in _loaded:
            import clip

            log.info("loading %s for the semantic loss", path)
            try:
                model, _ = clip.load(str(path), device="cpu", jit=False)
            except Exception as error:  # a damaged or foreign file: say which, keep serving
                raise InputError(f"the CLIP model {path} cannot be loaded ({type(error).__name__}: {error}): "
                                 "delete it and press \"Interrogate CLIP\" to fetch it again") from None
            device = devices.device
            _loaded[key] = ClipEmbedder(model.half() if device.type == "cuda" else model, clip.tokenize,
                                        f"CLIP {path.name}", device)
        return _loaded[key]
