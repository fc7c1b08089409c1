"""The "Prompt evolution" tab: start from the txt2img prompt and settings, choose favourites in each generation's
grid (click a picture), "Next generation", "Breed these two", "Send to txt2img", the family tree of the picture
clicked last, which words win; and "Breed two prompts": children of any two pictures' prompts, their conditioning
mixed (lib_pinning.webui.breeding). Everything here calls the one service of lib_pinning.webui.evolution, which the HTTP
routes under /prompt-pinning/v1/ serve too.

Nothing is kept only in the page: the run waits in the WebUI for its choice, and what it chose is in its folder.
Opening the tab shows the newest run again (javascript/prompt_pinning.js clicks ↻), so a reloaded page goes on
where it was; after a WebUI restart the run's folder is still listed and "Resume" goes on from it.
"""

from __future__ import annotations

import html
import io
import logging
import re
import time

import gradio as gr
from modules.ui_components import ToolButton
from PIL import Image

from ..chooser import Choice
from ..errors import InputError
from ..evolution import EvolutionRun
from ..options import AUTO, EVOLVE, PinOptions, spec_of
from ..report import files
from ..winners import word_statistics
from . import breeding, evolution

try:
    from modules import infotext_utils as paste
except ImportError:  # A1111 before 1.8
    from modules import generation_parameters_copypaste as paste

log = logging.getLogger(__name__)
# The txt2img controls a run starts from (their elem_id → the render setting's name), remembered as the WebUI
# builds them (script_callbacks.on_after_component).
TXT2IMG = {"txt2img_prompt": "prompt", "txt2img_neg_prompt": "negative_prompt", "txt2img_seed": "seed",
           "txt2img_sampling": "sampler", "txt2img_scheduler": "scheduler", "txt2img_steps": "steps",
           "txt2img_cfg_scale": "cfg_scale", "txt2img_width": "width", "txt2img_height": "height",
           "txt2img_batch_size": "batch"}
_txt2img: dict[str, object] = {}
WAIT = 3600.0  # seconds a button waits for the next generation to render
SIGMA = 0.5  # the tab's first step size: variations a person can still compare with the prompt (pinning's is 1)


def remember(component, **kwargs) -> None:
    name = TXT2IMG.get(kwargs.get("elem_id") or getattr(component, "elem_id", None))
    if name is not None:
        _txt2img[name] = component


def _wait(run: EvolutionRun) -> None:
    """Until the run shows a generation or ends."""
    deadline = time.monotonic() + WAIT
    while run.chooser.shown is None and not run.done.is_set() and time.monotonic() < deadline:
        run.chooser.wait_shown(1.0)


