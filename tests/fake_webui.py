"""A stand-in AUTOMATIC1111 for offline tests of the WebUI glue (the pattern of sd-dynamic-prompts' conftest).

`install(monkeypatch)` puts fake `modules.*` and `gradio` packages into sys.modules, shaped like A1111 v1.10.1's
(the attributes the glue uses, no more), and imports the extension's entry script the way A1111 does: by path,
as a script module. Its `process_images` renders with the embedded model, so the real `Script.run` ->
lib_pinning.webui.run path runs end to end: decoding, job building, the engine, the report, the `Processed`.
The live suites (tests/webui) stay the proof against the real WebUIs; these tests catch regressions in CI.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType, SimpleNamespace

import torch
from PIL import Image

from lib_pinning.embedded import EmbeddedModel, EmbeddedRenderer

ROOT = Path(__file__).resolve().parents[1]
OWN_MODULES = ("lib_pinning.webui.text_model", "lib_pinning.webui.samplers", "lib_pinning.webui.renderer",
               "lib_pinning.webui.run", "lib_pinning.webui.ui", "lib_pinning.webui.api", "lib_pinning.webui.clip",
               "lib_pinning.webui.evolution", "lib_pinning.webui.evolution_tab", "lib_pinning.webui.breeding")


# --- gradio ------------------------------------------------------------------------------------------------

class Block:
    made: list = []

    def __init__(self, value=None, **kwargs):
        self.value, self.kwargs = value, kwargs
        Block.made.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class Event(Block):
    """A component with events: `select`, `click` and `change` remember (function, inputs, outputs)."""

    def _listen(self, kind, function, inputs=None, outputs=None, **kwargs):
        self.kwargs.setdefault("events", {})[kind] = (function, inputs, outputs)

    def select(self, *args, **kwargs):
        self._listen("select", *args, **kwargs)

    def click(self, *args, **kwargs):
        self._listen("click", *args, **kwargs)

    def change(self, *args, **kwargs):
        self._listen("change", *args, **kwargs)


def _gradio() -> ModuleType:
    module = ModuleType("gradio")
    for name in ("Blocks", "Accordion", "File", "Slider", "Number", "Checkbox", "Textbox", "HTML", "Row", "State"):
        setattr(module, name, type(name, (Block,), {}))
    for name in ("Dropdown", "Radio", "Button", "Gallery", "CheckboxGroup"):
        setattr(module, name, type(name, (Event,), {}))
    module.update = lambda **values: dict(values, __type__="update")
    module.SelectData = SimpleNamespace
    return module


# --- modules -----------------------------------------------------------------------------------------------

class State:
    def begin(self, job=""):
        self.interrupted = self.skipped = self.stopping_generation = False
        self.job = job

    def end(self):
        self.job = ""

    def __init__(self):
        self.interrupted = self.skipped = self.stopping_generation = False
        self.job, self.job_count, self.current_image = "", 0, None

    def assign_current_image(self, image):
        self.current_image = image


class Opts:
    def __init__(self):
        self.img2img_fix_steps = False
        self.outdir_txt2img_samples = self.outdir_txt2img_grids = None  # set by the tests: where runs go
        self.return_mask = self.return_mask_composite = False
        self.data_labels = {}

    def add_option(self, key, info):
        self.data_labels[key] = info
        setattr(self, key, info.default)


class OptionInfo:
    def __init__(self, default=None, label="", component=None, component_args=None, section=None, infotext=None):
        self.default, self.label, self.component_args, self.section, self.infotext = (
            default, label, component_args, section, infotext)


class Processed:
    def __init__(self, p, images_list, seed=-1, info="", subseed=None, all_prompts=None, all_negative_prompts=None,
                 all_seeds=None, all_subseeds=None, index_of_first_image=0, infotexts=None, comments="", **kwargs):
        self.images, self.seed, self.info, self.infotexts = images_list, seed, info, infotexts or []
        self.all_prompts, self.all_negative_prompts, self.all_seeds = all_prompts, all_negative_prompts, all_seeds
        self.subseed, self.all_subseeds = subseed, all_subseeds
        self.index_of_first_image = index_of_first_image
        self.comments = "".join(f"{text}\n" for text in p.comments) if hasattr(p, "comments") else comments
        self.extra_generation_params = dict(getattr(p, "extra_generation_params", {}))
        self.prompt, self.negative_prompt = getattr(p, "prompt", ""), getattr(p, "negative_prompt", "")


class Processing:
    """txt2img's processing object, with A1111's attributes the glue reads and writes."""

    def __init__(self, **values):
        self.prompt, self.negative_prompt, self.styles = "a red circle, blue sky", "dark", []
        self.seed, self.subseed, self.subseed_strength = 11, -1, 0.0
        self.batch_size, self.n_iter, self.steps = 2, 1, 3
        self.sampler_name, self.scheduler, self.cfg_scale = "DPM++ 2M", "Karras", 3.0
        self.width = self.height = 16
        self.outpath_samples, self.override_settings, self.extra_generation_params = None, {}, {}
        self.do_not_save_samples = self.do_not_save_grid = False
        self.scripts = self.script_args = None
        self.comments = []
        self.__dict__.update(values)

    def comment(self, text):
        self.comments.append(text)


class WebUI:
    """The fake's moving parts: what the tests look at and change."""

    def __init__(self):
        self.state, self.opts = State(), Opts()
        self.model = EmbeddedModel(count=6, size=16)
        self.renders: list = []          # every job process_images got: (prompt, negative, seeds, fork strength)
        self.fail_at: int | None = None  # process_images call number that raises (1 is the first)
        self.stop_at: int | None = None  # call number after which Interrupt is pressed
        self.callbacks: list = []
        self.component_callbacks: list = []
        self.tab_callbacks: list = []
        self.pastes: list = []            # the paste buttons registered (infotext_utils.register_paste_params_button)
        self.denoiser_callbacks: list = []  # script_callbacks.on_cfg_denoiser
        self.denoiser_hook = False        # True: process_images calls them once, with the toy encoder's conditioning
        self.conds: list = []             # (text_cond, text_uncond) after the hooks, per process_images call
        self.samplers: list = [SimpleNamespace(name="DPM++ 2M")]  # A1111's own, then the Hyperbatch ones
        self.script = None

    def fix_seed(self, p):
        p.seed = 1234 if p.seed in (-1, None) else p.seed
        p.subseed = 99 if p.subseed in (-1, None) else p.subseed

    def process_images(self, p):
        seeds = list(p.seed) if isinstance(p.seed, list) else [int(p.seed) + i for i in range(p.batch_size * p.n_iter)]
        self.renders.append((p.prompt, p.negative_prompt, seeds, getattr(p, "hyperbatch_fork_strength", None)))
        if self.fail_at == len(self.renders):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        renderer = EmbeddedRenderer(self.model, seeds, steps=p.steps, sampler="DPM++ 2M", cfg_scale=p.cfg_scale)
        images = renderer.render([(p.prompt, p.negative_prompt)])[0].images
        pictures = [Image.fromarray((image.permute(1, 2, 0) * 255).round().byte().numpy()) for image in images]
        infotexts = [f"{p.prompt}\nNegative prompt: {p.negative_prompt}\nSteps: {p.steps}, Seed: {seed}"
                     for seed in seeds]
        if self.stop_at == len(self.renders):
            self.state.interrupted = True
        if self.denoiser_hook:
            self._denoiser_hooks(p, len(seeds))
        return Processed(p, pictures, seeds[0], infotexts[0], infotexts=infotexts)

    def _denoiser_hooks(self, p, rows: int) -> None:
        """As A1111's CFGDenoiser: each hook may replace the conditioning (rows, tokens, dim); its errors are
        reported, never raised."""
        encode = self.model.encoder.encode
        params = SimpleNamespace(denoiser=SimpleNamespace(p=p, step=0),
                                 text_cond=encode(p.prompt)[None, None].repeat(rows, 1, 1),
                                 text_uncond=encode(p.negative_prompt)[None, None].repeat(rows, 1, 1))
        for callback in self.denoiser_callbacks:
            try:
                callback(params)
            except Exception:  # noqa: BLE001 - A1111's report_exception
                pass
        self.conds.append((params.text_cond, params.text_uncond))

    def learned_conditioning(self, model, prompts, steps, hires_steps=None, use_old_scheduling=False):
        return [[SimpleNamespace(end_at_step=steps, cond=self.model.encoder.encode(text)[None])] for text in prompts]


