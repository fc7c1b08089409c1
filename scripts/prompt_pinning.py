"""AUTOMATIC1111 entry point: the "Prompt pinning" script and the Hyperbatch samplers. Thin glue only.

The engine lives in lib_pinning (no WebUI imports); lib_pinning.webui holds everything that talks to A1111.
"""

import modules.scripts as scripts
from modules import script_callbacks

from lib_pinning.webui import api, breeding, clip, console, evolution_tab, samplers, script_args, ui
from lib_pinning.webui import run as pinning

console.attach()
samplers.register()
samplers.add_settings()
clip.add_setting()
script_callbacks.on_app_started(api.add_routes)
script_callbacks.on_after_component(evolution_tab.remember)
script_callbacks.on_ui_tabs(evolution_tab.build)
script_callbacks.on_cfg_denoiser(breeding.on_cfg_denoiser)


class PromptPinningScript(scripts.Script):
    def title(self):
        return "Prompt pinning"

    def show(self, is_img2img):
        return True

    def ui(self, is_img2img):
        return ui.build(self.elem_id)

    def run(self, p, *args):
        return pinning.run(p, args, script_args.sent_count(self, p, len(args)))