def _tile(pngs: list[bytes]) -> Image.Image:
    """A candidate's pictures side by side (at most 4 across)."""
    images = [Image.open(io.BytesIO(png)).convert("RGB") for png in pngs]
    width, height = images[0].size
    across = min(4, len(images))
    tile = Image.new("RGB", (width * across, height * -(-len(images) // across)), "white")
    for number, image in enumerate(images):
        tile.paste(image, ((number % across) * width, (number // across) * height))
    return tile


def _error(message: str) -> str:
    return f'<p class="prompt-evolution-error">{html.escape(message)}</p>'


def _clicked(event: gr.SelectData) -> int:
    """The picture clicked in a gallery (gradio 3 gives its index, gradio 4 may give [row, column])."""
    return event.index if isinstance(event.index, int) else event.index[0]


def _status(run: EvolutionRun | None, message: str = "") -> str:
    parts = [_error(message)] if message else []
    if run is not None:
        summary, shown = run.summary(), run.chooser.shown
        if shown is not None:
            what = (f"generation {shown.generation} waits for your choice: click your favourites, then "
                    "Next generation (or two of them, then Breed these two)")
        elif summary["running"]:
            what = "rendering…"
        else:
            record = run.record()
            ending = record.ending.message if record and record.ending else run.error or (
                "the WebUI stopped while it ran" if record else "not started")
            what = f"{summary['status']}: {ending}. Resume goes on from its folder"
        parts.append(f"<p>Run {html.escape(run.name)} ({summary['generations']} generations chosen): "
                     f"{html.escape(what)}</p><p>Folder: {html.escape(str(run.folder.resolve()))}</p>")
    return "".join(parts)


def _view(name: str | None, message: str = ""):
    """Everything the tab shows of run `name`: status, grid, favourites, the shown generation, tree, infotext."""
    run = None
    if name:
        try:
            run = evolution.service().get(name)
        except KeyError:
            message = message or f"no prompt evolution run {name}"
    shown = run.chooser.shown if run is not None else None
    if shown is None:
        return (_status(run, message), [], gr.update(choices=[], value=[]), None, "", "")
    grid = [(_tile(pngs), f"{index + 1}: {prompt}") for index, ((prompt, _), pngs)
            in enumerate(zip(shown.prompts, shown.images))]
    choices = [str(index + 1) for index in range(len(shown.prompts))]
    return (_status(run, message), grid, gr.update(choices=choices, value=[]),
            {"run": run.name, "generation": shown.generation}, "", "")


def _runs(value: str | None = None):
    names = evolution.service().names()
    running = [name for name in names if evolution.service().get(name).chooser.shown is not None]
    chosen = value if value in names else (running or names or [None])[-1]
    return gr.update(choices=names, value=chosen), chosen


def refresh(name):
    update, chosen = _runs(name)
    return (update, *_view(chosen))


def start(candidates, generations, sigma, evolve, tag_pool, mutation_rate, *txt2img):
    values = dict(zip(_txt2img, txt2img))
    prompt, negative = values.pop("prompt", ""), values.pop("negative_prompt", "")
    values.update(lambda_=candidates, generations=generations, sigma=sigma, evolve=evolve, tag_pool=tag_pool,
                  mutation_rate=mutation_rate)  # checked by the options' schema
    try:
        run = evolution.service().start(prompt, negative, values)
    except InputError as error:
        return (gr.update(), *_view(None, str(error)))
    _wait(run)
    update, _ = _runs(run.name)
    return (update, *_view(run.name))


def _submit(shown: dict | None, favourites: list[str], breed: bool):
    if not shown:
        return _view(None, "no generation is waiting for a choice: start or resume a run")
    picked = sorted(int(value) - 1 for value in favourites or [])
    try:
        if breed and len(picked) != 2:
            raise InputError(f"Breed these two: pick two favourites, not {len(picked)}")
        choice = Choice.breeding(*picked) if breed else Choice.favourites(picked)
        run = evolution.service().get(shown["run"])
        run.chooser.submit(shown["generation"], choice)
    except (InputError, KeyError) as error:
        return _view(shown["run"], str(error).strip("'"))
    _wait(run)
    return _view(run.name)


def next_generation(shown, favourites):
    return _submit(shown, favourites, breed=False)


def breed(shown, favourites):
    return _submit(shown, favourites, breed=True)


def stop(name):
    if name:
        try:
            run = evolution.service().get(name)
        except KeyError:
            return _view(None, f"no prompt evolution run {name}")
        evolution.service().stop(name)
        run.done.wait(60)
    return _view(name)


def resume(name, generations):
    if not name:
        return _view(None, "pick a run to resume")
    service = evolution.service()
    try:
        record = service.get(name).record()
        done = len(record.generations) if record else 0
        if isinstance(generations, (int, float)) and generations <= done:
            generations = done + 1  # a finished run goes on for one more generation at least
        run = service.resume(name, {"generations": generations})
    except (InputError, KeyError) as error:
        return _view(name, str(error).strip("'"))
    _wait(run)
    return _view(name)


def select(shown, favourites, event: gr.SelectData):
    """A click on a picture: it becomes a favourite (its box unticked takes it back: gradio tells no second click
    on the same picture); its tree and its infotext are shown."""
    index = _clicked(event)
    favourites = sorted({*(favourites or []), str(index + 1)}, key=int)
    if not shown:
        return favourites, "", ""
    run = evolution.service().get(shown["run"])
    waiting = run.chooser.shown
    if waiting is None or waiting.generation != shown["generation"] or index >= len(waiting.prompts):
        return favourites, "", ""
    infotexts = waiting.infotexts[index]
    return favourites, _tree(run, index, waiting), infotexts[0] if infotexts else ""


def _tree(run: EvolutionRun, index: int, shown) -> str:
    """The family tree of candidate `index`: its prompt, then its parents' generation and theirs, back to the
    first (each with its first picture and prompt; chosen ones marked ✓)."""
    prompt, _ = shown.prompts[index]
    rows = [f"<li><b>Candidate {index + 1} of generation {shown.generation}</b>: {html.escape(prompt)}</li>"]
    record = run.record()
    seeds = record.render.seeds if record else [0]
    levels: dict[str, dict] = {}
    for parent in run.lineage(shown)[index]:
        for depth, members in enumerate(evolution.service().ancestry(run.name, parent)):
            for member in members:
                levels.setdefault(member["id"], {**member, "depth": depth})
    for member in sorted(levels.values(), key=lambda member: (member["depth"], member["id"])):
        picture = (run.folder / member["folder"] / files.image_name(seeds[0])).resolve()  # written soon if not yet
        image = (f'<img src="/file={html.escape(str(picture))}" alt="" height="48" '
                 'style="display:inline-block;vertical-align:middle;margin:2px 0.5em 2px 0"> ')
        mark = " ✓" if member["chosen"] else ""
        rows.append(f'<li style="margin-left:{(member["depth"] + 1) * 1.5}em">{image}{html.escape(member["id"])}{mark}:'
                    f' {html.escape(member["prompt"])}</li>')
    return '<ul class="prompt-evolution-tree">' + "".join(rows) + "</ul>"


def winners(name):
    if not name:
        return "<p>pick a run</p>"
    try:
        statistics = word_statistics([record for record in [evolution.service().get(name).record()] if record])
    except (InputError, KeyError) as error:
        return f"<p>{html.escape(str(error))}</p>"
    rows = "".join(f"<tr><td>{html.escape(s.word)}{' (negative)' if s.side == 'negative' else ''}</td>"
                   f"<td>{s.chosen_raised} of {s.chosen}</td><td>{s.rendered_raised} of {s.rendered}</td>"
                   f"<td>{s.p_value:.3g}</td></tr>" for s in statistics)
    unit, counted = ("Tag", "Present") if statistics and statistics[0].measure == "present" else ("Word", "Raised")
    return (f'<table class="prompt-evolution-winners"><tr><th>{unit}</th><th>{counted} among the chosen</th>'
            f"<th>{counted} among all rendered</th><th>p (exact test)</th></tr>{rows}</table>")


def _parent(text: str) -> dict:
    """A parent typed or pasted into the tab: a picture's parameters (PNG Info) if it has a "Steps:" line, else a
    prompt."""
    text = (text or "").strip()
    return {"infotext": text} if re.search(r"^Steps: ", text, re.MULTILINE) else {"prompt": text}


def breed_prompts(first: str, second: str, points: str, seed):
    """Children of two different prompts (the first one's settings and seeds)."""
    try:
        at = [float(value) for value in (points or "").replace(",", " ").split()]
    except ValueError:
        return _error(f"Points: numbers between 0 and 1, got {points!r}"), [], []
    values = {} if seed in (None, "", -1) else {"seed": int(seed)}
    try:
        children = breeding.breed(_parent(first), _parent(second), at, values)
    except InputError as error:
        return _error(str(error)), [], []
    except Exception as error:  # noqa: BLE001 - out of memory and the like: a message, the WebUI goes on
        log.exception("breeding two prompts failed")
        return _error(f"breeding failed: {type(error).__name__}: {error}"), [], []
    grid = [(_tile(child.images), f"{child.t:g} of the way: {child.prompt}") for child in children]
    message = ("<p>Each child's conditioning is the spherical interpolation of the two prompts'. Its written prompt "
               "(A1111's AND with weights) is an approximation of it: Send to txt2img renders that, not the mix.</p>")
    return message, grid, [child.infotexts[0] if child.infotexts else "" for child in children]


def select_child(infotexts, event: gr.SelectData):
    index = _clicked(event)
    return infotexts[index] if infotexts and index < len(infotexts) else ""


def build():
    """`script_callbacks.on_ui_tabs` hook."""
    with gr.Blocks(analytics_enabled=False) as tab:
        with gr.Row():
            run = gr.Dropdown(label="Run", choices=[], value=None, elem_id="prompt_evolution_run")
            refresh_button = ToolButton(value="↻", elem_id="prompt_evolution_refresh")
        with gr.Row():
            candidates = gr.Number(label=spec_of(PinOptions, "lambda_").label, value=6, precision=0,
                                   elem_id="prompt_evolution_candidates")
            generations = gr.Number(label=spec_of(PinOptions, "generations").label, value=20, precision=0,
                                    elem_id="prompt_evolution_generations")
            sigma = gr.Number(label=spec_of(PinOptions, "sigma").label, value=SIGMA, elem_id="prompt_evolution_sigma")
        with gr.Row():
            evolve = gr.Radio(label=spec_of(PinOptions, "evolve").label, choices=list(EVOLVE), value="weights",
                              elem_id="prompt_evolution_evolve")
            tag_pool = gr.Textbox(label=spec_of(PinOptions, "tag_pool").label, elem_id="prompt_evolution_tag_pool")
            mutation_rate = gr.Number(label=spec_of(PinOptions, "mutation_rate").label, value=AUTO,
                                      elem_id="prompt_evolution_mutation_rate")
        with gr.Row():
            start_button = gr.Button("Start from txt2img", variant="primary", elem_id="prompt_evolution_start")
            stop_button = gr.Button("Stop", elem_id="prompt_evolution_stop")
            resume_button = gr.Button("Resume", elem_id="prompt_evolution_resume")
        status = gr.HTML(elem_id="prompt_evolution_status")
        grid = gr.Gallery(label="Generation: click your favourites", columns=4, object_fit="contain",
                          allow_preview=False, elem_id="prompt_evolution_grid")
        favourites = gr.CheckboxGroup(label="Favourites", choices=[], elem_id="prompt_evolution_favourites")
        with gr.Row():
            next_button = gr.Button("Next generation", variant="primary", elem_id="prompt_evolution_next")
            breed_button = gr.Button("Breed these two", elem_id="prompt_evolution_breed")
            send_button = gr.Button("Send to txt2img", elem_id="prompt_evolution_send")
            winners_button = gr.Button("Which words win", elem_id="prompt_evolution_winners_button")
        tree = gr.HTML(elem_id="prompt_evolution_tree")
        table = gr.HTML(elem_id="prompt_evolution_winners")
        infotext = gr.Textbox(visible=False, elem_id="prompt_evolution_infotext")
        shown = gr.State(None)
        with gr.Accordion("Breed two prompts", open=False, elem_id="prompt_evolution_breeding"):
            with gr.Row():
                first = gr.Textbox(label="First parent: a picture's parameters (PNG Info) or a prompt", lines=3,
                                   elem_id="prompt_evolution_first")
                second = gr.Textbox(label="Second parent", lines=3, elem_id="prompt_evolution_second")
            with gr.Row():
                as_first = gr.Button("Clicked picture as first parent", elem_id="prompt_evolution_as_first")
                as_second = gr.Button("Clicked picture as second parent", elem_id="prompt_evolution_as_second")
                points = gr.Textbox(label="Points between them (0: first, 1: second)", value="0.25, 0.5, 0.75",
                                    elem_id="prompt_evolution_points")
                seed = gr.Number(label="Seed (-1: the first parent picture's; 0 for a typed prompt)", value=-1,
                                 precision=0, elem_id="prompt_evolution_breed_seed")
            breed_prompts_button = gr.Button("Breed two prompts", variant="primary",
                                             elem_id="prompt_evolution_breed_prompts")
            bred_message = gr.HTML(elem_id="prompt_evolution_bred_message")
            children = gr.Gallery(label="Children", columns=4, object_fit="contain", allow_preview=False,
                                  elem_id="prompt_evolution_children")
            children_infotexts = gr.State([])

        view = [status, grid, favourites, shown, tree, infotext]
        refresh_button.click(refresh, inputs=[run], outputs=[run, *view])
        run.select(lambda name: _view(name), inputs=[run], outputs=view)
        start_button.click(start, inputs=[candidates, generations, sigma, evolve, tag_pool, mutation_rate,
                                          *_txt2img.values()], outputs=[run, *view])
        next_button.click(next_generation, inputs=[shown, favourites], outputs=view)
        breed_button.click(breed, inputs=[shown, favourites], outputs=view)
        stop_button.click(stop, inputs=[run], outputs=view)
        resume_button.click(resume, inputs=[run, generations], outputs=view)
        grid.select(select, inputs=[shown, favourites], outputs=[favourites, tree, infotext])
        winners_button.click(winners, inputs=[run], outputs=[table])
        as_first.click(lambda text: text, inputs=[infotext], outputs=[first])
        as_second.click(lambda text: text, inputs=[infotext], outputs=[second])
        breed_prompts_button.click(breed_prompts, inputs=[first, second, points, seed],
                                   outputs=[bred_message, children, children_infotexts])
        children.select(select_child, inputs=[children_infotexts], outputs=[infotext])
        paste.register_paste_params_button(paste.ParamBinding(paste_button=send_button, tabname="txt2img",
                                                              source_text_component=infotext))
    return [(tab, "Prompt evolution", "prompt_evolution")]