class SdConditioning(list):
    def __init__(self, prompts, is_negative_prompt=False, width=None, height=None):
        super().__init__(prompts)


def parse_generation_parameters(text: str) -> dict:
    """The part of A1111's infotext parser the glue uses: prompt, negative prompt, "key: value" pairs, Size."""
    *lines, last = text.strip().split("\n")
    read = {"Prompt": "\n".join(line for line in lines if not line.startswith("Negative prompt: "))}
    read.update({"Negative prompt": line[len("Negative prompt: "):] for line in lines
                 if line.startswith("Negative prompt: ")})
    for pair in last.split(", "):
        key, value = pair.split(": ", 1)
        read[key] = value
    if "Size" in read:
        read["Size-1"], read["Size-2"] = read.pop("Size").split("x")
    return read


def _modules(webui: WebUI, embeddings_dir: Path, clip_dir: Path, gradio: ModuleType) -> dict[str, dict]:
    styles = SimpleNamespace(apply_styles_to_prompt=lambda prompt, styles: ", ".join([prompt, *styles]),
                             apply_negative_styles_to_prompt=lambda prompt, styles: prompt)
    shared = SimpleNamespace(
        state=webui.state, opts=webui.opts, OptionInfo=OptionInfo, prompt_styles=styles,
        total_tqdm=SimpleNamespace(updateTotal=lambda total: None, clear=lambda: None),
        sd_model=SimpleNamespace(sd_checkpoint_info=SimpleNamespace(name_for_extra="fake-checkpoint")),
        cmd_opts=SimpleNamespace(api=True, nowebui=False, api_auth=None, embeddings_dir=str(embeddings_dir),
                                 clip_models_path=str(clip_dir)))
    samplers = SimpleNamespace(all_samplers=webui.samplers, all_samplers_map={})
    paste = SimpleNamespace(ParamBinding=lambda **binding: binding, register_paste_params_button=webui.pastes.append,
                            parse_generation_parameters=parse_generation_parameters)
    samplers.find_sampler_config = lambda name: None
    samplers.set_samplers = lambda: None

    class Script:
        args_from = args_to = None

        def elem_id(self, item_id):
            return f"script_txt2img_prompt_pinning_{item_id}"

    return {
        "modules": {},
        "modules.shared": vars(shared),
        "modules.scripts": {"Script": Script, "basedir": lambda: str(ROOT)},
        "modules.script_callbacks": {"on_app_started": webui.callbacks.append,
                                     "on_after_component": webui.component_callbacks.append,
                                     "on_ui_tabs": webui.tab_callbacks.append,
                                     "on_cfg_denoiser": webui.denoiser_callbacks.append},
        "modules.prompt_parser": {"SdConditioning": SdConditioning,
                                  "get_learned_conditioning": webui.learned_conditioning,
                                  "reconstruct_cond_batch": lambda c, step: torch.stack([s[0].cond for s in c])},
        "modules.processing": {"fix_seed": webui.fix_seed, "process_images": webui.process_images,
                               "Processed": Processed, "StableDiffusionProcessingTxt2Img": Processing},
        "modules.call_queue": {"queue_lock": threading.Lock()},
        "modules.ui_components": {"ToolButton": gradio.Button},
        "modules.sd_schedulers": {"schedulers": [SimpleNamespace(label="Karras"), SimpleNamespace(label="Uniform")]},
        "modules.infotext_utils": vars(paste),
        "modules.devices": {"device": torch.device("cpu"), "torch_gc": lambda: None},
        "modules.sd_samplers": vars(samplers),
        "modules.sd_samplers_common": {"SamplerData": lambda name, constructor, aliases, options: SimpleNamespace(
            name=name, constructor=constructor, aliases=aliases, options=options)},
        "modules.sd_samplers_kdiffusion": {"KDiffusionSampler": lambda function, model: SimpleNamespace(
            func=function, model=model)},
        "modules.sd_hijack": {"model_hijack": SimpleNamespace(embedding_db=SimpleNamespace(word_embeddings={}))},
    }


def install(monkeypatch, tmp_path: Path) -> WebUI:
    """Fake modules and gradio in sys.modules, the entry script imported; returns the fake's state."""
    webui = WebUI()
    gradio = _gradio()
    stand_ins = _modules(webui, tmp_path / "embeddings", tmp_path / "clip", gradio)
    for name, attributes in stand_ins.items():
        module = ModuleType(name)
        module.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, module)
    for name in stand_ins:
        if "." in name:
            setattr(sys.modules["modules"], name.split(".", 1)[1], sys.modules[name])
    monkeypatch.setitem(sys.modules, "gradio", gradio)
    uninstall()  # imported afresh against the stand-ins (and forgotten again by the fixture that calls this)
    spec = importlib.util.spec_from_file_location("prompt_pinning_script", ROOT / "scripts" / "prompt_pinning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    webui.module = module
    webui.script = module.PromptPinningScript()
    return webui


def uninstall() -> None:
    """Forget the glue modules imported against the stand-ins, so that later imports start afresh."""
    package = sys.modules.get("lib_pinning.webui")
    for name in OWN_MODULES:
        sys.modules.pop(name, None)
        if package is not None and hasattr(package, name.rsplit(".", 1)[1]):
            delattr(package, name.rsplit(".", 1)[1])


def api_call(webui: WebUI, p: Processing, script_args: list, other_scripts: int = 3):
    """A1111's API path: the client's script_args written over this script's slice of the default arguments,
    as modules/api/api.py init_script_args does, then ScriptRunner.run's slice handed to Script.run."""
    script = webui.script
    own = len(script.ui(False))
    script.args_from, script.args_to = 1 + other_scripts, 1 + other_scripts + own
    defaults = [0] + [None] * other_scripts + [None] * own + ["later script's"] * 2
    later = SimpleNamespace(args_from=script.args_to, args_to=script.args_to + 2)
    full = list(defaults)
    full[script.args_from:script.args_to] = script_args
    p.scripts = SimpleNamespace(scripts=[script, later])
    p.script_args = tuple(full)
    return script.run(p, *full[script.args_from:script.args_to])
